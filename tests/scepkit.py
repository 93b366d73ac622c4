"""A SCEP requester for tests: RSA device keys, CSRs with a challenge password, pkiMessages."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import AttributeOID, NameOID

from iotpki.protocols.scep.client import (
    CertRep,
    build_request,
    open_envelope,
    read_cert_rep,
    self_signed_certificate,
    transaction_id_for,
)
from iotpki.protocols.scep.messages import MessageType

__all__ = ["Device", "ca_ra_certs", "rsa_key"]


@functools.cache
def _key_pool() -> list[rsa.RSAPrivateKey]:
    return []


def rsa_key(index: int) -> rsa.RSAPrivateKey:
    """The ``index``-th RSA-2048 test key (made once per session)."""
    pool = _key_pool()
    while len(pool) <= index:
        pool.append(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    return pool[index]


def ca_ra_certs(der: bytes) -> tuple[x509.Certificate, list[x509.Certificate]]:
    """The RA certificate (keyEncipherment, not a CA) and the others from GetCACert."""
    certs = pkcs7.load_der_pkcs7_certificates(der)
    ra = [
        c for c in certs if not c.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    ]
    assert len(ra) == 1
    return ra[0], [c for c in certs if c is not ra[0]]


@dataclass
class Device:
    """A SCEP requester with one RSA key and, once enrolled, a certificate."""

    name: str
    key: rsa.RSAPrivateKey
    certificate: x509.Certificate | None = None
    sent: list[bytes] = field(default_factory=list)
    last_signer: x509.Certificate | None = None
    _self_signed: x509.Certificate | None = None

    def csr(self, password: str | None, key: rsa.RSAPrivateKey | None = None) -> bytes:
        """A PKCS#10 request for this device's name, with the challenge password if given."""
        builder = x509.CertificateSigningRequestBuilder().subject_name(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.name)])
        )
        if password is not None:
            builder = builder.add_attribute(AttributeOID.CHALLENGE_PASSWORD, password.encode())
        csr = builder.sign(key or self.key, hashes.SHA256())
        return csr.public_bytes(serialization.Encoding.DER)

    @property
    def transaction_id(self) -> str:
        """The RFC 8894 transactionID of this device's key."""
        return transaction_id_for(self.key.public_key())

    def self_signed(self, now: datetime) -> x509.Certificate:
        """The self-signed certificate a first request is signed with (made once)."""
        if self._self_signed is None:
            name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.name)])
            self._self_signed = self_signed_certificate(self.key, name, now)
        return self._self_signed

    def message(
        self,
        message_type: int,
        content: bytes,
        ra: x509.Certificate,
        now: datetime,
        *,
        signer: x509.Certificate | None = None,
        key: rsa.RSAPrivateKey | None = None,
        transaction_id: str | None = None,
        sender_nonce: bytes | None = None,
        digest_algorithm: str = "sha256",
    ) -> bytes:
        """A pkiMessage signed by ``signer`` (default: self-signed) and encrypted to ``ra``."""
        self.last_signer = signer or self.self_signed(now)
        der = build_request(
            message_type=message_type,
            content=content,
            signer=self.last_signer,
            key=key or self.key,
            recipient=ra,
            transaction_id=transaction_id or self.transaction_id,
            now=now,
            sender_nonce=sender_nonce,
            digest_algorithm=digest_algorithm,
        )
        self.sent.append(der)
        return der

    def pkcs_req(self, password: str | None, ra: x509.Certificate, now: datetime) -> bytes:
        """A PKCSReq with the challenge password."""
        return self.message(MessageType.PKCS_REQ, self.csr(password), ra, now)

    def renewal_req(self, ra: x509.Certificate, now: datetime) -> bytes:
        """A RenewalReq for the same key, signed with the current certificate."""
        assert self.certificate is not None
        return self.message(
            MessageType.RENEWAL_REQ, self.csr(None), ra, now, signer=self.certificate
        )

    def read(self, der: bytes, ra: x509.Certificate, now: datetime) -> CertRep:
        """Verify a CertRep from ``ra``."""
        return read_cert_rep(der, ra, now)

    def issued(self, rep: CertRep, now: datetime) -> x509.Certificate:
        """The certificate in a SUCCESS CertRep, kept as this device's."""
        assert self.last_signer is not None
        certs, _ = open_envelope(rep.envelope, self.last_signer, self.key)
        assert len(certs) == 1
        self.certificate = certs[0]
        return certs[0]
