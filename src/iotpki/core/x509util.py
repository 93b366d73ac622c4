"""Small X.509 helpers shared by the core, the adapters and the device agent."""

from __future__ import annotations

from cryptography import x509
from cryptography.exceptions import InvalidSignature

__all__ = ["issued_by"]


def issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether ``issuer``'s name and key issued ``cert`` (names match, signature verifies)."""
    try:
        # Checks the issuer name against the issuer's subject, then the signature.
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
