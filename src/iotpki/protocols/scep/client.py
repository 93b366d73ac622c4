"""The requester's side of SCEP (RFC 8894 section 3): build requests, read CertReps. Sans-I/O.

For devices that enroll over SCEP through iotpki's own code, and for tests and benchmarks that
must speak SCEP without a separate client.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from asn1crypto import cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.serialization import pkcs7

from iotpki.errors import BadSignature, MalformedInput
from iotpki.protocols.scep.messages import (
    FailInfo,
    PkiStatus,
    parse_pki_message,
    sign_pki_message,
)

__all__ = [
    "CertRep",
    "build_request",
    "issuer_and_serial",
    "open_envelope",
    "read_cert_rep",
    "self_signed_certificate",
    "transaction_id_for",
]

_DER = serialization.Encoding.DER


def transaction_id_for(public_key: rsa.RSAPublicKey) -> str:
    """RFC 8894 section 3.2.1.1: a hash of the public key, as hex."""
    spki = public_key.public_bytes(_DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


def self_signed_certificate(
    key: rsa.RSAPrivateKey, subject: x509.Name, now: datetime
) -> x509.Certificate:
    """RFC 8894 section 2.3: the self-signed certificate a new requester signs PKCSReq with."""
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


def issuer_and_serial(issuer: x509.Name, serial: int) -> bytes:
    """An IssuerAndSerialNumber (GetCert, GetCRL content; RFC 8894 section 3.3.4)."""
    value = cms.IssuerAndSerialNumber(
        {"issuer": asn1_x509.Name.load(issuer.public_bytes()), "serial_number": serial}
    )
    return bytes(value.dump())


def build_request(
    *,
    message_type: int,
    content: bytes,
    signer: x509.Certificate,
    key: rsa.RSAPrivateKey,
    recipient: x509.Certificate,
    transaction_id: str,
    now: datetime,
    sender_nonce: bytes | None = None,
    digest_algorithm: str = "sha256",
) -> bytes:
    """A pkiMessage whose content is encrypted (AES-128-CBC) to the RA ``recipient``."""
    envelope = (
        pkcs7.PKCS7EnvelopeBuilder()
        .set_data(content)
        .add_recipient(recipient)
        .set_content_encryption_algorithm(algorithms.AES128)
        .encrypt(_DER, [pkcs7.PKCS7Options.Binary])
    )
    return sign_pki_message(
        signer=signer,
        key=key,
        message_type=message_type,
        transaction_id=transaction_id,
        now=now,
        content=envelope,
        sender_nonce=sender_nonce,
        digest_algorithm=digest_algorithm,
    )


@dataclass(frozen=True, slots=True)
class CertRep:
    """A verified CertRep: its status, failInfo and (on SUCCESS) the still-encrypted envelope."""

    status: PkiStatus
    fail_info: FailInfo | None
    transaction_id: str
    recipient_nonce: bytes | None
    envelope: bytes


def read_cert_rep(der: bytes, ra: x509.Certificate, now: datetime) -> CertRep:
    """Parse a CertRep and check that the RA signed it."""
    message = parse_pki_message(der)
    if message.signer != ra:
        raise BadSignature("the CertRep is not signed by the RA")
    message.verify(now, timedelta(days=1))
    if message.pki_status not in {s.value for s in PkiStatus}:
        raise MalformedInput(f"bad pkiStatus {message.pki_status!r}")
    fail_info = None
    if message.fail_info is not None:
        codes = {info.code: info for info in FailInfo}
        if message.fail_info not in codes:
            raise MalformedInput(f"bad failInfo {message.fail_info!r}")
        fail_info = codes[message.fail_info]
    return CertRep(
        status=PkiStatus(message.pki_status),
        fail_info=fail_info,
        transaction_id=message.transaction_id,
        recipient_nonce=message.recipient_nonce,
        envelope=message.content,
    )


def open_envelope(
    envelope: bytes, certificate: x509.Certificate, key: rsa.RSAPrivateKey
) -> tuple[list[x509.Certificate], list[x509.CertificateRevocationList]]:
    """The certificates and CRLs in a SUCCESS CertRep's envelope (RFC 8894 section 3.3.2)."""
    degenerate = pkcs7.pkcs7_decrypt_der(envelope, certificate, key, [])
    signed = cms.ContentInfo.load(degenerate)["content"]
    certificates = [
        x509.load_der_x509_certificate(bytes(choice.chosen.dump()))
        for choice in signed["certificates"] or []
    ]
    crls = [x509.load_der_x509_crl(bytes(choice.chosen.dump())) for choice in signed["crls"] or []]
    return certificates, crls
