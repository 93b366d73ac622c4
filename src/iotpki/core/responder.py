"""The OCSP responder's state: delegated responder certificates and pre-signed responses.

RFC 6960 section 4.2.2.2: each CA delegates OCSP signing to a certificate it issued with the
id-kp-OCSPSigning EKU (from the ``ocsp-signer`` profile, which adds id-pkix-ocsp-nocheck); the
CA key is not used for routine OCSP. A responder's key is kept encrypted by a key backend and
its certificate in the store, so every replica and every restart signs with the same responder
until it is renewed; the certificates are recorded and audited like any other.

Responses for single-certificate requests without a nonce are signed ahead of need and kept in
a dictionary keyed by (CA, serial, CertID hash): the HTTP route finds them without parsing.
Revocation removes the entry at once; a request that misses is signed on demand and kept.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from iotpki.core.authority import Authority
from iotpki.core.models import CertStatus, KeyAlgorithm, RevocationReason
from iotpki.core.ports import KeyBackend
from iotpki.core.ports.shared import ResponderStore
from iotpki.core.publication import RevocationConfig, RevocationStore
from iotpki.core.revocation import (
    CertId,
    SingleStatus,
    build_ocsp_response,
    issuer_hashes,
)
from iotpki.errors import NotFound

__all__ = ["CacheKey", "CachedResponse", "OcspResponder", "UnknownIssuer"]

log = logging.getLogger(__name__)

CacheKey = tuple[str, int, str]
"""(CA name, serial, CertID hash algorithm) of a pre-signed response."""

_ALGORITHMS = ("sha1", "sha256", "sha384", "sha512")
_RENEW_FRACTION = 3  # a responder certificate is renewed when a third of its life remains


class UnknownIssuer(NotFound):
    """The request names an issuer this responder does not answer for (RFC 6960 2.3)."""

    code = "unknown_issuer"


@dataclass(frozen=True, slots=True)
class CachedResponse:
    """A signed response and the HTTP caching facts of RFC 5019 section 6."""

    der: bytes
    this_update: datetime
    next_update: datetime
    etag: str


@dataclass(slots=True)
class _Responder:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    key_ref: str


def _fresh(cert: x509.Certificate, now: datetime) -> bool:
    """More than a third of the responder certificate's life remains."""
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    return cert.not_valid_after_utc - now > life / _RENEW_FRACTION


class OcspResponder:
    """Answers OCSP questions for every CA held here, from a cache of signed responses."""

    def __init__(
        self,
        authority: Authority,
        store: RevocationStore,
        config: RevocationConfig,
        responders: ResponderStore,
        keys: KeyBackend,
    ) -> None:
        self._authority = authority
        self._store = store
        self._config = config
        self._kept = responders
        self._keys = keys
        self._lock = threading.Lock()
        self._responders: dict[str, _Responder] = {}
        self._issuers: dict[tuple[str, bytes, bytes], str] = {}
        self._cache: dict[CacheKey, CachedResponse] = {}
        self._presigned_after: dict[str, int] = {}
        # A status read before a revocation must not be cached after it: each invalidation
        # stamps the certificate with a generation, and entries read earlier are not kept.
        self._generation = 0
        self._invalidated: dict[tuple[str, int], int] = {}
        self._floor = 0

    @property
    def config(self) -> RevocationConfig:
        """The settings in force."""
        return self._config

    # -- issuers and responder certificates ------------------------------------------------

    def refresh_issuers(self) -> None:
        """Learn the CAs held here and their name and key hashes for every CertID hash."""
        issuers: dict[tuple[str, bytes, bytes], str] = {}
        for ca in self._authority.list_cas():
            if ca.certificate_der is None or ca.key_ref is None:
                continue  # an offline CA cannot delegate: its OCSP is not served here
            cert = ca.certificate
            for algorithm in _ALGORITHMS:
                name_hash, key_hash = issuer_hashes(cert, algorithm)
                issuers[(algorithm, name_hash, key_hash)] = ca.name
        self._issuers = issuers

    def issuer_of(self, cert_id: CertId) -> str:
        """The CA a CertID names, by issuer name and key hash (RFC 6960 section 4.1.1)."""
        key = (cert_id.hash_algorithm, cert_id.issuer_name_hash, cert_id.issuer_key_hash)
        name = self._issuers.get(key)
        if name is None:
            raise UnknownIssuer(
                "no CA here has this issuer key hash", key_hash=cert_id.issuer_key_hash.hex()
            )
        return name

    def responder_certificate(self, ca_name: str) -> x509.Certificate | None:
        """The current delegated responder certificate of a CA, if one was made."""
        responder = self._responders.get(ca_name)
        return None if responder is None else responder.certificate

    def ensure_responders(self, now: datetime) -> list[str]:
        """Take up the kept responder of each CA, or issue one where it is missing or due for
        renewal; the CAs whose responder this process issued."""
        renewed = []
        for ca_name in sorted(set(self._issuers.values())):
            responder, made = self._current(ca_name, now)
            with self._lock:
                self._responders[ca_name] = responder
            if made:
                renewed.append(ca_name)
        return renewed

    def _current(self, ca_name: str, now: datetime) -> tuple[_Responder, bool]:
        """The kept responder if it is fresh, else a new one (unless another replica was
        quicker, whose responder is taken instead); whether this call issued it."""
        kept = self._load(ca_name)
        if kept is not None and _fresh(kept.certificate, now):
            return kept, False
        made = self._issue_responder(ca_name)
        der = made.certificate.public_bytes(serialization.Encoding.DER)
        replace = (
            None if kept is None else kept.certificate.public_bytes(serialization.Encoding.DER)
        )
        after = made.certificate.not_valid_after_utc
        if self._kept.put_ocsp_responder(ca_name, der, made.key_ref, after, replace=replace):
            return made, True
        return self._load(ca_name) or made, False

    def _load(self, ca_name: str) -> _Responder | None:
        kept = self._kept.ocsp_responder(ca_name)
        if kept is None:
            return None
        der, key_ref = kept
        key = self._keys.signer(key_ref)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            return None  # not a key this responder made: replace it
        return _Responder(x509.load_der_x509_certificate(der), key, key_ref)

    def _issue_responder(self, ca_name: str) -> _Responder:
        key_ref = self._keys.generate(f"ocsp-{ca_name}", KeyAlgorithm.P256)
        key = self._keys.signer(key_ref)
        assert isinstance(key, ec.EllipticCurvePrivateKey)  # P-256, as just asked for
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(
                x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{ca_name} OCSP responder")])
            )
            .sign(key, hashes.SHA256())
        )
        issued = self._authority.issue(csr, profile="ocsp-signer", ca=ca_name, actor="system:ocsp")
        return _Responder(issued.certificate, key, key_ref)

    def _responder(self, ca_name: str) -> _Responder:
        responder = self._responders.get(ca_name)
        if responder is None:
            with self._lock:
                responder = self._responders.get(ca_name)
                if responder is None:
                    now = self._authority.clock.now()
                    responder = self._responders[ca_name] = self._current(ca_name, now)[0]
        return responder

    # -- answering --------------------------------------------------------------------------

    def cached(self, key: CacheKey, now: datetime) -> CachedResponse | None:
        """A pre-signed response still within its validity."""
        entry = self._cache.get(key)
        if entry is None or entry.next_update <= now:
            return None
        return entry

    def status_of(self, ca_name: str, cert_id: CertId, now: datetime) -> SingleStatus:
        """The certificate's status; a serial this CA never issued is ``unknown``, never good."""
        validity = self._config.periods(ca_name).ocsp_validity
        try:
            record = self._authority.get(format(cert_id.serial, "x"), ca=ca_name)
        except NotFound:
            return SingleStatus(cert_id, "unknown", now, now + validity)
        if record.status is CertStatus.REVOKED:
            return SingleStatus(
                cert_id,
                "revoked",
                now,
                now + validity,
                revoked_at=record.revoked_at,
                reason=record.revocation_reason,
            )
        return SingleStatus(cert_id, "good", now, now + validity)

    def sign(self, ca_name: str, statuses: list[SingleStatus], nonce: bytes | None) -> bytes:
        """A response for one CA's certificates, signed by its delegated responder."""
        responder = self._responder(ca_name)
        return build_ocsp_response(
            responder=responder.certificate,
            key=responder.key,
            statuses=statuses,
            produced_at=self._authority.clock.now(),
            nonce=nonce,
        )

    def answer_one(self, cert_id: CertId, now: datetime) -> tuple[CacheKey, CachedResponse]:
        """The cached response for one CertID, signing and keeping it on a miss."""
        ca_name = self.issuer_of(cert_id)
        key: CacheKey = (ca_name, cert_id.serial, cert_id.hash_algorithm)
        entry = self.cached(key, now)
        if entry is None:
            read_at = self._generation
            entry = self._sign_and_keep(key, self.status_of(ca_name, cert_id, now), read_at)
        return key, entry

    def _sign_and_keep(self, key: CacheKey, status: SingleStatus, read_at: int) -> CachedResponse:
        der = self.sign(key[0], [status], None)
        entry = CachedResponse(
            der=der,
            this_update=status.this_update,
            next_update=status.next_update,
            etag='"' + hashlib.sha256(der).hexdigest()[:32] + '"',
        )
        stamp = self._invalidated.get((key[0], key[1]), self._floor)
        room = len(self._cache) < self._config.ocsp_presign_limit or key in self._cache
        if room and read_at >= stamp:
            self._cache[key] = entry
        return entry

    def answer_many(self, cert_ids: list[CertId], nonce: bytes | None, now: datetime) -> bytes:
        """One response for several CertIDs or with a nonce, signed now (never cached).

        RFC 6960 section 4.2.2.3: one response is signed by one responder, so every CertID must
        name the same CA; otherwise the issuer is refused as for an unknown one.
        """
        names = {self.issuer_of(cert_id) for cert_id in cert_ids}
        if len(names) != 1:
            raise UnknownIssuer("the request names certificates of several CAs")
        (ca_name,) = names
        statuses = [self.status_of(ca_name, cert_id, now) for cert_id in cert_ids]
        return self.sign(ca_name, statuses, nonce)

    # -- keeping the cache current -----------------------------------------------------------

    def invalidate(self, ca_name: str, serial_hex: str) -> None:
        """Drop every cached response for a certificate (called on revocation)."""
        serial = int(serial_hex, 16)
        self._generation += 1
        if len(self._invalidated) >= 100_000:
            self._invalidated.clear()
            self._floor = self._generation
        self._invalidated[(ca_name, serial)] = self._generation
        for algorithm in _ALGORITHMS:
            self._cache.pop((ca_name, serial, algorithm), None)

    def invalidate_since(self, since: datetime) -> int:
        """Drop cached responses of certificates revoked at or after ``since`` (any process)."""
        dropped = 0
        for ca_name in set(self._issuers.values()):
            for serial in self._store.revocations_since(ca_name, since, limit=100_000):
                self.invalidate(ca_name, serial)
                dropped += 1
        return dropped

    def refresh(self, now: datetime, limit: int = 2_000) -> int:
        """Re-sign cached responses past half their validity; returns how many."""
        due = [
            key
            for key, entry in list(self._cache.items())
            if now >= entry.this_update + (entry.next_update - entry.this_update) / 2
        ][:limit]
        for key in due:
            read_at = self._generation
            ca_name, serial, algorithm = key
            name_hash, key_hash = self._hashes(ca_name, algorithm)
            cert_id = CertId(algorithm, name_hash, key_hash, serial)
            self._sign_and_keep(key, self.status_of(ca_name, cert_id, now), read_at)
        return len(due)

    def _hashes(self, ca_name: str, algorithm: str) -> tuple[bytes, bytes]:
        for (alg, name_hash, key_hash), name in self._issuers.items():
            if name == ca_name and alg == algorithm:
                return name_hash, key_hash
        raise UnknownIssuer(f"no CA named {ca_name!r} answers here", ca=ca_name)

    def presign(self, now: datetime, batch: int = 1_000) -> int:
        """Sign SHA-1 CertID responses ahead of need for certificates not cached yet.

        Walks each CA's unexpired certificates in row order, then follows new ones; stops at
        the configured number of kept responses. RFC 5019 section 2.1.1 has clients use SHA-1.
        """
        done = 0
        for ca_name in sorted(set(self._issuers.values())):
            if len(self._cache) >= self._config.ocsp_presign_limit:
                break
            validity = self._config.periods(ca_name).ocsp_validity
            name_hash, key_hash = self._hashes(ca_name, "sha1")
            after = self._presigned_after.get(ca_name, 0)
            read_at = self._generation
            rows = self._store.certificate_statuses(
                ca_name, after_id=after, valid_at=now, limit=batch
            )
            for row_id, serial_hex, status, revoked_at, reason in rows:
                key: CacheKey = (ca_name, int(serial_hex, 16), "sha1")
                if key not in self._cache:
                    cert_id = CertId("sha1", name_hash, key_hash, key[1])
                    single = SingleStatus(
                        cert_id,
                        "revoked" if status == str(CertStatus.REVOKED) else "good",
                        now,
                        now + validity,
                        revoked_at=revoked_at,
                        reason=RevocationReason(reason) if reason else None,
                    )
                    self._sign_and_keep(key, single, read_at)
                    done += 1
                self._presigned_after[ca_name] = row_id
        return done

    def cache_size(self) -> int:
        """How many signed responses are kept."""
        return len(self._cache)

    def max_age(self, ca_name: str) -> timedelta:
        """The longest a client may cache a response of this CA (RFC 5019 section 6.2)."""
        return self._config.periods(ca_name).ocsp_max_age
