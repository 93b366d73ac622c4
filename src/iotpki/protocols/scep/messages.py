"""SCEP pkiMessage codec (RFC 8894 section 3): parse a request, build a CertRep. Sans-I/O.

A pkiMessage is a CMS SignedData (RFC 5652) whose signed attributes carry the SCEP fields and
whose content is the DER of the pkcsPKIEnvelope (:mod:`iotpki.protocols.scep.envelope`).
asn1crypto reads and writes the SignedData (pyca/cryptography cannot add SCEP's authenticated
attributes); cryptography verifies and, through the RA key's backend, signs.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from asn1crypto import algos, core
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from iotpki.errors import MalformedInput, RequestError
from iotpki.protocols.scep import der

__all__ = [
    "DECODE_ERRORS",
    "DIGESTS",
    "FailInfo",
    "MessageType",
    "PkiMessage",
    "PkiStatus",
    "ScepFailure",
    "UnreadableMessage",
    "build_cert_rep",
    "parse_pki_message",
    "sign_pki_message",
]


class MessageType(enum.IntEnum):
    """RFC 8894 section 3.2.1.2 messageType values."""

    CERT_REP = 3
    RENEWAL_REQ = 17
    PKCS_REQ = 19
    CERT_POLL = 20
    GET_CERT = 21
    GET_CRL = 22


class PkiStatus(enum.StrEnum):
    """RFC 8894 section 3.2.1.3 pkiStatus values."""

    SUCCESS = "0"
    FAILURE = "2"
    PENDING = "3"


class FailInfo(enum.StrEnum):
    """RFC 8894 section 3.2.1.4 failInfo values, by the RFC's names."""

    BAD_ALG = "badAlg"
    BAD_MESSAGE_CHECK = "badMessageCheck"
    BAD_REQUEST = "badRequest"
    BAD_TIME = "badTime"
    BAD_CERT_ID = "badCertId"

    @property
    def code(self) -> str:
        """The decimal string the failInfo attribute carries."""
        return str(list(FailInfo).index(self))


class ScepFailure(RequestError):
    """A request refused with a SCEP failInfo (answered as a CertRep FAILURE)."""

    code = "scep_failure"

    def __init__(self, message: str, fail_info: FailInfo, **data: object) -> None:
        super().__init__(message, fail_info=str(fail_info), **data)
        self.fail_info = fail_info


# RFC 8894 section 3.2.1: the SCEP attribute OIDs (id-VeriSign 2.16.840.1.113733.1.9.x)
_MESSAGE_TYPE = "2.16.840.1.113733.1.9.2"
_PKI_STATUS = "2.16.840.1.113733.1.9.3"
_FAIL_INFO = "2.16.840.1.113733.1.9.4"
_SENDER_NONCE = "2.16.840.1.113733.1.9.5"
_RECIPIENT_NONCE = "2.16.840.1.113733.1.9.6"
_TRANSACTION_ID = "2.16.840.1.113733.1.9.7"
_CONTENT_TYPE = "1.2.840.113549.1.9.3"
_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
_SIGNING_TIME = "1.2.840.113549.1.9.5"

DIGESTS: dict[str, type[hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
"""Message digests of replies: the request's if listed here (GetCACaps advertises them)."""

_REQUEST_DIGESTS: dict[str, type[hashes.HashAlgorithm]] = {**DIGESTS, "sha1": hashes.SHA1}
"""Digests accepted on requests. RFC 8894 section 3.5.2 keeps SHA-1 for legacy clients (and
micromdm's scepclient signs with it whatever GetCACaps says); MD5 and others get badAlg."""

_RSA_SIGNATURES = {"rsassa_pkcs1v15", "sha1_rsa", "sha256_rsa", "sha384_rsa", "sha512_rsa"}
_NONCE_SIZES = range(8, 65)  # RFC 8894 section 3.2.1.5 says 16 bytes; tolerate other lengths
_MAX_TRANSACTION_ID = 128


@dataclass(frozen=True, slots=True)
class PkiMessage:
    """A parsed (not yet verified) SCEP request."""

    message_type: int
    transaction_id: str
    sender_nonce: bytes
    signer: x509.Certificate
    digest_algorithm: str
    content: bytes  # the pkcsPKIEnvelope DER
    signing_time: datetime | None
    signed_attributes: bytes  # DER of the SET OF attributes, as signed
    signature: bytes
    signature_algorithm: str
    message_digest: bytes | None
    pki_status: str | None = None  # CertRep only
    fail_info: str | None = None  # CertRep only, the decimal code
    recipient_nonce: bytes | None = None  # CertRep only

    def verify(self, now: datetime, tolerance: timedelta) -> None:
        """Check algorithms, digest, signature and signingTime (RFC 8894 section 3.2.1.4)."""
        hash_class = _REQUEST_DIGESTS.get(self.digest_algorithm)
        if hash_class is None or self.signature_algorithm not in _RSA_SIGNATURES:
            raise ScepFailure(
                f"unsupported algorithm {self.digest_algorithm}/{self.signature_algorithm}",
                FailInfo.BAD_ALG,
            )
        try:
            public_key = self.signer.public_key()
        except (ValueError, UnsupportedAlgorithm):
            raise ScepFailure("the signer's key cannot be read", FailInfo.BAD_ALG) from None
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise ScepFailure("the signer's key is not RSA", FailInfo.BAD_ALG)
        digest = hashes.Hash(hash_class())
        digest.update(self.content)
        if self.message_digest != digest.finalize():
            raise ScepFailure(
                "messageDigest does not match the content", FailInfo.BAD_MESSAGE_CHECK
            )
        try:
            public_key.verify(
                self.signature, self.signed_attributes, padding.PKCS1v15(), hash_class()
            )
        except (InvalidSignature, ValueError):
            raise ScepFailure("the signature does not verify", FailInfo.BAD_MESSAGE_CHECK) from None
        if self.signing_time is not None and abs(self.signing_time - now) > tolerance:
            raise ScepFailure(
                f"signingTime {self.signing_time.isoformat()} is too far from ours",
                FailInfo.BAD_TIME,
            )


DECODE_ERRORS: tuple[type[Exception], ...] = (
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    UnicodeDecodeError,
    UnsupportedAlgorithm,
    x509.DuplicateExtension,
    x509.InvalidVersion,
    x509.UnsupportedGeneralNameType,
)
"""What decoding hostile DER may raise, in asn1crypto and (lazily, at first use) cryptography."""


def _malformed(what: str) -> MalformedInput:
    return MalformedInput(f"not a SCEP pkiMessage: {what}")


_STRING_TAGS = frozenset({0x0C, 0x13, 0x14, 0x16})  # UTF8, Printable, T61, IA5 String


def _single(attributes: dict[bytes, list[der.Element]], oid: str) -> der.Element | None:
    values = attributes.get(_OID[oid])
    if values is None:
        return None
    if len(values) != 1:
        raise _malformed(f"attribute {oid} must have one value")
    return values[0]


def _text(element: der.Element | None, name: str) -> str | None:
    if element is None:
        return None
    if element.cls != 0 or element.constructed or element.tag not in _STRING_TAGS:
        raise _malformed(f"{name} is not a string")
    return element.contents.decode("utf-8")


def _bytes(element: der.Element | None, name: str) -> bytes | None:
    if element is None:
        return None
    if not element.is_(0, 4):
        raise _malformed(f"{name} is not an OCTET STRING")
    return der.octets(element)


def _time(element: der.Element | None) -> datetime | None:
    if element is None:
        return None
    value = core.Asn1Value.load(element.encoded, strict=True)
    if not isinstance(value, core.UTCTime | core.GeneralizedTime):
        raise _malformed("signingTime is not a time")
    result = value.native
    if not isinstance(result, datetime) or result.tzinfo is None:
        raise _malformed("signingTime is not a UTC time")
    return result


def _signer_certificate(sid: der.Element, certificates: list[der.Element]) -> bytes:
    """The certificate the SignerIdentifier names (RFC 5652 section 5.3)."""
    if sid.is_(0, 16):  # issuerAndSerialNumber
        issuer, serial = der.children(sid)
        for cert in certificates:
            tbs = der.children(der.children(cert, 16)[0], 16)
            if tbs[0].is_(2, 0):  # [0] version
                tbs = tbs[1:]
            if tbs[0].contents == serial.contents and tbs[2].encoded == issuer.encoded:
                return cert.encoded
    elif sid.is_(2, 0):  # [0] subjectKeyIdentifier
        for cert in certificates:
            loaded = x509.load_der_x509_certificate(cert.encoded)
            try:
                ski = loaded.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
            except x509.ExtensionNotFound:
                continue
            if ski.value.digest == sid.contents:
                return cert.encoded
    raise _malformed("the signer's certificate is not in the message")


def _algorithm(element: der.Element, names: dict[bytes, str]) -> str:
    identifier = der.children(element, 16)[0]
    return names.get(identifier.encoded, "unknown")


def parse_pki_message(data: bytes) -> PkiMessage:
    """Read a whole pkiMessage, every field the server uses decoded and checked here.

    ``MalformedInput`` when no CertRep can answer it (no single transactionID and senderNonce:
    HTTP 400), ``UnreadableMessage`` when one can (a CertRep FAILURE with its failInfo).
    """
    try:
        outer = _envelope_fields(data)
    except MalformedInput:
        raise
    except DECODE_ERRORS as exc:
        raise _malformed(str(exc)[:200]) from None
    try:
        return _complete(outer)
    except ScepFailure as exc:
        raise UnreadableMessage(exc.message, exc.fail_info, outer) from None
    except MalformedInput as exc:
        raise UnreadableMessage(exc.message, FailInfo.BAD_MESSAGE_CHECK, outer) from None
    except DECODE_ERRORS as exc:
        reason = f"not a SCEP pkiMessage: {str(exc)[:200]}"
        raise UnreadableMessage(reason, FailInfo.BAD_MESSAGE_CHECK, outer) from None


@dataclass(frozen=True, slots=True)
class _Outer:
    """What a CertRep needs of a request, and the elements the rest is read from."""

    transaction_id: str
    sender_nonce: bytes
    signed_data: list[der.Element]
    signer_info: list[der.Element]
    attributes: dict[bytes, list[der.Element]]
    repeated: list[bytes]  # attribute types that appear more than once


class UnreadableMessage(MalformedInput):
    """A pkiMessage with one transactionID and senderNonce whose other parts do not decode:
    malformed, yet a CertRep FAILURE with ``fail_info`` can answer it."""

    def __init__(self, message: str, fail_info: FailInfo, outer: _Outer) -> None:
        super().__init__(message, fail_info=str(fail_info))
        self.fail_info = fail_info
        self.transaction_id = outer.transaction_id
        self.sender_nonce = outer.sender_nonce


def _envelope_fields(data: bytes) -> _Outer:
    # ContentInfo ::= SEQUENCE { contentType, [0] EXPLICIT content } (RFC 5652 section 3)
    content_type, wrapped = der.children(der.read(data), 16)
    if content_type.encoded != _SIGNED_DATA or not wrapped.is_(2, 0):
        raise _malformed("not a CMS SignedData")
    # SignedData ::= SEQUENCE { version, digestAlgorithms, encapContentInfo,
    #   [0] certificates OPTIONAL, [1] crls OPTIONAL, signerInfos } (section 5.1)
    (signed_data,) = der.children(wrapped)
    fields = der.children(signed_data, 16)
    if len(fields) < 4:
        raise _malformed("a SignedData has at least four fields")
    signer_infos = der.children(fields[-1], 17)
    if len(signer_infos) != 1:
        raise _malformed("a pkiMessage has exactly one signer")
    # SignerInfo ::= SEQUENCE { version, sid, digestAlgorithm, [0] signedAttrs OPTIONAL,
    #   signatureAlgorithm, signature, [1] unsignedAttrs OPTIONAL } (section 5.3)
    info = der.children(signer_infos[0], 16)
    if len(info) not in (6, 7) or not info[3].is_(2, 0):
        raise _malformed("no signed attributes")
    attributes: dict[bytes, list[der.Element]] = {}
    repeated: list[bytes] = []
    for attribute in der.children(info[3]):
        kind, values = der.children(attribute, 16)
        if kind.encoded in attributes:
            repeated.append(kind.encoded)
        else:
            attributes[kind.encoded] = der.children(values, 17)
    for oid, name in ((_TRANSACTION_ID, "transactionID"), (_SENDER_NONCE, "senderNonce")):
        if _OID[oid] in repeated:
            raise _malformed(f"the {name} attribute appears twice")
    transaction_id = _text(_single(attributes, _TRANSACTION_ID), "transactionID")
    nonce = _bytes(_single(attributes, _SENDER_NONCE), "senderNonce")
    if not transaction_id or len(transaction_id) > _MAX_TRANSACTION_ID:
        raise _malformed("missing or bad transactionID")
    if not transaction_id.isprintable():
        raise _malformed("the transactionID is not printable")
    if nonce is None or len(nonce) not in _NONCE_SIZES:
        raise _malformed("missing or bad senderNonce")
    return _Outer(transaction_id, nonce, fields, info, attributes, repeated)


def _complete(outer: _Outer) -> PkiMessage:
    """The rest of the message; ``ScepFailure`` or ``MalformedInput`` if it does not decode."""
    if outer.repeated:
        names = ", ".join(sorted(der.dotted(oid) for oid in set(outer.repeated)))
        raise _malformed(f"attribute {names} appears twice")
    attributes, info, fields = outer.attributes, outer.signer_info, outer.signed_data
    rest = fields[3:]
    certificates = der.children(rest[0]) if rest[0].is_(2, 0) else []
    signer = _force(x509.load_der_x509_certificate(_signer_certificate(info[1], certificates)))
    # EncapsulatedContentInfo ::= SEQUENCE { eContentType, [0] EXPLICIT eContent OPTIONAL }
    encapsulated = der.children(fields[2], 16)
    if not 1 <= len(encapsulated) <= 2 or encapsulated[0].encoded != _DATA:
        raise _malformed("the encapsulated content is not data")
    payload = b""
    if len(encapsulated) == 2:
        (octets,) = der.children(encapsulated[1])
        payload = _bytes(octets, "eContent") or b""
    content_type = _single(attributes, _CONTENT_TYPE)
    if content_type is not None and content_type.encoded != _DATA:
        raise _malformed("the contentType attribute is not the content's type")
    type_text = _text(_single(attributes, _MESSAGE_TYPE), "messageType")
    if type_text is None or not type_text.isdigit() or len(type_text) > 3:
        raise ScepFailure("missing or bad messageType", FailInfo.BAD_REQUEST)
    signature = info[5]
    if not signature.is_(0, 4):
        raise _malformed("the signature is not an OCTET STRING")
    signed_attrs = info[3]
    return PkiMessage(
        message_type=int(type_text),
        transaction_id=outer.transaction_id,
        sender_nonce=outer.sender_nonce,
        signer=signer,
        digest_algorithm=_algorithm(info[2], _DIGEST_NAMES),
        content=payload,
        signing_time=_time(_single(attributes, _SIGNING_TIME)),
        # RFC 5652 section 5.4: the signature covers the attributes with the SET OF tag.
        signed_attributes=b"\x31" + signed_attrs.header[1:] + signed_attrs.contents,
        signature=der.octets(signature),
        signature_algorithm=_algorithm(info[4], _SIGNATURE_NAMES),
        message_digest=_bytes(_single(attributes, _MESSAGE_DIGEST), "messageDigest"),
        pki_status=_text(_single(attributes, _PKI_STATUS), "pkiStatus"),
        fail_info=_text(_single(attributes, _FAIL_INFO), "failInfo"),
        recipient_nonce=_bytes(_single(attributes, _RECIPIENT_NONCE), "recipientNonce"),
    )


def _force(certificate: x509.Certificate) -> x509.Certificate:
    """``certificate`` once the fields the server reads have decoded (cryptography decodes
    lazily: a bad name or extension raises ``ValueError`` at first use, not at load)."""
    _ = certificate.issuer, certificate.subject, certificate.serial_number
    _ = certificate.extensions
    return certificate


_OID = {
    oid: der.oid(oid)
    for oid in (
        _CONTENT_TYPE,
        _SIGNING_TIME,
        _MESSAGE_DIGEST,
        _MESSAGE_TYPE,
        _PKI_STATUS,
        _FAIL_INFO,
        _SENDER_NONCE,
        _RECIPIENT_NONCE,
        _TRANSACTION_ID,
    )
}
_DATA = der.oid("1.2.840.113549.1.7.1")
_SIGNED_DATA = der.oid("1.2.840.113549.1.7.2")
_NULL = b"\x05\x00"
_DIGEST_NAMES = {der.oid(algos.DigestAlgorithmId(name).dotted): name for name in _REQUEST_DIGESTS}
_SIGNATURE_NAMES = {
    der.oid(algos.SignedDigestAlgorithmId(name).dotted): name for name in _RSA_SIGNATURES
}
_DIGEST_IDS = {
    name: der.tlv(0x30, der.oid(algos.DigestAlgorithmId(name).dotted) + _NULL)
    for name in _REQUEST_DIGESTS
}
_RSA_ENCRYPTION = der.tlv(0x30, der.oid("1.2.840.113549.1.1.1") + _NULL)


def _attribute(oid: str, value: bytes) -> bytes:
    """Attribute ::= SEQUENCE { attrType OID, attrValues SET OF (one) } (RFC 5652 5.3)."""
    return der.tlv(0x30, _OID[oid] + der.tlv(0x31, value))


def sign_pki_message(
    *,
    signer: x509.Certificate,
    key: rsa.RSAPrivateKey,
    message_type: int,
    transaction_id: str,
    now: datetime,
    content: bytes | None = None,
    sender_nonce: bytes | None = None,
    recipient_nonce: bytes | None = None,
    status: PkiStatus | None = None,
    fail_info: FailInfo | None = None,
    digest_algorithm: str = "sha256",
) -> bytes:
    """A pkiMessage (RFC 8894 section 3.2): SignedData over ``content`` with SCEP attributes.

    Written directly in DER (RFC 5652 section 5): a fixed shape, and several times faster
    than building asn1crypto objects, which matters on the enrollment path.
    """
    hash_class = _REQUEST_DIGESTS[digest_algorithm]
    digest = hashes.Hash(hash_class())
    digest.update(content or b"")
    utc = now.astimezone(UTC).strftime("%y%m%d%H%M%SZ").encode()
    attributes = [
        _attribute(_CONTENT_TYPE, _DATA),
        _attribute(_SIGNING_TIME, der.tlv(0x17, utc)),
        _attribute(_MESSAGE_DIGEST, der.tlv(0x04, digest.finalize())),
        _attribute(_MESSAGE_TYPE, der.tlv(0x13, str(message_type).encode())),
        _attribute(_SENDER_NONCE, der.tlv(0x04, sender_nonce or os.urandom(16))),
        _attribute(_TRANSACTION_ID, der.tlv(0x13, transaction_id.encode())),
    ]
    if status is not None:
        attributes.append(_attribute(_PKI_STATUS, der.tlv(0x13, str(status).encode())))
    if recipient_nonce is not None:
        attributes.append(_attribute(_RECIPIENT_NONCE, der.tlv(0x04, recipient_nonce)))
    if fail_info is not None:
        attributes.append(_attribute(_FAIL_INFO, der.tlv(0x13, fail_info.code.encode())))
    signed = b"".join(sorted(attributes))  # DER: a SET OF is sorted
    signature = key.sign(der.tlv(0x31, signed), padding.PKCS1v15(), hash_class())
    digest_id = _DIGEST_IDS[digest_algorithm]
    issuer_and_serial = der.tlv(
        0x30, signer.issuer.public_bytes() + der.integer(signer.serial_number)
    )
    signer_info = der.tlv(
        0x30,
        b"\x02\x01\x01"
        + issuer_and_serial
        + digest_id
        + der.tlv(0xA0, signed)
        + _RSA_ENCRYPTION
        + der.tlv(0x04, signature),
    )
    encapsulated = _DATA if content is None else _DATA + der.tlv(0xA0, der.tlv(0x04, content))
    signed_data = der.tlv(
        0x30,
        b"\x02\x01\x01"
        + der.tlv(0x31, digest_id)
        + der.tlv(0x30, encapsulated)
        + der.tlv(0xA0, signer.public_bytes(Encoding.DER))
        + der.tlv(0x31, signer_info),
    )
    return der.tlv(0x30, _SIGNED_DATA + der.tlv(0xA0, signed_data))


def build_cert_rep(
    *,
    signer: x509.Certificate,
    key: rsa.RSAPrivateKey,
    transaction_id: str,
    recipient_nonce: bytes | None,
    status: PkiStatus,
    now: datetime,
    fail_info: FailInfo | None = None,
    envelope: bytes | None = None,
    digest_algorithm: str = "sha256",
) -> bytes:
    """A CertRep (RFC 8894 section 3.3.2) signed by the RA; ``envelope`` only on SUCCESS.

    It is signed with the request's digest if that is one of :data:`DIGESTS`, else SHA-256.
    """
    return sign_pki_message(
        signer=signer,
        key=key,
        message_type=MessageType.CERT_REP,
        transaction_id=transaction_id,
        now=now,
        # RFC 8894 section 3.3.2: FAILURE and PENDING replies carry signed content too, an
        # empty eContent of type data; OpenSSL refuses to verify a SignedData without one.
        content=b"" if envelope is None else envelope,
        recipient_nonce=recipient_nonce,
        status=status,
        fail_info=fail_info,
        digest_algorithm=digest_algorithm if digest_algorithm in DIGESTS else "sha256",
    )
