"""EST (RFC 7030) message codecs, sans I/O: certs-only CMS, base64 bodies, CSR attributes,
and the multipart response of server-side key generation.

Shared by the EST server routes and the device agent.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Iterable, Sequence

from asn1crypto import core, parser
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from iotpki.core.csr import decode_csr
from iotpki.core.der import oid as _oid
from iotpki.core.der import tlv as _tlv
from iotpki.errors import MalformedInput, RequestError

__all__ = [
    "CERTS_ONLY",
    "CSRATTRS",
    "PKCS8",
    "PKCS10",
    "UnsupportedMediaType",
    "b64_body",
    "certs_only",
    "csr_attributes",
    "decode_b64",
    "encode_serverkeygen",
    "parse_certs_only",
    "parse_csr",
    "parse_csr_attributes",
    "parse_multipart",
]

# RFC 7030 section 4.1.3 / 4.2.3: certs-only CMS; section 4.2.1: PKCS#10; section 4.5.2.
CERTS_ONLY = "application/pkcs7-mime; smime-type=certs-only"
PKCS10 = "application/pkcs10"
PKCS8 = "application/pkcs8"
CSRATTRS = "application/csrattrs"

_DER = serialization.Encoding.DER
_B64_ALPHABET = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")

# OIDs a CSR attributes response names (RFC 7030 section 4.5.2, its example).
_OID_EC_PUBLIC_KEY = "1.2.840.10045.2.1"
_OID_RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
_OID_ED25519 = "1.3.101.112"
_OID_CURVES = {"p256": "1.2.840.10045.3.1.7", "p384": "1.3.132.0.34"}
_OID_ECDSA_SHA256 = "1.2.840.10045.4.3.2"
_OID_ECDSA_SHA384 = "1.2.840.10045.4.3.3"
_OID_SHA256_RSA = "1.2.840.113549.1.1.11"
# id-ml-dsa-44/65/87 (RFC 9881, NIST CSOR sigAlgs): one OID names both the key and signature.
_OID_ML_DSA = {
    "mldsa44": "2.16.840.1.101.3.4.3.17",
    "mldsa65": "2.16.840.1.101.3.4.3.18",
    "mldsa87": "2.16.840.1.101.3.4.3.19",
}


_KIND_OF_OID = {
    _OID_RSA_ENCRYPTION: ["rsa"],
    _OID_ED25519: ["ed25519"],
    **{oid: [kind] for kind, oid in _OID_ML_DSA.items()},
}


class UnsupportedMediaType(RequestError):
    """The request's Content-Type is not the one the operation takes."""

    status = 415
    code = "unsupported_media_type"


def certs_only(certificates: Sequence[x509.Certificate]) -> bytes:
    """A degenerate certs-only CMS SignedData (RFC 7030 section 4.1.3), DER."""
    return pkcs7.serialize_certificates(list(certificates), _DER)


def parse_certs_only(der: bytes) -> list[x509.Certificate]:
    """The certificates of a certs-only CMS SignedData."""
    try:
        return pkcs7.load_der_pkcs7_certificates(der)
    except ValueError as exc:
        raise MalformedInput(f"not a certs-only CMS message: {exc}") from exc


def b64_body(der: bytes) -> bytes:
    """The base64 transfer encoding EST uses for every body (RFC 8951), 64-column lines.

    Lines end in LF, not CRLF: GNU ``base64 -d`` (how curl users decode) rejects CR.
    """
    text = base64.b64encode(der)
    return b"".join(text[i : i + 64] + b"\n" for i in range(0, len(text), 64))


def decode_b64(body: bytes) -> bytes:
    """Decode a base64 body, ignoring white space; anything else is malformed."""
    compact = b"".join(body.split())
    if not compact or not set(compact) <= _B64_ALPHABET:
        raise MalformedInput("the body is not base64")
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MalformedInput(f"the body is not valid base64: {exc}") from exc


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def parse_csr(body: bytes, content_type: str | None) -> x509.CertificateSigningRequest:
    """RFC 7030 section 4.2.1: a base64 PKCS#10 request with Content-Type application/pkcs10,
    read completely and its signature verified (:func:`iotpki.core.csr.decode_csr`)."""
    if _media_type(content_type) != PKCS10:
        raise UnsupportedMediaType(f"expected Content-Type: {PKCS10}")
    return decode_csr(decode_b64(body))


def csr_attributes(key_types: Iterable[str]) -> bytes:
    """RFC 7030 section 4.5.2 CsrAttrs (DER) naming the key algorithms a profile accepts.

    ``CsrAttrs ::= SEQUENCE SIZE (0..MAX) OF AttrOrOID``; an EC key is named as the attribute
    ``id-ecPublicKey`` whose values are the allowed curves, as in the RFC's example; an
    ML-DSA parameter set by its ``id-ml-dsa-*`` OID (RFC 9881), key and signature alike.
    """
    items: list[bytes] = []
    kinds = list(key_types)
    curves = [_OID_CURVES[k] for k in kinds if k in _OID_CURVES]
    if curves:
        values = _tlv(0x31, b"".join(_oid(c) for c in curves))
        items.append(_tlv(0x30, _oid(_OID_EC_PUBLIC_KEY) + values))
        items.append(
            _oid(_OID_ECDSA_SHA384 if curves[0] == _OID_CURVES["p384"] else _OID_ECDSA_SHA256)
        )
    if "rsa" in kinds:
        items += [_oid(_OID_RSA_ENCRYPTION), _oid(_OID_SHA256_RSA)]
    if "ed25519" in kinds:
        items.append(_oid(_OID_ED25519))
    items += [_oid(oid) for kind, oid in _OID_ML_DSA.items() if kind in kinds]
    return _tlv(0x30, b"".join(items))


def _elements(content: bytes) -> list[tuple[int, bytes, bytes]]:
    """The (tag, contents, whole element) of each DER element in ``content``."""
    found = []
    offset = 0
    while offset < len(content):
        _, _, tag, header, inner, _ = parser.parse(content[offset:])
        whole = content[offset : offset + len(header) + len(inner)]
        found.append((tag, inner, whole))
        offset += len(whole)
    return found


def parse_csr_attributes(der: bytes) -> list[str]:
    """The key types (``p256``, ``rsa``, ``mldsa44``, ...) a CsrAttrs names, in its order;
    other attributes are passed over. MalformedInput if it is not a CsrAttrs."""
    try:
        _, _, tag, _, content, _ = parser.parse(der, strict=True)
        if tag != 16:
            raise ValueError("not a SEQUENCE")
        kinds: list[str] = []
        for item_tag, inner, whole in _elements(content):
            if item_tag == 6:  # an OID
                kinds += _KIND_OF_OID.get(core.ObjectIdentifier.load(whole).dotted, [])
            elif item_tag == 16:  # an Attribute: type and a SET of values
                parts = _elements(inner)
                kind = core.ObjectIdentifier.load(parts[0][2]).dotted
                if kind == _OID_EC_PUBLIC_KEY and len(parts) > 1:
                    for _, _, value in _elements(parts[1][1]):
                        curve = core.ObjectIdentifier.load(value).dotted
                        kinds += [k for k, o in _OID_CURVES.items() if o == curve]
    except (ValueError, TypeError, IndexError) as exc:
        raise MalformedInput(f"not a CsrAttrs: {exc}") from exc
    return list(dict.fromkeys(kinds))


def encode_serverkeygen(private_key_der: bytes, certificate: x509.Certificate) -> tuple[str, bytes]:
    """RFC 7030 section 4.4.2: multipart/mixed with the PKCS#8 key, then the certificate.

    Returns the Content-Type (with its boundary) and the body.
    """
    boundary = f"est-{secrets.token_hex(12)}"
    parts = [
        (f"Content-Type: {PKCS8}", b64_body(private_key_der)),
        (f"Content-Type: {CERTS_ONLY}", b64_body(certs_only([certificate]))),
    ]
    body = b""
    for header, payload in parts:
        body += (
            f"--{boundary}\r\n{header}\r\nContent-Transfer-Encoding: base64\r\n\r\n".encode()
            + payload
        )
    body += f"--{boundary}--\r\n".encode()
    return f"multipart/mixed; boundary={boundary}", body


def parse_multipart(content_type: str, body: bytes) -> list[tuple[str, bytes]]:
    """The (media type, decoded payload) of each part of a multipart/mixed EST response."""
    if _media_type(content_type) != "multipart/mixed":
        raise MalformedInput("expected a multipart/mixed response")
    params = dict(p.strip().split("=", 1) for p in content_type.split(";")[1:] if "=" in p)
    boundary = params.get("boundary", "").strip('"')
    if not boundary:
        raise MalformedInput("multipart response without a boundary")
    parts: list[tuple[str, bytes]] = []
    for chunk in body.split(f"--{boundary}".encode())[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, payload = chunk.lstrip(b"\r\n").partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        parts.append((_media_type(headers.get("content-type")), decode_b64(payload)))
    return parts
