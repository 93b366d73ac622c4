"""The CMP signer of each CA (RFC 9483 section 3.1): the certificate and key that protect the
answers to signature-protected requests, and every error that no shared secret can protect.

Like the OCSP responder, a signer is a P-256 key of the CA's key backend with a certificate
of the ``cmp-signer`` profile (EKU id-kp-cmcRA), kept in the store so that every replica
signs with the same one until a third of its life remains; the CA key signs no CMP message.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from iotpki.core.authority import Authority
from iotpki.core.models import KeyAlgorithm
from iotpki.core.ports import KeyBackend
from iotpki.core.ports.shared import ResponderStore

__all__ = ["PROFILE", "CmpSigner", "Signers"]

PROFILE = "cmp-signer"
_RENEW_FRACTION = 3
_KEPT_PREFIX = "cmp:"  # the signers share the delegated-responder table with OCSP


@dataclass(frozen=True, slots=True)
class CmpSigner:
    """A CA's CMP signer: certificate, key, and the chain up to the root."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    chain: tuple[x509.Certificate, ...]

    def sign(self, data: bytes) -> bytes:
        """An ecdsa-with-SHA256 signature of ``data``."""
        return self.key.sign(data, ec.ECDSA(hashes.SHA256()))


def _fresh(cert: x509.Certificate, now: datetime) -> bool:
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    return cert.not_valid_after_utc - now > life / _RENEW_FRACTION


class Signers:
    """The CMP signer of every issuing CA, made on first use and renewed when due."""

    def __init__(self, authority: Authority, kept: ResponderStore, keys: KeyBackend) -> None:
        self._authority = authority
        self._kept = kept
        self._keys = keys
        self._lock = threading.Lock()
        self._signers: dict[str, CmpSigner] = {}

    def of(self, ca_name: str) -> CmpSigner:
        """The current signer of ``ca_name``."""
        now = self._authority.clock.now()
        signer = self._signers.get(ca_name)
        if signer is not None and _fresh(signer.certificate, now):
            return signer
        with self._lock:
            signer = self._signers.get(ca_name)
            if signer is None or not _fresh(signer.certificate, now):
                signer = self._signers[ca_name] = self._current(ca_name, now)
        return signer

    def _current(self, ca_name: str, now: datetime) -> CmpSigner:
        kept = self._load(ca_name)
        if kept is not None and _fresh(kept.certificate, now):
            return kept
        made, key_ref = self._issue(ca_name)
        der = made.certificate.public_bytes(serialization.Encoding.DER)
        replace = (
            None if kept is None else kept.certificate.public_bytes(serialization.Encoding.DER)
        )
        after = made.certificate.not_valid_after_utc
        name = _KEPT_PREFIX + ca_name
        if self._kept.put_ocsp_responder(name, der, key_ref, after, replace=replace):
            return made
        return self._load(ca_name) or made  # another replica was quicker: take its signer

    def _load(self, ca_name: str) -> CmpSigner | None:
        kept = self._kept.ocsp_responder(_KEPT_PREFIX + ca_name)
        if kept is None:
            return None
        der, key_ref = kept
        key = self._keys.signer(key_ref)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            return None
        chain = tuple(self._authority.chain(ca_name))
        return CmpSigner(x509.load_der_x509_certificate(der), key, chain)

    def _issue(self, ca_name: str) -> tuple[CmpSigner, str]:
        key_ref = self._keys.generate(f"cmp-{ca_name}", KeyAlgorithm.P256)
        key = self._keys.signer(key_ref)
        assert isinstance(key, ec.EllipticCurvePrivateKey)  # P-256, as just asked for
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{ca_name} CMP signer")])
        csr = (
            x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
        )
        issued = self._authority.issue(csr, profile=PROFILE, ca=ca_name, actor="system:cmp")
        return CmpSigner(issued.certificate, key, tuple(issued.chain[1:])), key_ref
