"""One-time enrollment secrets: a device's secret, unused and unexpired, authenticates it.

Failed guesses lock the device's secrets for a while for the source address they came from, so
that a stranger elsewhere cannot lock a device out, and for every source once a much higher
per-device ceiling is reached (distributed guessing). The secret is consumed in the transaction
that records the certificate (:func:`iotpki.core.authenticators.consume`).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import NoReturn

from iotpki.core.audit import source_key
from iotpki.core.authenticators.model import (
    Authorization,
    Context,
    CredentialUse,
    OneTimeSecret,
)
from iotpki.core.device_id import is_device_id
from iotpki.core.models import EnrollmentSecretRecord, EnrollMethod, SecretLockout
from iotpki.core.ports import Clock, Store, StoreTransaction
from iotpki.errors import AuthError, Forbidden, RateLimited

__all__ = ["SecretAuthenticator", "SecretLimits", "check_active", "secret_hash"]


def secret_hash(secret: str) -> str:
    """The SHA-256 under which a one-time secret is stored."""
    return hashlib.sha256(secret.encode()).hexdigest()


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
        device_id = credentials.device_id
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
        digest = secret_hash(credentials.secret)
        match = next((s for s in stored if hmac.compare_digest(s.secret_hash, digest)), None)
        if match is None:
            self._count_failure(context, device_id, source, live, now)
        if match.used_at is not None:
            raise AuthError("the enrollment secret was already used")
        if match.expires_at <= now:
            raise AuthError("the enrollment secret has expired")
        with self._store.transaction(readonly=True) as tx:
            check_active(tx, device_id)
        return Authorization(
            device_id=device_id,
            method=self.method,
            protocol=context.protocol,
            profile=match.profile,
            approval=match.approval,
            use=CredentialUse(self.method, match.secret_id, device_id, context.transaction_id),
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
