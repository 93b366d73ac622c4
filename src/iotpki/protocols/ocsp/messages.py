"""OCSP request decoding (RFC 6960 section 4.1, RFC 5019 section 5): pure functions over bytes."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from urllib.parse import unquote

from cryptography import x509
from cryptography.x509 import ocsp

from iotpki.core.revocation import CertId
from iotpki.errors import MalformedInput

__all__ = ["OcspRequest", "decode_get_path", "parse_request"]

_OID_NONCE = x509.ObjectIdentifier("1.3.6.1.5.5.7.48.1.2")
# RFC 5280 section 4.1.2.2: a serial number is positive and at most 20 octets.
_MAX_SERIAL = 1 << (8 * 20)


@dataclass(frozen=True, slots=True)
class OcspRequest:
    """What a request asks: the CertIDs and, if sent, the nonce to echo."""

    cert_ids: tuple[CertId, ...]
    nonce: bytes | None


def decode_get_path(encoded: str, limit: int) -> bytes:
    """The DER request of a GET: "the base64 encoding of the DER ... URL-encoded" (RFC 6960 A.1)."""
    if len(encoded) > limit:
        raise MalformedInput("the GET request is too long", limit=limit)
    text = unquote(encoded).replace("\n", "").replace("\r", "")
    # Some clients send the URL-safe alphabet or drop the padding.
    text = text.replace("-", "+").replace("_", "/").rstrip("=")
    text += "=" * (-len(text) % 4)
    try:
        der = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise MalformedInput("the GET request is not base64") from None
    if not der:
        raise MalformedInput("the GET request is empty")
    return der


def parse_request(der: bytes, *, max_certs: int, max_nonce: int) -> OcspRequest:
    """Parse a DER OCSPRequest; ``MalformedInput`` for anything that is not one within bounds.

    RFC 6960 section 4.1.1: TBSRequest ::= SEQUENCE { version, requestorName, requestList
    SEQUENCE OF Request, requestExtensions }. A request may list several certificates; more than
    ``max_certs`` is refused. RFC 8954 section 2.1: a nonce is 1 to 32 octets; a responder may
    refuse longer ones, as this one does past ``max_nonce``.
    """
    try:
        request = ocsp.load_der_ocsp_request(der)
    except NotImplementedError:  # cryptography declines requests for several certificates
        return _parse_multi(der, max_certs=max_certs, max_nonce=max_nonce)
    except ValueError as exc:
        raise MalformedInput(f"not an OCSP request: {exc}") from None
    try:
        cert_id = CertId(
            hash_algorithm=request.hash_algorithm.name,
            issuer_name_hash=request.issuer_name_hash,
            issuer_key_hash=request.issuer_key_hash,
            serial=request.serial_number,
        )
        nonce = _nonce(request.extensions)
    except (ValueError, x509.UnsupportedGeneralNameType) as exc:
        raise MalformedInput(f"bad OCSP request: {exc}") from None
    except Exception as exc:  # cryptography's UnsupportedAlgorithm for exotic CertID hashes
        raise MalformedInput(f"unsupported OCSP request: {exc}") from None
    return _checked(OcspRequest((cert_id,), nonce), max_certs, max_nonce)


def _nonce(extensions: x509.Extensions) -> bytes | None:
    try:
        return extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    except x509.ExtensionNotFound:
        return None


def _checked(request: OcspRequest, max_certs: int, max_nonce: int) -> OcspRequest:
    if not request.cert_ids:
        raise MalformedInput("the OCSP request names no certificate")
    if any(not 0 <= c.serial < _MAX_SERIAL for c in request.cert_ids):
        raise MalformedInput("a CertID serial number is negative or longer than 20 octets")
    if len(request.cert_ids) > max_certs:
        raise MalformedInput(
            f"the OCSP request names {len(request.cert_ids)} certificates, at most {max_certs}",
            limit=max_certs,
        )
    if request.nonce is not None and not 1 <= len(request.nonce) <= max_nonce:
        raise MalformedInput(f"the nonce must be 1 to {max_nonce} octets", limit=max_nonce)
    return request


_HASH_NAMES = {"sha1": "sha1", "sha256": "sha256", "sha384": "sha384", "sha512": "sha512"}


def _parse_multi(der: bytes, *, max_certs: int, max_nonce: int) -> OcspRequest:
    """Requests with several certificates, through asn1crypto (strict: no trailing data)."""
    from asn1crypto import ocsp as asn1_ocsp

    try:
        request = asn1_ocsp.OCSPRequest.load(der, strict=True)
        tbs = request["tbs_request"]
        items = tbs["request_list"]
        if len(items) > max_certs:
            raise MalformedInput(
                f"the OCSP request names {len(items)} certificates, at most {max_certs}",
                limit=max_certs,
            )
        cert_ids = []
        for item in items:
            req_cert = item["req_cert"]
            algorithm = req_cert["hash_algorithm"]["algorithm"].native
            cert_ids.append(
                CertId(
                    hash_algorithm=_HASH_NAMES.get(algorithm, algorithm),
                    issuer_name_hash=bytes(req_cert["issuer_name_hash"].native),
                    issuer_key_hash=bytes(req_cert["issuer_key_hash"].native),
                    serial=int(req_cert["serial_number"].native),
                )
            )
        nonce: bytes | None = None
        extensions = tbs["request_extensions"] or []
        oids = [extension["extn_id"].dotted for extension in extensions]
        if len(set(oids)) != len(oids):
            raise MalformedInput("the OCSP request repeats an extension")
        for extension in extensions:
            if extension["extn_id"].dotted == _OID_NONCE.dotted_string:
                nonce = bytes(extension["extn_value"].parsed.native)
    except MalformedInput:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
        raise MalformedInput(f"not an OCSP request: {exc}") from None
    return _checked(OcspRequest(tuple(cert_ids), nonce), max_certs, max_nonce)
