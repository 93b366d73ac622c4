"""A SCEP requester for tests: RSA device keys, CSRs with a challenge password, pkiMessages."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import AttributeOID, NameOID

from iotpki.protocols.scep import der
from iotpki.protocols.scep.client import (
    CertRep,
    build_request,
    open_envelope,
    read_cert_rep,
    self_signed_certificate,
    transaction_id_for,
)
from iotpki.protocols.scep.messages import MessageType

__all__ = [
    "Device",
    "Parts",
    "assemble",
    "ca_ra_certs",
    "duplicated_rdn_certificate",
    "rsa_key",
    "seal",
]


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


# -- structural building blocks, for tests that re-sign altered pkiMessages ---------------------

OID_CONTENT_TYPE = "1.2.840.113549.1.9.3"
OID_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
OID_SIGNING_TIME = "1.2.840.113549.1.9.5"
OID_MESSAGE_TYPE = "2.16.840.1.113733.1.9.2"
OID_SENDER_NONCE = "2.16.840.1.113733.1.9.5"
OID_TRANSACTION_ID = "2.16.840.1.113733.1.9.7"
_DATA_OID = "1.2.840.113549.1.7.1"


@dataclass
class Parts:
    """The pieces of a pkiMessage a client signs, each as DER, to alter before :func:`assemble`."""

    certificates: list[bytes]
    sid: bytes  # the SignerIdentifier
    attributes: list[tuple[str, list[bytes]]]  # (OID, values) in order
    content: bytes | None  # the eContent (the pkcsPKIEnvelope)
    digest_oid: str = "2.16.840.1.101.3.4.2.1"  # sha256
    signature_oid: str = "1.2.840.113549.1.1.1"  # rsaEncryption
    content_type_oid: str = _DATA_OID

    @classmethod
    def of(
        cls,
        signer: x509.Certificate,
        message_type: int,
        transaction_id: str,
        content: bytes,
        now: datetime,
        nonce: bytes = b"\x07" * 16,
    ) -> Parts:
        """What a well-behaved client signs: the usual attributes over ``content``."""
        digest = hashes.Hash(hashes.SHA256())
        digest.update(content)
        utc = now.strftime("%y%m%d%H%M%SZ").encode()
        return cls(
            certificates=[signer.public_bytes(serialization.Encoding.DER)],
            sid=der.tlv(0x30, signer.issuer.public_bytes() + der.integer(signer.serial_number)),
            attributes=[
                (OID_CONTENT_TYPE, [der.oid(_DATA_OID)]),
                (OID_SIGNING_TIME, [der.tlv(0x17, utc)]),
                (OID_MESSAGE_DIGEST, [der.tlv(0x04, digest.finalize())]),
                (OID_MESSAGE_TYPE, [der.tlv(0x13, str(message_type).encode())]),
                (OID_SENDER_NONCE, [der.tlv(0x04, nonce)]),
                (OID_TRANSACTION_ID, [der.tlv(0x13, transaction_id.encode())]),
            ],
            content=content,
        )


def seal(content: bytes, recipient: x509.Certificate) -> bytes:
    """A pkcsPKIEnvelope of ``content`` to ``recipient`` (AES-128-CBC), as clients make it."""
    return (
        pkcs7.PKCS7EnvelopeBuilder()
        .set_data(content)
        .add_recipient(recipient)
        .set_content_encryption_algorithm(algorithms.AES128)
        .encrypt(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
    )


def assemble(parts: Parts, key: rsa.RSAPrivateKey) -> bytes:
    """A ContentInfo/SignedData of ``parts``, its attributes signed with ``key`` (RFC 5652)."""
    signed = b"".join(
        der.tlv(0x30, der.oid(oid) + der.tlv(0x31, b"".join(values)))
        for oid, values in parts.attributes
    )
    signature = key.sign(der.tlv(0x31, signed), padding.PKCS1v15(), hashes.SHA256())
    algorithm = der.tlv(0x30, der.oid(parts.digest_oid) + b"\x05\x00")
    signer_info = der.tlv(
        0x30,
        b"\x02\x01\x01"
        + parts.sid
        + algorithm
        + der.tlv(0xA0, signed)
        + der.tlv(0x30, der.oid(parts.signature_oid) + b"\x05\x00")
        + der.tlv(0x04, signature),
    )
    encapsulated = der.oid(parts.content_type_oid)
    if parts.content is not None:
        encapsulated += der.tlv(0xA0, der.tlv(0x04, parts.content))
    signed_data = der.tlv(
        0x30,
        b"\x02\x01\x01"
        + der.tlv(0x31, algorithm)
        + der.tlv(0x30, encapsulated)
        + der.tlv(0xA0, b"".join(parts.certificates))
        + der.tlv(0x31, signer_info),
    )
    return der.tlv(0x30, der.oid("1.2.840.113549.1.7.2") + der.tlv(0xA0, signed_data))


def duplicated_rdn_certificate(certificate: x509.Certificate) -> tuple[bytes, bytes]:
    """``certificate`` with its issuer and subject's RDN repeating its attribute, and that
    issuer's IssuerAndSerialNumber: DER cryptography reads lazily and refuses at first use."""
    name = certificate.subject.public_bytes()
    rdn = der.children(der.read(name), 16)[0]
    attribute = der.children(rdn, 17)[0].encoded
    doubled = der.tlv(0x30, der.tlv(0x31, attribute + attribute))
    cert_der = certificate.public_bytes(serialization.Encoding.DER)
    tbs, algorithm, signature = der.children(der.read(cert_der), 16)
    fields = [f.encoded for f in der.children(tbs, 16)]
    offset = 1 if fields[0][0] == 0xA0 else 0  # [0] version
    fields[offset + 2] = doubled  # issuer
    fields[offset + 4] = doubled  # subject
    rebuilt_tbs = der.tlv(0x30, b"".join(fields))
    rebuilt = der.tlv(0x30, rebuilt_tbs + algorithm.encoded + signature.encoded)
    sid = der.tlv(0x30, doubled + der.integer(certificate.serial_number))
    return rebuilt, sid
