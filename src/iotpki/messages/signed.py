"""Signed device messages: a device signs telemetry as COSE_Sign1, anyone downstream verifies.

Message layout (RFC 9052 COSE_Sign1):

- protected: ``alg`` (1), ``content type`` (3) when given, and the CWT claims (15, RFC 9597):
  ``sub`` (2) the device ID, ``iat`` (6) seconds since the epoch, ``cti`` (7) an 8-byte counter
  that is never reused by one device;
- unprotected: ``x5chain`` (33, RFC 9360 section 2) with the device certificate and its CA
  certificates, or ``kid`` (4), the SHA-256 of the device key's SubjectPublicKeyInfo, once the
  verifier knows the chain.

The verifier checks, in order, the form, the chain to the fleet's trust anchors (validity
included), the signature, the revocation status, the claimed device, the time window and the
counter (replay). Each refusal is a ``PeerRefused`` whose ``reason`` names the failed check, and
is logged.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from iotpki.core.ports import Clock, SystemClock
from iotpki.errors import BadSignature, MalformedInput, PeerRefused
from iotpki.messages.cose import (
    CONTENT_TYPE,
    CWT_CLAIMS,
    KID,
    X5CHAIN,
    Sign1,
    decode_sign1,
    sign1,
    verify_sign1,
)
from iotpki.net.revocation_check import RevocationChecker
from iotpki.net.tls import device_id_of

__all__ = ["MessageSigner", "MessageVerifier", "VerifiedMessage", "key_id"]

log = logging.getLogger(__name__)

_SUB, _IAT, _CTI = 2, 6, 7  # RFC 8392 section 3.1 claim keys
_DER = serialization.Encoding.DER
_MAX_CHAIN = 4
_MAX_PATHS = 10_000


def key_id(cert: x509.Certificate) -> bytes:
    """The ``kid`` of a device: SHA-256 of its certificate's SubjectPublicKeyInfo."""
    spki = cert.public_key().public_bytes(_DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).digest()


class MessageSigner:
    """Signs one device's messages with its key (a file key or a PKCS#11 token key)."""

    def __init__(
        self,
        key: CertificateIssuerPrivateKeyTypes,
        chain: Sequence[x509.Certificate],
        *,
        include_chain: bool = True,
        clock: Clock | None = None,
    ) -> None:
        if not chain:
            raise ValueError("the signer needs its certificate")
        self._key = key
        self._chain = tuple(chain)
        self.device_id = device_id_of(chain[0])
        self.include_chain = include_chain
        self._clock = clock or SystemClock()
        self._counter = time.time_ns() // 1000  # grows across restarts with the clock
        self._lock = threading.Lock()

    def sign(self, payload: bytes, content_type: str | None = "application/json") -> bytes:
        """One signed message carrying ``payload``."""
        with self._lock:
            self._counter += 1
            counter = self._counter
        claims = {
            _SUB: self.device_id,
            _IAT: int(self._clock.now().timestamp()),
            _CTI: counter.to_bytes(8, "big"),
        }
        protected: dict[int, Any] = {CWT_CLAIMS: claims}
        if content_type:
            protected[CONTENT_TYPE] = content_type
        unprotected: dict[int, Any]
        if self.include_chain:
            ders = [c.public_bytes(_DER) for c in self._chain]
            unprotected = {X5CHAIN: ders[0] if len(ders) == 1 else ders}
        else:
            unprotected = {KID: key_id(self._chain[0])}
        return sign1(payload, self._key, protected=protected, unprotected=unprotected)


@dataclass(frozen=True, slots=True)
class VerifiedMessage:
    """A message that passed every check."""

    device_id: str
    payload: bytes
    issued_at: datetime
    counter: int
    certificate: x509.Certificate


class MessageVerifier:
    """Verifies signed device messages against the fleet's anchors."""

    def __init__(
        self,
        anchors: Callable[[], Sequence[x509.Certificate]],
        *,
        revocation: RevocationChecker | None,
        window: timedelta = timedelta(minutes=5),
        clock: Clock | None = None,
        chains: Callable[[bytes], Sequence[x509.Certificate] | None] | None = None,
    ) -> None:
        self._anchors = anchors
        self._revocation = revocation
        self._window = window
        self._clock = clock or SystemClock()
        self._lookup = chains
        self._known: dict[bytes, tuple[x509.Certificate, ...]] = {}
        self._seen: dict[str, dict[bytes, datetime]] = {}
        # validated paths, by (anchors, chain as sent), until the first certificate expires
        self._paths: dict[object, tuple[list[x509.Certificate], datetime]] = {}
        self._lock = threading.Lock()

    def verify(self, data: bytes) -> VerifiedMessage:
        """The verified message, or ``PeerRefused`` naming the check that failed (logged)."""
        try:
            return self._verify(data)
        except PeerRefused as exc:
            log.warning("signed message refused (%s): %s", exc.reason, exc.message)
            raise

    def _verify(self, data: bytes) -> VerifiedMessage:
        try:
            message = decode_sign1(data)
        except MalformedInput as exc:
            raise PeerRefused(exc.message, reason="malformed") from exc
        chain = self._chain(message)
        now = self._clock.now()
        leaf = chain[0]
        verified = self._verify_chain(chain, now)
        try:
            verify_sign1(message, leaf.public_key())
        except (BadSignature, KeyError, ValueError) as exc:
            raise PeerRefused(
                "the message signature does not verify with the certificate's key",
                reason="bad_signature",
            ) from exc
        if self._revocation is not None:
            self._revocation.check(leaf, verified[1])
        device = device_id_of(leaf)
        claims = message.protected.get(CWT_CLAIMS)
        if not isinstance(claims, Mapping):
            raise PeerRefused("the message carries no protected claims", reason="malformed")
        if claims.get(_SUB) != device:
            raise PeerRefused(
                f"the message claims device {claims.get(_SUB)!r}, its certificate is {device!r}",
                reason="device_mismatch",
            )
        issued_at, counter = self._fresh(device, claims, now)
        with self._lock:
            self._known[key_id(leaf)] = tuple(chain)
        return VerifiedMessage(device, message.payload, issued_at, counter, leaf)

    def _chain(self, message: Sign1) -> list[x509.Certificate]:
        x5chain = message.header(X5CHAIN)
        if x5chain is not None:
            ders = [x5chain] if isinstance(x5chain, bytes) else x5chain
            if not isinstance(ders, list | tuple) or not 0 < len(ders) <= _MAX_CHAIN:
                raise PeerRefused("x5chain is not one to four certificates", reason="malformed")
            try:
                return [x509.load_der_x509_certificate(d) for d in ders]
            except (TypeError, ValueError) as exc:
                raise PeerRefused(f"x5chain does not parse: {exc}", reason="malformed") from exc
        kid = message.header(KID)
        if not isinstance(kid, bytes):
            raise PeerRefused("the message has neither x5chain nor kid", reason="no_chain")
        with self._lock:
            known = self._known.get(kid)
        if known is None and self._lookup is not None:
            found = self._lookup(kid)
            known = tuple(found) if found else None
        if not known:
            raise PeerRefused(f"unknown key id {kid.hex()}", reason="unknown_kid")
        return list(known)

    def _verify_chain(self, chain: list[x509.Certificate], now: datetime) -> list[x509.Certificate]:
        """RFC 5280 path validation to the anchors at ``now``; the validated path, leaf first."""
        leaf = chain[0]
        if now >= leaf.not_valid_after_utc:
            raise PeerRefused(
                f"the signer's certificate expired at {leaf.not_valid_after_utc}", reason="expired"
            )
        if now < leaf.not_valid_before_utc:
            raise PeerRefused("the signer's certificate is not valid yet", reason="not_yet_valid")
        anchors = list(self._anchors())
        if not anchors:
            raise PeerRefused("no trust anchors configured", reason="no_anchors")
        key = (tuple(anchors), tuple(chain))
        with self._lock:
            cached = self._paths.get(key)
        if cached is not None and now < cached[1]:
            return cached[0]
        verifier = PolicyBuilder().store(Store(anchors)).time(now).build_client_verifier()
        try:
            verified = verifier.verify(leaf, chain[1:])
        except VerificationError as exc:
            raise PeerRefused(
                f"the signer's chain does not lead to a trusted CA: {exc}", reason="foreign_chain"
            ) from exc
        path = list(verified.chain)
        if len(path) < 2:
            raise PeerRefused(
                "the signer's certificate is itself an anchor", reason="foreign_chain"
            )
        with self._lock:
            if len(self._paths) >= _MAX_PATHS:
                self._paths.clear()
            self._paths[key] = (path, min(c.not_valid_after_utc for c in path))
        return path

    def _fresh(self, device: str, claims: Mapping[Any, Any], now: datetime) -> tuple[datetime, int]:
        """The time window and the counter: each (device, cti) is accepted once."""
        iat, cti = claims.get(_IAT), claims.get(_CTI)
        if not isinstance(iat, int) or not isinstance(cti, bytes) or not 0 < len(cti) <= 16:
            raise PeerRefused("the message lacks iat or cti", reason="malformed")
        issued_at = datetime.fromtimestamp(iat, UTC)
        if abs(now - issued_at) > self._window:
            raise PeerRefused(
                f"the message was signed at {issued_at}, outside the {self._window} window",
                reason="stale",
            )
        with self._lock:
            seen = self._seen.setdefault(device, {})
            if cti in seen:
                raise PeerRefused(
                    f"message {cti.hex()} of {device} was already received", reason="replay"
                )
            for old in [k for k, at in seen.items() if now - at > self._window]:
                del seen[old]
            seen[cti] = issued_at
        return issued_at, int.from_bytes(cti, "big")
