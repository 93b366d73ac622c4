"""The one guarded decode of a PKCS#10 request (RFC 2986), used at every CSR entry.

pyca/cryptography parses lazily: ``load_der_x509_csr`` checks the outer structure, and a field
read later (the key, an extension, a name's value) raises ``ValueError`` at first use. Here
every field the server will ever read is read once, inside one guarded block, so that a
request that gets past :func:`decode_csr` can be read anywhere without raising.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar, cast

from asn1crypto import csr as asn1_csr
from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import AttributeOID

from iotpki.core.encoding import parse_error_reason
from iotpki.core.x509util import signature_valid
from iotpki.errors import BadCSR, BadSignature

__all__ = [
    "MAX_RSA_BITS",
    "KeyRequest",
    "ProvenRequest",
    "check_request_key",
    "decode_csr",
    "load_csr",
    "read_template",
    "signature_verified",
]

MAX_RSA_BITS = 16384
"""The largest RSA modulus read at all: verifying a bigger one costs the server, not the sender."""

# NIST SP 800-56B rev. 2 section 6.2.1: an RSA public exponent is odd and below 2**256.
_MAX_RSA_EXPONENT = 1 << 256
# RFC 2985 section 5.4.1: challengePassword is a DirectoryString of at most 255 characters
# (PrintableString, UTF8String, TeletexString; IA5String from older clients).
_PASSWORD_TAGS = frozenset({12, 19, 20, 22})
_PASSWORD_MAX = 255
# Anything the parser can raise on hostile input: the guarded block turns each into BadCSR.
_PARSE_ERRORS = (
    ValueError,
    TypeError,
    UnsupportedAlgorithm,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)

_T = TypeVar("_T")
_VERIFIED_MAX = 4096  # digests of recently verified CSRs: the requests in flight, with room
_LOCATION = re.compile(r"location: \[([^\]]*)\]")


class KeyRequest(Protocol):
    """What the authority reads of a certificate request: a PKCS#10 CSR, or a
    :class:`ProvenRequest` of a protocol with its own request format (CRMF)."""

    @property
    def subject(self) -> x509.Name:
        """The requested subject."""
        ...

    @property
    def extensions(self) -> x509.Extensions:
        """The requested extensions."""
        ...

    def public_key(self) -> CertificatePublicKeyTypes:
        """The key to certify."""
        ...

    @property
    def is_signature_valid(self) -> bool:
        """Whether the requester proved possession of the key's private half."""
        ...


@dataclass(frozen=True, slots=True)
class ProvenRequest:
    """A request that is not PKCS#10 (a CRMF CertRequest, RFC 4211): subject, extensions and
    key as the adapter read them through, and the signature by that key over ``signed`` that
    proves possession (POPOSigningKey, RFC 4211 section 4.1); verified here, not by the adapter."""

    subject: x509.Name
    extensions: x509.Extensions
    key: CertificatePublicKeyTypes
    signed: bytes
    signature: bytes
    algorithm: str  # dotted OID of the signature algorithm

    def public_key(self) -> CertificatePublicKeyTypes:
        """The key to certify."""
        return self.key

    @property
    def is_signature_valid(self) -> bool:
        """Whether the proof-of-possession signature verifies with the requested key."""
        return signature_valid(self.key, self.algorithm, self.signature, self.signed)


def decode_csr(der: bytes) -> x509.CertificateSigningRequest:
    """A DER CSR, read completely and its signature verified; BadCSR or BadSignature otherwise."""
    return _complete(x509.load_der_x509_csr, der)


def load_csr(data: bytes) -> x509.CertificateSigningRequest:
    """A PEM or DER CSR (operator input: files, the admin API), read as :func:`decode_csr`."""
    if data.lstrip().startswith(b"-----BEGIN"):
        return _complete(x509.load_pem_x509_csr, data)
    return decode_csr(data)


class _VerifiedDigests:
    """A bounded memo of the SHA-256 of CSRs (DER) whose signature verified.

    A signature's validity is a function of the DER alone, so a CSR whose bytes were verified
    once needs no second verification; a CSR that failed is never remembered.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._digests: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()

    def verify(self, csr: x509.CertificateSigningRequest) -> bool:
        """Whether ``csr``'s signature verifies, verifying it only when not seen before."""
        digest = hashlib.sha256(csr.public_bytes(serialization.Encoding.DER)).digest()
        with self._lock:
            if digest in self._digests:
                self._digests.move_to_end(digest)
                return True
        if not csr.is_signature_valid:
            return False
        with self._lock:
            self._digests[digest] = None
            while len(self._digests) > self._size:
                self._digests.popitem(last=False)
        return True


_verified = _VerifiedDigests(_VERIFIED_MAX)


def signature_verified(request: KeyRequest) -> bool:
    """Whether the request's signature verifies; a CSR :func:`decode_csr` accepted is not
    re-verified.

    The authority calls this as the signer's last guard: adapters hand it the CSR they decoded,
    so each request's signature is verified once, and a CSR built or loaded elsewhere still is.
    """
    if isinstance(request, ProvenRequest):
        return request.is_signature_valid
    return _verified.verify(cast(x509.CertificateSigningRequest, request))


def _complete(
    load: Callable[[bytes], x509.CertificateSigningRequest], data: bytes
) -> x509.CertificateSigningRequest:
    try:
        csr = load(data)
    except (*_PARSE_ERRORS, x509.InvalidVersion) as exc:
        raise BadCSR(
            "not a valid certificate signing request (PEM or DER): "
            + parse_error_reason(data, exc),
            reason="encoding",
        ) from exc
    _read_through(csr)
    return csr


def read_template(
    subject: bytes, public_key: bytes, extensions: bytes | None
) -> tuple[x509.Name, x509.Extensions, CertificatePublicKeyTypes]:
    """The subject, extensions and key of a request that is not PKCS#10, from the DER of its
    Name, SubjectPublicKeyInfo and Extensions, read through the same guards as a CSR's.

    They are framed as an unsigned CSR (asn1crypto) for cryptography to parse; the proof of
    possession is the caller's (:class:`ProvenRequest`). BadCSR if any of them does not parse.
    """
    try:
        attributes = []
        if extensions is not None:
            values = [asn1_x509.Extensions.load(extensions, strict=True)]
            attributes.append({"type": "extension_request", "values": values})
        info = {
            "version": "v1",
            "subject": asn1_x509.Name.load(subject, strict=True),
            "subject_pk_info": asn1_keys.PublicKeyInfo.load(public_key, strict=True),
            "attributes": attributes,
        }
        framed = asn1_csr.CertificationRequest(
            {
                "certification_request_info": info,
                "signature_algorithm": {"algorithm": "sha256_ecdsa"},
                "signature": b"",
            }
        ).dump()
        csr = x509.load_der_x509_csr(framed)
    except (*_PARSE_ERRORS, x509.InvalidVersion) as exc:
        raise BadCSR(f"the certificate template does not parse: {exc}", reason="encoding") from exc
    _read_fields(csr)
    return csr.subject, csr.extensions, csr.public_key()


def _read_through(csr: x509.CertificateSigningRequest) -> None:
    """Read every field of a loaded CSR the server uses; BadCSR or BadSignature on failure."""
    _read_fields(csr)
    _guarded("signature_algorithm", lambda: _check_signature_algorithm(csr))
    valid = _guarded("signature", lambda: signature_verified(csr))
    if not valid:
        raise BadSignature("the CSR's signature does not verify", reason="signature")


def _read_fields(csr: x509.CertificateSigningRequest) -> None:
    """Read the subject, key, attributes and extensions of a loaded CSR through the guards."""
    _guarded("subject", lambda: _check_name(csr.subject))
    _guarded("public_key", lambda: _check_public_key(csr))
    _guarded("attributes", lambda: _check_attributes(csr))
    _guarded("extensions", lambda: _check_extensions(csr))


def _guarded(field: str, read: Callable[[], _T]) -> _T:
    try:
        return read()
    except BadCSR:
        raise
    except _PARSE_ERRORS as exc:
        what = field.replace("_", " ")
        detail = str(exc)
        if "ParseError" in detail:  # the DER parser's own words: say them plainly
            where = _LOCATION.search(detail)
            detail = parse_error_reason(b"-", exc)
            if where:
                field_name = where.group(1).split(",")[0].strip(' "')
                detail += f", in {field_name}"
        raise BadCSR(f"the CSR does not parse ({what}): {detail}", reason=field) from exc


def _check_name(name: x509.Name) -> None:
    """Every RDN holds exactly one attribute whose value decodes."""
    for rdn in name.rdns:
        attributes = list(rdn)
        if len(attributes) != 1:
            # RFC 5280 allows multi-valued RDNs; no device identity needs one, and their
            # ordering makes the same name compare differently across implementations.
            raise BadCSR("multi-valued RDNs are not accepted", reason="subject")
        attribute = attributes[0]
        _ = attribute.oid.dotted_string, attribute.value
    name.rfc4514_string()


def _check_public_key(csr: x509.CertificateSigningRequest) -> None:
    check_request_key(csr.public_key())


def check_request_key(key: CertificatePublicKeyTypes) -> None:
    """The bounds of a requested key that loaded (cryptography checks RSA ranges and EC
    points): an RSA modulus and exponent a signer may verify against."""
    if isinstance(key, rsa.RSAPublicKey):
        numbers = key.public_numbers()
        if numbers.n.bit_length() > MAX_RSA_BITS:
            raise BadCSR(f"RSA modulus above {MAX_RSA_BITS} bits", reason="public_key")
        if numbers.e >= _MAX_RSA_EXPONENT:
            raise BadCSR("RSA public exponent of 2**256 or more", reason="public_key")


def _check_signature_algorithm(csr: x509.CertificateSigningRequest) -> None:
    _ = csr.signature_algorithm_oid.dotted_string
    _ = csr.signature_hash_algorithm
    _ = csr.signature_algorithm_parameters


def _check_attributes(csr: x509.CertificateSigningRequest) -> None:
    """Single-valued attributes, each at most once; a challengePassword that is text."""
    attributes = list(csr.attributes)
    repeated = [oid for oid, n in Counter(a.oid for a in attributes).items() if n > 1]
    if repeated:
        raise BadCSR(
            f"the CSR repeats the attribute {repeated[0].dotted_string}", reason="attributes"
        )
    for attribute in attributes:
        if attribute.oid == AttributeOID.CHALLENGE_PASSWORD:
            _check_password(attribute)


def _check_password(attribute: x509.Attribute) -> None:
    value = attribute.value
    if attribute._type not in _PASSWORD_TAGS:  # the ASN.1 string tag
        raise BadCSR("the challengePassword is not a text string", reason="challenge_password")
    try:
        text = value.decode()
    except UnicodeDecodeError as exc:
        raise BadCSR("the challengePassword is not UTF-8", reason="challenge_password") from exc
    if len(text) > _PASSWORD_MAX:
        raise BadCSR("the challengePassword is too long", reason="challenge_password")


def _check_extensions(csr: x509.CertificateSigningRequest) -> None:
    """Each extension value parses (duplicates refused); names in a SAN are read through."""
    for extension in csr.extensions:
        value = extension.value
        if isinstance(value, x509.SubjectAlternativeName):
            for general_name in value:
                if isinstance(general_name, x509.DirectoryName):
                    _check_name(general_name.value)
                else:
                    _ = general_name.value
