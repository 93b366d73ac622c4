"""CRL and OCSP response building: pure functions from revocation data to signed DER.

The DER is written here directly rather than through cryptography's builders: a CRL of a million
entries must be encoded in seconds (the builder needs ~15 s, most of it creating entry objects),
and an OCSP response may carry several single responses, which cryptography's builder cannot.
Everything produced here is checked in the tests by parsing and verifying it with cryptography
and OpenSSL. Nothing in this module does I/O; signing goes through the key object handed in, so
an HSM-backed key signs inside its token.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, mldsa, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from iotpki.core.der import oid as _oid
from iotpki.core.der import sequence as _seq
from iotpki.core.der import tlv as _tlv
from iotpki.core.models import RevocationReason

__all__ = [
    "OCSP_STATUS_MALFORMED",
    "OCSP_STATUS_SUCCESSFUL",
    "OCSP_STATUS_TRY_LATER",
    "OCSP_STATUS_UNAUTHORIZED",
    "CertId",
    "CrlEntry",
    "SingleStatus",
    "build_crl",
    "build_ocsp_response",
    "issuer_hashes",
    "ocsp_error",
]

# RFC 6960 section 4.2.1: OCSPResponseStatus.
OCSP_STATUS_SUCCESSFUL = 0
OCSP_STATUS_MALFORMED = 1
OCSP_STATUS_TRY_LATER = 3
OCSP_STATUS_UNAUTHORIZED = 6

CrlEntry = tuple[str, datetime, str | None, datetime | None]
"""One revoked certificate: (serial hex, revocation time, reason or None, invalidity date).

Naive times are taken as UTC."""

_OID_CRL_REASON = "2.5.29.21"
_OID_INVALIDITY_DATE = "2.5.29.24"
_OID_OCSP_BASIC = "1.3.6.1.5.5.7.48.1.1"
_OID_OCSP_NONCE = "1.3.6.1.5.5.7.48.1.2"

# RFC 5280 section 5.3.1: CRLReason ::= ENUMERATED.
_REASON_CODES = {
    RevocationReason.UNSPECIFIED: 0,
    RevocationReason.KEY_COMPROMISE: 1,
    RevocationReason.CA_COMPROMISE: 2,
    RevocationReason.AFFILIATION_CHANGED: 3,
    RevocationReason.SUPERSEDED: 4,
    RevocationReason.CESSATION_OF_OPERATION: 5,
    RevocationReason.CERTIFICATE_HOLD: 6,
    RevocationReason.PRIVILEGE_WITHDRAWN: 9,
    RevocationReason.AA_COMPROMISE: 10,
}


def _integer(value: int) -> bytes:
    return _tlv(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big", signed=True))


def _utc(value: datetime) -> datetime:
    """Aware times converted to UTC; naive ones are UTC already (as the store keeps them)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _generalized_time(value: datetime) -> bytes:
    return _tlv(0x18, _utc(value).strftime("%Y%m%d%H%M%SZ").encode())


def _time(value: datetime) -> bytes:
    """RFC 5280 section 5.1.2.4: UTCTime through 2049, GeneralizedTime from 2050."""
    value = _utc(value)
    if value.year < 2050:
        return _tlv(0x17, value.strftime("%y%m%d%H%M%SZ").encode())
    return _generalized_time(value)


def _extension(oid: str, value: bytes, critical: bool = False) -> bytes:
    """RFC 5280 section 4.1: Extension ::= SEQUENCE { extnID, critical, extnValue }."""
    flag = b"\x01\x01\xff" if critical else b""
    return _seq(_oid(oid), flag, _tlv(0x04, value))


def _extensions(extensions: Iterable[tuple[x509.ExtensionType, bool]]) -> bytes:
    return _seq(*(_extension(e.oid.dotted_string, e.public_bytes(), c) for e, c in extensions))


# -- signatures ------------------------------------------------------------------------------


def _signature_algorithm(key: CertificateIssuerPrivateKeyTypes) -> bytes:
    """The AlgorithmIdentifier this key signs with (RFC 5758, RFC 4055, RFC 8410, RFC 9881)."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return _seq(
            _oid("1.2.840.10045.4.3.3" if key.curve.key_size >= 384 else "1.2.840.10045.4.3.2")
        )
    if isinstance(key, rsa.RSAPrivateKey):
        return _seq(_oid("1.2.840.113549.1.1.11"), b"\x05\x00")
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return _seq(_oid("1.3.101.112"))
    if isinstance(key, ed448.Ed448PrivateKey):
        return _seq(_oid("1.3.101.113"))
    if isinstance(key, mldsa.MLDSA44PrivateKey):
        return _seq(_oid("2.16.840.1.101.3.4.3.17"))
    if isinstance(key, mldsa.MLDSA65PrivateKey):
        return _seq(_oid("2.16.840.1.101.3.4.3.18"))
    raise TypeError(f"cannot sign with a {type(key).__name__}")


def _sign(key: CertificateIssuerPrivateKeyTypes, data: bytes) -> bytes:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        digest = hashes.SHA384() if key.curve.key_size >= 384 else hashes.SHA256()
        return key.sign(data, ec.ECDSA(digest))
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    if isinstance(
        key,
        ed25519.Ed25519PrivateKey
        | ed448.Ed448PrivateKey
        | mldsa.MLDSA44PrivateKey
        | mldsa.MLDSA65PrivateKey,
    ):
        return key.sign(data)
    raise TypeError(f"cannot sign with a {type(key).__name__}")


def _signed(tbs: bytes, key: CertificateIssuerPrivateKeyTypes) -> bytes:
    """tbs, AlgorithmIdentifier, BIT STRING signature: the shape of certificates, CRLs and OCSP."""
    return _seq(tbs, _signature_algorithm(key), _tlv(0x03, b"\x00" + _sign(key, tbs)))


# -- CRLs (RFC 5280 section 5) ------------------------------------------------------------------


class _EntryEncoder:
    """Encodes revokedCertificates entries, caching the parts many entries share.

    A complete CRL may hold a million entries, so the common case (a serial of at most 126
    octets, no invalidity date) is written out inline rather than through ``_tlv``.
    """

    def __init__(self) -> None:
        self._times: dict[datetime, bytes] = {}
        # crlEntryExtensions per reason, with and without their SEQUENCE wrapper.
        self._reasons: dict[str | None, bytes] = {None: b"", "unspecified": b""}
        self._wrapped: dict[str | None, bytes] = {None: b"", "unspecified": b""}
        for reason, code in _REASON_CODES.items():
            if code:
                extension = _extension(_OID_CRL_REASON, bytes((0x0A, 0x01, code)))
                self._reasons[str(reason)] = extension
                self._wrapped[str(reason)] = _tlv(0x30, extension)

    def _time_of(self, value: datetime) -> bytes:
        """revocationDate; a naive (UTC) time before 2050 is written straight as UTCTime."""
        if len(self._times) > 100_000:
            self._times.clear()
        if value.tzinfo is None and value.year < 2050:
            encoded = b"\x17\x0d%02d%02d%02d%02d%02d%02dZ" % (
                value.year % 100,
                value.month,
                value.day,
                value.hour,
                value.minute,
                value.second,
            )
        else:
            encoded = _time(value)
        self._times[value] = encoded
        return encoded

    def encode(self, entry: CrlEntry) -> bytes:
        """RFC 5280 5.1.2.6: SEQUENCE { userCertificate, revocationDate, crlEntryExtensions }.

        The reason code is left out for ``unspecified`` (section 5.3.1: "SHOULD be absent").
        """
        serial, revoked_at, reason, invalidity = entry
        if len(serial) > 252:
            raise ValueError("a serial number longer than 126 octets")
        raw = bytes.fromhex(serial if len(serial) % 2 == 0 else "0" + serial) or b"\x00"
        if raw[0] & 0x80:
            raw = b"\x00" + raw
        revoked = self._times.get(revoked_at) or self._time_of(revoked_at)
        if invalidity is None:
            extensions = self._wrapped.get(reason, b"")
        else:
            extensions = _tlv(
                0x30,
                self._reasons.get(reason, b"")
                + _extension(_OID_INVALIDITY_DATE, _generalized_time(invalidity)),
            )
        size = 2 + len(raw) + len(revoked) + len(extensions)
        if size < 0x80:
            return bytes((0x30, size, 0x02, len(raw))) + raw + revoked + extensions
        return _tlv(0x30, bytes((0x02, len(raw))) + raw + revoked + extensions)


def build_crl(
    *,
    issuer: x509.Certificate,
    key: CertificateIssuerPrivateKeyTypes,
    entries: Iterable[CrlEntry],
    number: int,
    this_update: datetime,
    next_update: datetime,
    delta_base: int | None = None,
    freshest_url: str | None = None,
    partition_url: str | None = None,
) -> bytes:
    """A signed v2 CRL (or a delta CRL when ``delta_base`` is given) as DER.

    RFC 5280 section 5.1: TBSCertList ::= SEQUENCE { version v2, signature, issuer, thisUpdate,
    nextUpdate, revokedCertificates OPTIONAL, crlExtensions [0] EXPLICIT }. Extensions: the
    authority key identifier (5.2.1), the CRL number (5.2.3), for a delta CRL the critical delta
    CRL indicator naming its base (5.2.4), and for a complete CRL freshestCRL (5.2.6) pointing at
    the delta CRL. A partition's CRL (and its delta) carries the critical issuingDistributionPoint
    (5.2.5) naming ``partition_url``, the URL its certificates' distribution point names, with
    onlyContainsUserCerts.
    """
    encoder = _EntryEncoder()
    revoked = b"".join(map(encoder.encode, entries))
    extensions: list[tuple[x509.ExtensionType, bool]] = [
        (_authority_key_identifier(issuer), False),
        (x509.CRLNumber(number), False),
    ]
    if delta_base is not None:
        extensions.append((x509.DeltaCRLIndicator(delta_base), True))
    elif freshest_url is not None:
        point = x509.DistributionPoint(
            full_name=[x509.UniformResourceIdentifier(freshest_url)],
            relative_name=None,
            reasons=None,
            crl_issuer=None,
        )
        extensions.append((x509.FreshestCRL([point]), False))
    if partition_url is not None:
        idp = x509.IssuingDistributionPoint(
            full_name=[x509.UniformResourceIdentifier(partition_url)],
            relative_name=None,
            only_contains_user_certs=True,
            only_contains_ca_certs=False,
            only_some_reasons=None,
            indirect_crl=False,
            only_contains_attribute_certs=False,
        )
        extensions.append((idp, True))
    tbs = _seq(
        b"\x02\x01\x01",  # version v2
        _signature_algorithm(key),
        issuer.subject.public_bytes(),
        _time(this_update),
        _time(next_update),
        # "When there are no revoked certificates, the revoked certificates list MUST be absent."
        _tlv(0x30, revoked) if revoked else b"",
        _tlv(0xA0, _extensions(extensions)),
    )
    return _signed(tbs, key)


def _authority_key_identifier(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key())  # type: ignore[arg-type]
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


# -- OCSP (RFC 6960) --------------------------------------------------------------------------

_HASH_OIDS = {
    "sha1": "1.3.14.3.2.26",
    "sha256": "2.16.840.1.101.3.4.2.1",
    "sha384": "2.16.840.1.101.3.4.2.2",
    "sha512": "2.16.840.1.101.3.4.2.3",
}


@dataclass(frozen=True, slots=True)
class CertId:
    """RFC 6960 section 4.1.1: CertID, as the request sent it (the response echoes it)."""

    hash_algorithm: str  # "sha1", "sha256", "sha384" or "sha512"
    issuer_name_hash: bytes
    issuer_key_hash: bytes
    serial: int

    def encode(self) -> bytes:
        """CertID ::= SEQUENCE { hashAlgorithm, issuerNameHash, issuerKeyHash, serialNumber }."""
        return _seq(
            _seq(_oid(_HASH_OIDS[self.hash_algorithm]), b"\x05\x00"),
            _tlv(0x04, self.issuer_name_hash),
            _tlv(0x04, self.issuer_key_hash),
            _integer(self.serial),
        )


@dataclass(frozen=True, slots=True)
class SingleStatus:
    """The status of one certificate: ``good``, ``revoked`` or ``unknown``."""

    cert_id: CertId
    status: str
    this_update: datetime
    next_update: datetime
    revoked_at: datetime | None = None
    reason: RevocationReason | None = None

    def encode(self) -> bytes:
        """RFC 6960 section 4.2.1: SingleResponse; CertStatus good [0], revoked [1], unknown [2]."""
        if self.status == "good":
            status = b"\x80\x00"
        elif self.status == "revoked":
            assert self.revoked_at is not None
            info = _generalized_time(self.revoked_at)
            if self.reason is not None and self.reason is not RevocationReason.UNSPECIFIED:
                info += _tlv(0xA0, bytes((0x0A, 0x01, _REASON_CODES[self.reason])))
            status = _tlv(0xA1, info)
        elif self.status == "unknown":
            status = b"\x82\x00"
        else:
            raise ValueError(f"not an OCSP certificate status: {self.status!r}")
        return _seq(
            self.cert_id.encode(),
            status,
            _generalized_time(self.this_update),
            _tlv(0xA0, _generalized_time(self.next_update)),
        )


def issuer_hashes(issuer: x509.Certificate, algorithm: str) -> tuple[bytes, bytes]:
    """(issuerNameHash, issuerKeyHash) of a CA for one hash algorithm (RFC 6960 section 4.1.1).

    The key hash covers the value of the subjectPublicKey BIT STRING, without tag, length and
    unused-bits octet.
    """
    name_hash = hashlib.new(algorithm, issuer.subject.public_bytes()).digest()
    return name_hash, hashlib.new(algorithm, _subject_public_key_bits(issuer)).digest()


def _subject_public_key_bits(cert: x509.Certificate) -> bytes:
    from asn1crypto import keys

    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    bits: bytes = keys.PublicKeyInfo.load(spki)["public_key"].contents[1:]
    return bits


def build_ocsp_response(
    *,
    responder: x509.Certificate,
    key: CertificateIssuerPrivateKeyTypes,
    statuses: list[SingleStatus],
    produced_at: datetime,
    nonce: bytes | None = None,
) -> bytes:
    """A successful OCSPResponse carrying a signed BasicOCSPResponse, as DER.

    RFC 6960 section 4.2.1: ResponseData ::= SEQUENCE { responderID, producedAt, responses,
    responseExtensions [1] }; the responder is named by key hash (SHA-1 of its public key bits),
    and its delegated certificate travels in ``certs`` (section 4.2.2.2). A request's nonce is
    echoed as a response extension (RFC 8954 section 2.1).
    """
    key_hash = hashlib.sha1(_subject_public_key_bits(responder)).digest()
    extensions = b""
    if nonce is not None:
        value = x509.OCSPNonce(nonce).public_bytes()
        extensions = _tlv(0xA1, _seq(_extension(_OID_OCSP_NONCE, value)))
    data = _seq(
        _tlv(0xA2, _tlv(0x04, key_hash)),  # responderID byKey [2] EXPLICIT KeyHash
        _generalized_time(produced_at),
        _seq(*(status.encode() for status in statuses)),
        extensions,
    )
    certs = _tlv(0xA0, _seq(responder.public_bytes(serialization.Encoding.DER)))
    basic = _seq(_strip_seq(_signed(data, key)), certs)
    response_bytes = _seq(_oid(_OID_OCSP_BASIC), _tlv(0x04, basic))
    return _seq(b"\x0a\x01\x00", _tlv(0xA0, response_bytes))


def _strip_seq(der: bytes) -> bytes:
    """The contents of a DER SEQUENCE (its tag and length removed)."""
    first = der[1]
    offset = 2 if first < 0x80 else 2 + (first & 0x7F)
    return der[offset:]


def ocsp_error(status: int) -> bytes:
    """An unsuccessful OCSPResponse: the status alone, no responseBytes (RFC 6960 4.2.1)."""
    return _seq(_tlv(0x0A, bytes((status,))))
