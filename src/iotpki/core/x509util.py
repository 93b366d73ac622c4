"""Small X.509 helpers shared by the core, the adapters and the device agent."""

from __future__ import annotations

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, mldsa, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

__all__ = ["SIGNATURE_HASHES", "issued_by", "signature_valid"]

SIGNATURE_HASHES: dict[str, hashes.HashAlgorithm | None] = {
    "1.2.840.10045.4.3.2": hashes.SHA256(),  # ecdsa-with-SHA256
    "1.2.840.10045.4.3.3": hashes.SHA384(),
    "1.2.840.10045.4.3.4": hashes.SHA512(),
    "1.2.840.113549.1.1.11": hashes.SHA256(),  # sha256WithRSAEncryption
    "1.2.840.113549.1.1.12": hashes.SHA384(),
    "1.2.840.113549.1.1.13": hashes.SHA512(),
    "1.3.101.112": None,  # Ed25519 (RFC 8410)
    "1.3.101.113": None,  # Ed448
    "2.16.840.1.101.3.4.3.17": None,  # ML-DSA-44 (RFC 9881)
    "2.16.840.1.101.3.4.3.18": None,  # ML-DSA-65
}
"""Signature algorithms (dotted OID) accepted on signatures other than a certificate's or a
CSR's own, with the hash each uses (None: the algorithm hashes for itself)."""

_EC = frozenset(oid for oid in SIGNATURE_HASHES if oid.startswith("1.2.840.10045."))
_RSA = frozenset(oid for oid in SIGNATURE_HASHES if oid.startswith("1.2.840.113549."))
_ED = {"1.3.101.112": ed25519.Ed25519PublicKey, "1.3.101.113": ed448.Ed448PublicKey}
_MLDSA = {
    "2.16.840.1.101.3.4.3.17": mldsa.MLDSA44PublicKey,
    "2.16.840.1.101.3.4.3.18": mldsa.MLDSA65PublicKey,
}


def issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether ``issuer``'s name and key issued ``cert`` (names match, signature verifies)."""
    try:
        # Checks the issuer name against the issuer's subject, then the signature.
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def signature_valid(
    key: CertificatePublicKeyTypes, algorithm: str, signature: bytes, data: bytes
) -> bool:
    """Whether ``signature`` by ``key`` over ``data`` verifies under the algorithm named by its
    dotted OID (one of :data:`SIGNATURE_HASHES`; any other is invalid)."""
    digest = SIGNATURE_HASHES.get(algorithm)
    try:
        if algorithm in _EC and isinstance(key, ec.EllipticCurvePublicKey) and digest:
            key.verify(signature, data, ec.ECDSA(digest))
        elif algorithm in _RSA and isinstance(key, rsa.RSAPublicKey) and digest:
            key.verify(signature, data, padding.PKCS1v15(), digest)
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            if not isinstance(key, _ED.get(algorithm, type(None))):
                return False
            key.verify(signature, data)
        elif isinstance(key, mldsa.MLDSA44PublicKey | mldsa.MLDSA65PublicKey):
            if not isinstance(key, _MLDSA.get(algorithm, type(None))):
                return False
            key.verify(signature, data)
        else:
            return False
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True
