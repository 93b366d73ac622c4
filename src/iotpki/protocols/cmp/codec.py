"""CMP messages on the wire (RFC 9810 / RFC 4210 with the RFC 9480 updates) through
pyasn1-alt-modules: reading a PKIMessage defensively and building the answers.

A read message keeps the exact bytes of its header and body: protection is computed over
``ProtectedPart`` as the sender encoded it (RFC 4210 section 5.1.3), never over a re-encoding.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from asn1crypto import parser
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pyasn1.codec.der import decoder, encoder
from pyasn1.error import PyAsn1Error
from pyasn1.type import univ, useful
from pyasn1_alt_modules import rfc4211, rfc5280, rfc9480

from iotpki.core.der import sequence
from iotpki.errors import RequestError

__all__ = [
    "CmpFailure",
    "FailInfo",
    "Header",
    "ReadMessage",
    "certificate",
    "cmp_certificate",
    "decode",
    "encode",
    "general_name",
    "info_type_and_value",
    "protected_part",
    "status_info",
    "template_parts",
]

_DER = serialization.Encoding.DER
IMPLICIT_CONFIRM = univ.ObjectIdentifier("1.3.6.1.5.5.7.4.13")
"""id-it-implicitConfirm (RFC 4210 section 5.1.1.1)."""


class FailInfo(enum.IntEnum):
    """PKIFailureInfo bits (RFC 4210 section 5.2.3)."""

    BAD_ALG = 0
    BAD_MESSAGE_CHECK = 1
    BAD_REQUEST = 2
    BAD_TIME = 3
    BAD_CERT_ID = 4
    BAD_DATA_FORMAT = 5
    WRONG_AUTHORITY = 6
    INCORRECT_DATA = 7
    BAD_POP = 9
    CERT_REVOKED = 10
    CERT_CONFIRMED = 11
    WRONG_INTEGRITY = 12
    BAD_RECIPIENT_NONCE = 13
    UNACCEPTED_POLICY = 15
    UNACCEPTED_EXTENSION = 16
    BAD_SENDER_NONCE = 18
    BAD_CERT_TEMPLATE = 19
    SIGNER_NOT_TRUSTED = 20
    TRANSACTION_ID_IN_USE = 21
    UNSUPPORTED_VERSION = 22
    NOT_AUTHORIZED = 23
    SYSTEM_UNAVAIL = 24
    SYSTEM_FAILURE = 25


class CmpFailure(RequestError):
    """A message refused with a CMP failInfo (answered with an ``error`` message)."""

    code = "cmp_failure"

    def __init__(self, message: str, fail_info: FailInfo, **data: object) -> None:
        super().__init__(message, fail_info=fail_info.name.lower(), **data)
        self.fail_info = fail_info


@dataclass(frozen=True, slots=True)
class Header:
    """The header fields the server reads, as plain values."""

    pvno: int
    sender: rfc5280.GeneralName
    sender_kid: bytes | None
    transaction_id: bytes | None
    sender_nonce: bytes | None
    recip_nonce: bytes | None
    message_time: datetime | None
    protection_alg: str | None  # dotted OID
    protection_params: bytes | None  # the DER of the algorithm's parameters
    implicit_confirm: bool


@dataclass(frozen=True, slots=True)
class ReadMessage:
    """A decoded PKIMessage with the bytes its protection covers."""

    message: rfc9480.PKIMessage
    header: Header
    kind: str  # the PKIBody alternative: "ir", "cr", "p10cr", "kur", "rr", "certConf", ...
    protected: bytes  # DER of ProtectedPart as the sender encoded it
    body_content: bytes  # the DER inside the body's explicit tag, as the sender encoded it
    protection: bytes | None
    extra_certs: list[x509.Certificate]

    @property
    def body(self) -> univ.Asn1Item:
        """The body's content."""
        return self.message["body"][self.kind]


def _elements(content: bytes) -> list[bytes]:
    """The DER elements inside a constructed value's contents, each with its own header."""
    parts: list[bytes] = []
    offset = 0
    while offset < len(content):
        _, _, _, head, inner, _ = parser.parse(content[offset:])
        size = len(head) + len(inner)
        parts.append(content[offset : offset + size])
        offset += size
    return parts


def _optional_bytes(value: univ.OctetString) -> bytes | None:
    return bytes(value) if value.isValue else None


def _time(value: useful.GeneralizedTime) -> datetime | None:
    if not value.isValue:
        return None
    try:
        moment: datetime = value.asDateTime
        return moment
    except (PyAsn1Error, ValueError) as exc:
        raise CmpFailure("messageTime is not a valid time", FailInfo.BAD_TIME) from exc


def decode(der: bytes) -> ReadMessage:
    """A PKIMessage read completely; ``CmpFailure(badDataFormat)`` if it is not one."""
    try:
        message, rest = decoder.decode(der, asn1Spec=rfc9480.PKIMessage())
        if rest:
            raise CmpFailure("bytes follow the PKIMessage", FailInfo.BAD_DATA_FORMAT)
        _, _, _, _, content, _ = parser.parse(der, strict=True)
        header_der, body_der = _elements(content)[:2]
        body_content = parser.parse(body_der)[4]
        head = message["header"]
        general_info = head["generalInfo"]
        implicit = general_info.isValue and any(
            itav["infoType"] == IMPLICIT_CONFIRM for itav in general_info
        )
        algorithm = head["protectionAlg"]
        params = algorithm["parameters"] if algorithm.isValue else None
        header = Header(
            pvno=int(head["pvno"]),
            sender=head["sender"],
            sender_kid=_optional_bytes(head["senderKID"]),
            transaction_id=_optional_bytes(head["transactionID"]),
            sender_nonce=_optional_bytes(head["senderNonce"]),
            recip_nonce=_optional_bytes(head["recipNonce"]),
            message_time=_time(head["messageTime"]),
            protection_alg=str(algorithm["algorithm"]) if algorithm.isValue else None,
            protection_params=bytes(params) if params is not None and params.isValue else None,
            implicit_confirm=bool(implicit),
        )
        kind = message["body"].getName()
        protection = message["protection"]
        extra = message["extraCerts"]
        certs = [
            x509.load_der_x509_certificate(encoder.encode(c))
            for c in (extra if extra.isValue else [])
        ]
    except CmpFailure:
        raise
    except (PyAsn1Error, ValueError, TypeError, KeyError, IndexError) as exc:
        raise CmpFailure(
            f"not a CMP PKIMessage: {str(exc)[:200]}", FailInfo.BAD_DATA_FORMAT
        ) from exc
    return ReadMessage(
        message=message,
        header=header,
        kind=kind,
        protected=sequence(header_der, body_der),
        body_content=body_content,
        protection=bytes(protection.asOctets()) if protection.isValue else None,
        extra_certs=certs,
    )


def encode(value: univ.Asn1Item) -> bytes:
    """The DER of a pyasn1 value."""
    return bytes(encoder.encode(value))


def protected_part(message: rfc9480.PKIMessage) -> bytes:
    """The DER of a built message's ProtectedPart, which its protection signs or MACs."""
    part = rfc9480.ProtectedPart()
    part["header"] = message["header"]
    part["body"] = message["body"]
    return encode(part)


def general_name(name: x509.Name) -> rfc5280.GeneralName:
    """A directoryName GeneralName."""
    decoded, _ = decoder.decode(name.public_bytes(), asn1Spec=rfc5280.Name())
    value = rfc5280.GeneralName()
    value["directoryName"]["rdnSequence"] = decoded["rdnSequence"]
    return value


def cmp_certificate(
    cert: x509.Certificate, into: rfc9480.CMPCertificate | None = None
) -> rfc9480.CMPCertificate:
    """A certificate as a CMPCertificate, filled ``into`` a (tagged) component if given."""
    decoded, _ = decoder.decode(cert.public_bytes(_DER), asn1Spec=rfc9480.CMPCertificate())
    if into is None:
        return decoded
    for position in range(len(decoded)):
        into.setComponentByPosition(position, decoded[position])
    return into


def certificate(value: rfc5280.Certificate) -> x509.Certificate:
    """A pyasn1 certificate as cryptography's; ``CmpFailure(badDataFormat)`` if it is none."""
    try:
        return x509.load_der_x509_certificate(encode(value))
    except (PyAsn1Error, ValueError) as exc:
        raise CmpFailure("a certificate does not parse", FailInfo.BAD_DATA_FORMAT) from exc


def status_info(
    status: int, text: str | None = None, fail: FailInfo | None = None
) -> rfc9480.PKIStatusInfo:
    """PKIStatusInfo: accepted (0), grantedWithMods (1), rejection (2), waiting (3)."""
    info = rfc9480.PKIStatusInfo()
    info["status"] = status
    if text:
        info["statusString"].append(text[:512])
    if fail is not None:
        info["failInfo"] = rfc9480.PKIFailureInfo(binValue="0" * int(fail) + "1")
    return info


def info_type_and_value(oid: str, value: univ.Asn1Item | None = None) -> rfc9480.InfoTypeAndValue:
    """An InfoTypeAndValue; ``value`` encoded as its ANY."""
    itav = rfc9480.InfoTypeAndValue()
    itav["infoType"] = univ.ObjectIdentifier(oid)
    if value is not None:
        itav["infoValue"] = univ.Any(encode(value))
    return itav


def template_parts(
    template: rfc4211.CertTemplate,
) -> tuple[bytes | None, bytes | None, bytes | None]:
    """The DER of a CertTemplate's subject, publicKey and extensions where present, untagged
    (as a Name, a SubjectPublicKeyInfo and an Extensions)."""
    subject_der = key_der = ext_der = None
    subject = template["subject"]
    if subject.isValue:
        name = rfc5280.Name()
        name["rdnSequence"] = subject["rdnSequence"]
        subject_der = encode(name)
    public_key = template["publicKey"]
    if public_key.isValue:
        spki = rfc5280.SubjectPublicKeyInfo()
        spki["algorithm"] = public_key["algorithm"]
        spki["subjectPublicKey"] = public_key["subjectPublicKey"]
        key_der = encode(spki)
    extensions = template["extensions"]
    if extensions.isValue:
        plain = rfc5280.Extensions()
        plain.extend(list(extensions))
        ext_der = encode(plain)
    return subject_der, key_der, ext_der
