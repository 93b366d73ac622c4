"""One-time enrollment secrets: a device's secret, unused and unexpired, authenticates it.

Failed guesses lock the device's secrets for a while for the source address they came from, so
that a stranger elsewhere cannot lock a device out, and for every source once a much higher
per-device ceiling is reached (distributed guessing). The secret is consumed in the transaction
that records the certificate (:func:`iotpki.core.authenticators.consume`).

A secret made under the installation's enrollment key (:func:`derived_secret`) can be
recomputed by the server, which still stores only its hash: that is what lets a protocol whose
messages are MAC-protected with it (CMP) check the MAC (:class:`MacAuthenticator`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import NoReturn

from iotpki.core.audit import source_key
from iotpki.core.authenticators.model import (
    Authorization,
    Context,
    CredentialUse,
    MacProof,
    OneTimeSecret,
)
from iotpki.core.device_id import is_device_id
from iotpki.core.models import EnrollmentSecretRecord, EnrollMethod, SecretLockout
from iotpki.core.ports import Clock, Store, StoreTransaction
from iotpki.errors import AuthError, Forbidden, RateLimited

__all__ = [
    "ENROLLMENT_KEY",
    "MacAuthenticator",
    "SecretAuthenticator",
    "SecretLimits",
    "check_active",
    "derived_secret",
    "secret_hash",
]

ENROLLMENT_KEY = "enrollment-secrets"
"""The name of the installation's enrollment key among its sealed secrets."""

_Match = Callable[[list[EnrollmentSecretRecord]], tuple[EnrollmentSecretRecord, bytes] | None]


def secret_hash(secret: str) -> str:
    """The SHA-256 under which a one-time secret is stored."""
    return hashlib.sha256(secret.encode()).hexdigest()


def derived_secret(key: bytes, secret_id: str) -> str:
    """The one-time secret with id ``secret_id`` under the installation's enrollment key."""
    digest = hmac.new(key, b"iotpki enrollment secret " + secret_id.encode(), "sha256").digest()
    return base64.urlsafe_b64encode(digest[:24]).decode()


def check_active(tx: StoreTransaction, device_id: str) -> None:
    """Refuse a device an operator disabled."""
    device = tx.get_device(device_id)
    if device is not None and device.status != "active":
        raise Forbidden(f"device {device_id} is {device.status}", device_id=device_id)


@dataclass(frozen=True, slots=True)
class SecretLimits:
    """How many wrong guesses lock a device's secrets, and for how long."""

    max_secret_failures: int = 5  # per device and source address
    max_device_failures: int = 100  # per device from every source: stops distributed guessing
    lockout: timedelta = timedelta(minutes=15)


class SecretAuthenticator:
    """A device's one-time enrollment secret."""

    method = EnrollMethod.SECRET

    def __init__(self, store: Store, clock: Clock, limits: SecretLimits | None = None) -> None:
        self._store = store
        self._clock = clock
        self.limits = limits or SecretLimits()

    def claimed(self, credentials: OneTimeSecret) -> str:
        """The device the secret is presented for."""
        return credentials.device_id[:128]

    def authorize(self, credentials: OneTimeSecret, context: Context) -> Authorization:
        """The device, if the secret is its unused, unexpired enrollment secret.

        Failed guesses from one source lock the device's secrets for that source after
        ``max_secret_failures``, and for every source after ``max_device_failures``, for
        ``lockout`` (``RateLimited``).
        """
        digest = secret_hash(credentials.secret)

        def match(
            stored: list[EnrollmentSecretRecord],
        ) -> tuple[EnrollmentSecretRecord, bytes] | None:
            found = next((s for s in stored if hmac.compare_digest(s.secret_hash, digest)), None)
            return None if found is None else (found, credentials.secret.encode())

        return self.authorize_with(credentials.device_id, context, match)

    def authorize_with(self, device_id: str, context: Context, match: _Match) -> Authorization:
        """The device if ``match`` finds its secret among those stored; locks as above."""
        if not is_device_id(device_id):
            raise AuthError("the user name is not a valid device ID")
        source = source_key(context.source)
        now = self._clock.now()
        with self._store.transaction(readonly=True) as tx:
            stored = tx.enrollment_secrets(device_id)
            mine = tx.secret_lockout(device_id, source)
        live = [s for s in stored if s.used_at is None and s.expires_at > now]
        locked = [s.locked_until for s in live if s.locked_until and s.locked_until > now]
        if mine is not None and mine.locked_until is not None and mine.locked_until > now:
            locked.append(mine.locked_until)
        if locked:
            wait = int((max(locked) - now).total_seconds()) + 1
            raise RateLimited("too many failed attempts: enrollment locked", retry_after=wait)
        found = match(stored)
        if found is None:
            self._count_failure(context, device_id, source, live, now)
        record, secret = found
        if record.used_at is not None:
            raise AuthError("the enrollment secret was already used")
        if record.expires_at <= now:
            raise AuthError("the enrollment secret has expired")
        with self._store.transaction(readonly=True) as tx:
            check_active(tx, device_id)
        return Authorization(
            device_id=device_id,
            method=self.method,
            protocol=context.protocol,
            profile=record.profile,
            approval=record.approval,
            use=CredentialUse(self.method, record.secret_id, device_id, context.transaction_id),
            mac_key=secret,
        )

    def _count_failure(
        self,
        context: Context,
        device_id: str,
        source: str,
        live: list[EnrollmentSecretRecord],
        now: datetime,
    ) -> NoReturn:
        """Count a wrong guess per device and source, lock where a limit is reached, refuse."""
        limits = self.limits
        until = now + limits.lockout
        locked: list[str] = []
        actor = f"{context.protocol}:{self.method}:{device_id[:128]}"
        with self._store.transaction() as tx:
            for record in live:
                failures = record.failed_attempts + 1
                locked_until = record.locked_until
                if failures >= limits.max_device_failures:
                    failures, locked_until = 0, until
                    locked.append("device")
                tx.update_enrollment_secret(
                    replace(record, failed_attempts=failures, locked_until=locked_until)
                )
            if live:  # a device without live secrets has nothing to guess, nor to lock
                tx.prune_secret_lockouts(device_id, now - limits.lockout)
                previous = tx.secret_lockout(device_id, source)
                failures = previous.failures + 1 if previous else 1
                locked_until = previous.locked_until if previous else None
                if failures >= limits.max_secret_failures:
                    failures, locked_until = 0, until
                    locked.append("source")
                tx.put_secret_lockout(SecretLockout(device_id, source, failures, now, locked_until))
            for scope in sorted(set(locked)):
                data: dict[str, object] = {"source": source, "scope": scope, "until": str(until)}
                tx.append_audit(now, actor, f"{context.protocol}.secret.locked", device_id, data)
        raise AuthError("wrong or unknown enrollment secret", locked=bool(locked))


class MacAuthenticator:
    """A message MAC-protected with the device's one-time secret, made under ``key``; wrong
    MACs count as failed guesses of the device's secrets, as wrong secrets do."""

    method = EnrollMethod.SECRET

    def __init__(self, secrets: SecretAuthenticator, key: bytes | None) -> None:
        self._secrets = secrets
        self._key = key

    def claimed(self, credentials: MacProof) -> str:
        """The device the message claims to come from (its senderKID)."""
        return credentials.device_id[:128]

    def authorize(self, credentials: MacProof, context: Context) -> Authorization:
        """The device, if the message's MAC is made with one of its secrets."""

        def match(
            stored: list[EnrollmentSecretRecord],
        ) -> tuple[EnrollmentSecretRecord, bytes] | None:
            for record in stored:
                secret = self.secret_of(record.secret_id)
                if secret is None:
                    return None
                made_here = hmac.compare_digest(secret_hash(secret.decode()), record.secret_hash)
                if made_here and credentials.verify(secret):
                    return record, secret
            return None

        return self._secrets.authorize_with(credentials.device_id, context, match)

    def secret_of(self, secret_id: str) -> bytes | None:
        """The secret with id ``secret_id`` as the enrollment key makes it (None without one)."""
        return None if self._key is None else derived_secret(self._key, secret_id).encode()
