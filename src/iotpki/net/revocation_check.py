"""Checking a peer's revocation status: published CRLs (files or URLs) and OCSP.

Relying parties use this, not the server: :mod:`iotpki.net.tls` hands the CRLs to OpenSSL and asks
OCSP after the handshake; the signed-message verifier asks both for a message's signer. A CRL is
believed only when its issuer's signature verifies and it is current (RFC 5280 section 6.3.3);
it is fetched or re-read again once its nextUpdate has passed, or sooner when its file changes.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPublicKeyTypes
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

from iotpki.core.ports import Clock, SystemClock
from iotpki.errors import PeerRefused

__all__ = [
    "CrlCache",
    "Fetch",
    "OcspChecker",
    "RevocationChecker",
    "Status",
    "distribution_point",
    "http_fetch",
    "issuer_of",
]

log = logging.getLogger(__name__)

Fetch = Callable[[str, bytes | None], bytes]
"""Fetch a URL: GET when the body is None, else POST it as an OCSP request; returns the body."""

Status = Literal["good", "revoked", "unknown"]

_MAX_BODY = 64 * 1024 * 1024
_MAX_OCSP = 64 * 1024
_SKEW = timedelta(minutes=5)


def http_fetch(url: str, body: bytes | None = None, timeout: float = 10.0) -> bytes:
    """GET a CRL or POST an OCSP request (RFC 6960 appendix A.1) over HTTP, bounded in size."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not an http(s) URL: {url}")
    request = urllib.request.Request(url, data=body)
    if body is not None:
        request.add_header("Content-Type", "application/ocsp-request")
    limit = _MAX_BODY if body is None else _MAX_OCSP
    with urllib.request.urlopen(request, timeout=timeout) as response:
        data: bytes = response.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"response from {url} is larger than {limit} bytes")
    return data


def _load_crl(data: bytes) -> x509.CertificateRevocationList:
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_crl(data)
    return x509.load_der_x509_crl(data)


def _is_delta(crl: x509.CertificateRevocationList) -> bool:
    try:
        crl.extensions.get_extension_for_oid(ExtensionOID.DELTA_CRL_INDICATOR)
    except x509.ExtensionNotFound:
        return False
    return True


def _issuer_key(issuer: x509.Certificate) -> bytes:
    """Issuers are told apart by name and key: a rolled-over root keeps its name."""
    spki = issuer.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return issuer.subject.public_bytes() + spki


def _crl_number(crl: x509.CertificateRevocationList) -> int:
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return -1


def _verify_signature(
    key: CertificateIssuerPublicKeyTypes,
    signature: bytes,
    data: bytes,
    algorithm: hashes.HashAlgorithm | None,
) -> None:
    """Raise ``InvalidSignature`` unless ``signature`` over ``data`` verifies with ``key``."""
    if isinstance(key, ec.EllipticCurvePublicKey) and algorithm is not None:
        key.verify(signature, data, ec.ECDSA(algorithm))
    elif isinstance(key, rsa.RSAPublicKey) and algorithm is not None:
        key.verify(signature, data, padding.PKCS1v15(), algorithm)
    elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        key.verify(signature, data)
    else:
        raise InvalidSignature("unsupported key type")


def issuer_of(
    cert: x509.Certificate, candidates: Sequence[x509.Certificate]
) -> x509.Certificate | None:
    """The candidate that signed ``cert`` (name and signature both match), if any."""
    for candidate in candidates:
        if candidate.subject != cert.issuer:
            continue
        try:
            cert.verify_directly_issued_by(candidate)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return candidate
    return None


@dataclass(frozen=True, slots=True)
class _Held:
    crl: x509.CertificateRevocationList
    source: str
    stamp: tuple[int, int] | None  # (mtime_ns, size) of a file source
    revoked: frozenset[int]  # the serials listed, for constant-time lookups


def _scope(crl: x509.CertificateRevocationList) -> str | None:
    """The URL a partitioned CRL's issuingDistributionPoint names (None: the issuer's whole CRL)."""
    try:
        idp = crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint).value
    except x509.ExtensionNotFound:
        return None
    for name in idp.full_name or ():
        if isinstance(name, x509.UniformResourceIdentifier):
            return name.value
    return ""  # a scope this cache cannot match to a certificate


def distribution_point(cert: x509.Certificate) -> str | None:
    """The first http(s) URL of a certificate's CRL distribution points."""
    try:
        points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return None
    for point in points:
        for name in point.full_name or ():
            if isinstance(name, x509.UniformResourceIdentifier) and name.value.startswith(
                ("http://", "https://")
            ):
                return name.value
    return None


class CrlCache:
    """The current complete CRL of each issuer and partition, from files, directories and URLs.

    Delta CRLs are skipped (OpenSSL's ``VERIFY_CRL_CHECK_LEAF`` would not use them); a CRL
    whose signature does not verify with one of ``issuers`` is ignored and logged. A partition's
    CRL (RFC 5280 section 5.2.5) is held beside its issuer's whole CRL, keyed by the URL its
    issuingDistributionPoint names; with ``follow_distribution_points`` the cache fetches the
    partition a certificate's distribution point names when it first meets that certificate,
    and again at its nextUpdate, and nothing else.
    """

    def __init__(
        self,
        *,
        issuers: Callable[[], Sequence[x509.Certificate]],
        files: Sequence[Path] = (),
        directories: Sequence[Path] = (),
        urls: Sequence[str] = (),
        fetch: Fetch = http_fetch,
        clock: Clock | None = None,
        poll_seconds: float = 2.0,
        url_max_age: timedelta = timedelta(minutes=5),
        follow_distribution_points: bool = False,
    ) -> None:
        self._issuers = issuers
        self._files = tuple(files)
        self._directories = tuple(directories)
        self._urls = tuple(urls)
        self._fetch = fetch
        self._clock = clock or SystemClock()
        self._poll = poll_seconds
        self._url_max_age = url_max_age
        self._follow = follow_distribution_points
        self._followed: list[str] = []  # partition URLs named by certificates met so far
        self._lock = threading.Lock()
        self._held: dict[tuple[bytes, str | None], _Held] = {}  # (issuer, scope) -> current CRL
        self._url_due: dict[str, datetime] = {}
        self._ignored: dict[str, tuple[int, int] | None] = {}  # logged once per version
        self._polled = float("-inf")
        self.version = 0  # bumped whenever the set of current CRLs changes

    def crls(self) -> list[x509.CertificateRevocationList]:
        """The current CRL of each issuer (after a refresh when one is due)."""
        self.refresh()
        with self._lock:
            return [held.crl for held in self._held.values()]

    def pem(self) -> str:
        """The current CRLs as concatenated PEM (for ``SSLContext.load_verify_locations``)."""
        return "".join(crl.public_bytes(serialization.Encoding.PEM).decode() for crl in self.crls())

    def next_update(self) -> datetime | None:
        """The earliest nextUpdate of the CRLs held: when a refresh is due at the latest."""
        with self._lock:
            times = [h.crl.next_update_utc for h in self._held.values() if h.crl.next_update_utc]
        return min(times) if times else None

    def refresh(self, *, force: bool = False) -> bool:
        """Re-read changed files and fetch URLs that are due; whether any CRL changed."""
        now_mono = time.monotonic()
        now = self._clock.now()
        expired = (nu := self.next_update()) is not None and now >= nu
        if not force and not expired and now_mono - self._polled < self._poll:
            return False
        self._polled = now_mono
        changed = False
        for path in self._paths():
            changed |= self._read_file(path, force)
        for url in (*self._urls, *self._followed):
            if force or expired or now >= self._url_due.get(url, now):
                changed |= self._read_url(url, now)
        if changed:
            self.version += 1
        return changed

    def _paths(self) -> list[Path]:
        paths = list(self._files)
        for directory in self._directories:
            if directory.is_dir():
                paths.extend(sorted(p for p in directory.iterdir() if p.suffix in (".crl", ".pem")))
        return paths

    def _read_file(self, path: Path, force: bool) -> bool:
        try:
            st = path.stat()
        except OSError:
            return False
        stamp = (st.st_mtime_ns, st.st_size)
        with self._lock:
            if not force and any(
                h.source == str(path) and h.stamp == stamp for h in self._held.values()
            ):
                return False
        try:
            data = path.read_bytes()
        except OSError as exc:
            log.warning("cannot read CRL %s: %s", path, exc)
            return False
        return self._offer(data, str(path), stamp)

    def _read_url(self, url: str, now: datetime) -> bool:
        self._url_due[url] = now + self._url_max_age
        try:
            data = self._fetch(url, None)
        except (OSError, ValueError) as exc:
            log.warning("cannot fetch CRL %s: %s", url, exc)
            return False
        return self._offer(data, url, None)

    def _offer(self, data: bytes, source: str, stamp: tuple[int, int] | None) -> bool:
        """Keep ``data`` if it is a verified complete CRL newer than the one held."""
        try:
            crl = _load_crl(data)
        except ValueError as exc:
            log.warning("CRL from %s does not parse: %s", source, exc)
            return False
        if _is_delta(crl):
            return False
        issuer = next(
            (
                c
                for c in self._issuers()
                if c.subject == crl.issuer and crl.is_signature_valid(c.public_key())  # type: ignore[arg-type]
            ),
            None,
        )
        if issuer is None:
            level = logging.DEBUG if self._ignored.get(source) == stamp else logging.WARNING
            log.log(level, "CRL from %s is not signed by a trusted CA: ignored", source)
            self._ignored[source] = stamp
            return False
        if crl.next_update_utc is not None and source in self._url_due:
            self._url_due[source] = min(self._url_due[source], crl.next_update_utc)
        key = (_issuer_key(issuer), _scope(crl))
        with self._lock:
            held = self._held.get(key)
            if held is not None and _crl_number(held.crl) > _crl_number(crl):
                return False
            if held is not None and held.crl.fingerprint(hashes.SHA256()) == crl.fingerprint(
                hashes.SHA256()
            ):
                self._held[key] = _Held(crl, source, stamp, held.revoked)
                return False
        revoked = frozenset(entry.serial_number for entry in crl)
        with self._lock:
            self._held[key] = _Held(crl, source, stamp, revoked)
        return True

    def status(self, cert: x509.Certificate, issuer: x509.Certificate) -> Status:
        """``cert``'s status by its issuer's current CRL; refuses when there is none."""
        self.refresh()
        issuer_key = _issuer_key(issuer)
        point = distribution_point(cert)
        if self._follow and point is not None and point not in self._followed:
            with self._lock:
                unknown = (issuer_key, point) not in self._held
            if unknown:
                self._followed.append(point)
                if self._read_url(point, self._clock.now()):
                    self.version += 1
        with self._lock:
            held = self._held.get((issuer_key, point)) or self._held.get((issuer_key, None))
        if held is None:
            raise PeerRefused(
                f"no CRL of {issuer.subject.rfc4514_string()} to check against",
                reason="crl_unavailable",
            )
        now = self._clock.now()
        next_update = held.crl.next_update_utc
        if next_update is not None and now >= next_update:
            raise PeerRefused(
                f"the CRL of {issuer.subject.rfc4514_string()} expired at {next_update}",
                reason="crl_expired",
            )
        return "revoked" if cert.serial_number in held.revoked else "good"


class OcspChecker:
    """Asks the responder named in a certificate's AIA (RFC 6960), caching until nextUpdate."""

    def __init__(
        self, *, fetch: Fetch = http_fetch, clock: Clock | None = None, max_cache: int = 10_000
    ) -> None:
        self._fetch = fetch
        self._clock = clock or SystemClock()
        self._max = max_cache
        self._cache: dict[tuple[int, bytes], tuple[Status, datetime]] = {}
        self._lock = threading.Lock()

    def status(self, cert: x509.Certificate, issuer: x509.Certificate) -> Status | None:
        """The responder's answer, or None when no usable answer was had (then use the CRL)."""
        now = self._clock.now()
        key = (cert.serial_number, issuer.subject.public_bytes())
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None and now < cached[1]:
            return cached[0]
        url = _ocsp_url(cert)
        if url is None:
            return None
        request = (
            ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1()).build()
        )  # RFC 5019 section 2.1.1: SHA-1 CertID for interoperability
        try:
            raw = self._fetch(url, request.public_bytes(serialization.Encoding.DER))
            answer = self.check_response(raw, cert, issuer, now)
        except (OSError, ValueError) as exc:
            log.warning("OCSP for %x at %s gave no usable answer: %s", cert.serial_number, url, exc)
            return None
        status, until = answer
        with self._lock:
            if len(self._cache) >= self._max:
                self._cache.clear()
            self._cache[key] = answer
        log.debug("OCSP %x: %s until %s", cert.serial_number, status, until)
        return status

    def check_response(
        self, raw: bytes, cert: x509.Certificate, issuer: x509.Certificate, now: datetime
    ) -> tuple[Status, datetime]:
        """Verify a response (RFC 6960 section 3.2) and return (status, valid until)."""
        response = ocsp.load_der_ocsp_response(raw)
        if response.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
            raise ValueError(f"responder answered {response.response_status.name}")
        signer = _responder(response, issuer)
        _verify_signature(
            signer.public_key(),  # type: ignore[arg-type]
            response.signature,
            response.tbs_response_bytes,
            response.signature_hash_algorithm,
        )
        for single in response.responses:
            if single.serial_number != cert.serial_number:
                continue
            if single.issuer_name_hash != _name_hash(issuer, single.hash_algorithm):
                continue
            if single.this_update_utc > now + _SKEW:
                raise ValueError("OCSP response from the future")
            until = single.next_update_utc or now
            if until < now:
                raise ValueError("OCSP response is stale")
            status: Status = {
                ocsp.OCSPCertStatus.GOOD: "good",
                ocsp.OCSPCertStatus.REVOKED: "revoked",
            }.get(single.certificate_status, "unknown")  # type: ignore[assignment]
            return status, until
        raise ValueError("the OCSP response does not cover this certificate")


def _name_hash(issuer: x509.Certificate, algorithm: hashes.HashAlgorithm) -> bytes:
    digest = hashes.Hash(algorithm)
    digest.update(issuer.subject.public_bytes())
    return digest.finalize()


def _responder(response: ocsp.OCSPResponse, issuer: x509.Certificate) -> x509.Certificate:
    """RFC 6960 section 4.2.2.2: the CA itself, or a delegate it certified for OCSPSigning."""
    key_hash = x509.SubjectKeyIdentifier.from_public_key(issuer.public_key()).digest
    if response.responder_name == issuer.subject or response.responder_key_hash == key_hash:
        return issuer
    for candidate in response.certificates:
        if issuer_of(candidate, [issuer]) is None:
            continue
        try:
            eku = candidate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            continue
        if ExtendedKeyUsageOID.OCSP_SIGNING in eku:
            return candidate
    raise ValueError("the OCSP response is not signed by the CA or its delegated responder")


def _ocsp_url(cert: x509.Certificate) -> str | None:
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return None
    for description in aia:
        if description.access_method == x509.oid.AuthorityInformationAccessOID.OCSP:
            value = description.access_location.value
            if isinstance(value, str):
                return value
    return None


class RevocationChecker:
    """OCSP where a responder answers, else the CRL: one answer per certificate."""

    def __init__(self, crls: CrlCache | None = None, ocsp_checker: OcspChecker | None = None):
        if crls is None and ocsp_checker is None:
            raise ValueError("a revocation checker needs CRLs, OCSP or both")
        self.crls = crls
        self.ocsp = ocsp_checker

    def check(self, cert: x509.Certificate, issuer: x509.Certificate) -> None:
        """Raise ``PeerRefused`` unless ``cert`` is known not to be revoked."""
        status: Status | None = None
        source = "OCSP"
        if self.ocsp is not None:
            status = self.ocsp.status(cert, issuer)
        if status is None and self.crls is not None:
            status, source = self.crls.status(cert, issuer), "CRL"
        if status is None:
            raise PeerRefused(
                f"no revocation status for certificate {cert.serial_number:x}",
                reason="status_unavailable",
                serial=format(cert.serial_number, "x"),
            )
        if status != "good":
            raise PeerRefused(
                f"certificate {cert.serial_number:x} is {status} ({source})",
                reason="revoked" if status == "revoked" else "status_unknown",
                serial=format(cert.serial_number, "x"),
            )


def file_stamp(path: Path) -> tuple[str, int, int] | None:
    """(resolved path, mtime_ns, size) of a file, to notice a change; None if it is absent."""
    try:
        resolved = path.resolve()
        st = os.stat(resolved)
    except OSError:
        return None
    return (str(resolved), st.st_mtime_ns, st.st_size)
