"""Dashboard sign-in: passwords, server-side sessions and throttling of failed attempts.

A session is a random id in the cookie; the store keeps only its SHA-256 and checks it on
every request, so logout, revoking the token it was opened with, disabling the user or
changing the password end it at once (:mod:`iotpki.core.access` deletes the rows).

Failed sign-ins are counted per account and per source address in the store, so every
replica sees them. After ``free`` failures each further one blocks the key for
``base * 2**(n - free)``, capped at ``cap``; while blocked every attempt is refused, the right
password too. Each decision (failure, back-off, refusal under back-off) is audited.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from iotpki.core import access
from iotpki.core.models import Role, SessionRecord, ThrottleRecord
from iotpki.core.ports import Clock, Store
from iotpki.errors import AuthError, RateLimited

__all__ = ["Session", "SignIn", "Throttle", "hash_password", "verify_password"]

_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
_ACTOR = "ui:anonymous"
_MAX_COOKIE = 64


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in dashboard user or token."""

    subject: str  # "token:<id>" or "user:<name>"
    role: Role
    expires: datetime
    csrf: str


@dataclass(frozen=True, slots=True)
class Throttle:
    """How failed sign-ins back off, per account and per source address."""

    account_free: int = 5
    source_free: int = 20
    base: timedelta = timedelta(seconds=1)
    cap: timedelta = timedelta(minutes=15)
    forget: timedelta = timedelta(hours=1)  # failures older than this start the count anew

    def free(self, key: str) -> int:
        """Failures allowed under a key before back-off starts."""
        return self.source_free if key.startswith("source:") else self.account_free

    def backoff(self, key: str, failures: int) -> timedelta | None:
        """How long a key is blocked after its ``failures``-th failure, if at all."""
        excess = failures - self.free(key)
        if excess <= 0:
            return None
        delay: timedelta = self.base * (1 << min(excess - 1, 30))
        return min(self.cap, delay)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str) -> str:
    """An scrypt hash with a random salt, as ``scrypt$<salt>$<hash>``."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)
    return f"scrypt${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """Whether a password matches its stored hash."""
    try:
        scheme, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    candidate = hashlib.scrypt(password.encode(), salt=_unb64(salt), **_SCRYPT)
    return hmac.compare_digest(_b64(candidate), digest)


_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))  # equal work for unknown users


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


Check = Callable[[], tuple[str, Role, datetime | None]]
"""Verifies credentials: (subject, role, latest expiry) or ``AuthError``."""


class SignIn:
    """Sign-in, sessions and throttling over one store and clock."""

    def __init__(
        self, store: Store, clock: Clock, *, lifetime: timedelta, throttle: Throttle | None = None
    ) -> None:
        self.store = store
        self.clock = clock
        self.lifetime = lifetime
        self.throttle = throttle or Throttle()

    def password(self, username: str, password: str, source: str) -> tuple[str, Session]:
        """A new session (cookie value, session) for a user's password."""

        def check() -> tuple[str, Role, datetime | None]:
            with self.store.transaction(readonly=True) as tx:
                user = tx.get_user(username)
            stored = user.password_hash if user is not None else _DUMMY_HASH
            if not verify_password(password, stored) or user is None or user.disabled:
                raise AuthError("unknown user or wrong password")
            return f"user:{username}", user.role, None

        return self._attempt(f"account:{username.lower()}", source, check)

    def token(self, token: str, source: str) -> tuple[str, Session]:
        """A new session (cookie value, session) for an API token."""

        def check() -> tuple[str, Role, datetime | None]:
            record = access.authenticate(self.store, self.clock, token)
            return f"token:{record.token_id}", record.role, record.expires_at

        parts = token.split("_", 2)
        account = f"token:{parts[1][:32]}" if len(parts) == 3 else "token:malformed"
        return self._attempt(account, source, check)

    def resume(self, session_id: str) -> Session | None:
        """The live session a cookie names, or None."""
        if not session_id or len(session_id) > _MAX_COOKIE:
            return None
        with self.store.transaction(readonly=True) as tx:
            record = tx.get_session(_digest(session_id))
        if record is None or record.expires_at <= self.clock.now():
            return None
        return Session(record.subject, record.role, record.expires_at, record.csrf)

    def end(self, session_id: str, actor: str) -> None:
        """Log out: the session ends at once."""
        with self.store.transaction() as tx:
            ended = tx.delete_session(_digest(session_id[:_MAX_COOKIE]))
            tx.append_audit(self.clock.now(), actor, "ui.logout", actor, {"ended": ended})

    # -- throttling -----------------------------------------------------------------------------

    def _attempt(self, account: str, source: str, check: Check) -> tuple[str, Session]:
        keys = (account[:200], f"source:{source}"[:200])
        now = self.clock.now()
        with self.store.transaction(readonly=True) as tx:
            states = tx.throttle_states(keys)
        blocked = [s for s in states if s.blocked_until is not None and s.blocked_until > now]
        if blocked:
            until = max(s.blocked_until for s in blocked if s.blocked_until is not None)
            with self.store.transaction() as tx:
                tx.append_audit(
                    now,
                    _ACTOR,
                    "ui.login.throttled",
                    account,
                    {
                        "source": source,
                        "keys": [s.key for s in blocked],
                        "until": until.isoformat(),
                    },
                )
            wait = int((until - now).total_seconds()) + 1
            raise RateLimited("too many failed sign-ins: try again later", retry_after=wait)
        try:
            subject, role, latest = check()
        except AuthError as exc:
            self._failed(keys, account, source, exc.message)
            raise
        return self._open(keys[0], subject, role, latest)

    def _failed(self, keys: tuple[str, str], account: str, source: str, reason: str) -> None:
        now = self.clock.now()
        with self.store.transaction() as tx:
            known = {s.key: s for s in tx.throttle_states(keys, lock=True)}
            counts: dict[str, int] = {}
            backoffs: dict[str, str] = {}
            for key in keys:
                state = known.get(key)
                fresh = state is None or now - state.last_failure > self.throttle.forget
                failures = 1 if fresh or state is None else state.failures + 1
                delay = self.throttle.backoff(key, failures)
                until = now + delay if delay is not None else None
                tx.put_throttle(ThrottleRecord(key, failures, now, until))
                counts[key] = failures
                if until is not None:
                    backoffs[key] = until.isoformat()
            data: dict[str, object] = {"reason": reason, "source": source, "failures": counts}
            tx.append_audit(now, _ACTOR, "ui.login.refused", account, data)
            if backoffs:
                tx.append_audit(
                    now, _ACTOR, "ui.login.backoff", account, {"source": source, "until": backoffs}
                )

    def _open(
        self, account: str, subject: str, role: Role, latest: datetime | None
    ) -> tuple[str, Session]:
        now = self.clock.now()
        expires = now + self.lifetime
        if latest is not None:
            expires = min(expires, latest)
        session_id = secrets.token_urlsafe(32)
        record = SessionRecord(
            _digest(session_id), subject, role, secrets.token_urlsafe(24), now, expires
        )
        with self.store.transaction() as tx:
            tx.purge_sessions(now)
            tx.clear_throttle(account)
            tx.add_session(record)
            tx.append_audit(now, f"ui:{subject}", "ui.login", subject, {"role": str(role)})
        return session_id, Session(subject, role, expires, record.csrf)
