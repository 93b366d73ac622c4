"""Dashboard sessions: a signed cookie holding who signed in, their role, expiry and CSRF token.

The cookie is ``<base64url JSON>.<base64url HMAC-SHA256>`` under a key kept in the home; it is
HttpOnly, Secure and SameSite=Strict, and every form carries the session's CSRF token
(double submit, compared in constant time). Passwords of dashboard users are scrypt hashes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from iotpki.core.models import Role

__all__ = ["COOKIE", "Session", "SessionCodec", "hash_password", "verify_password"]

COOKIE = "iotpki_session"
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in dashboard user or token."""

    subject: str  # "token:<id>" or "user:<name>"
    role: Role
    expires: datetime
    csrf: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionCodec:
    """Signs and verifies session cookies with one key."""

    def __init__(self, key: bytes) -> None:
        self._key = hashlib.sha256(b"iotpki-web-session\x00" + key).digest()

    def new(self, subject: str, role: Role, now: datetime, lifetime: timedelta) -> Session:
        """A fresh session with a new CSRF token."""
        return Session(subject, role, now + lifetime, secrets.token_urlsafe(24))

    def encode(self, session: Session) -> str:
        """The cookie value."""
        body = _b64(
            json.dumps(
                {
                    "sub": session.subject,
                    "role": str(session.role),
                    "exp": int(session.expires.timestamp()),
                    "csrf": session.csrf,
                },
                separators=(",", ":"),
            ).encode()
        )
        return f"{body}.{self._sign(body)}"

    def decode(self, value: str, now: datetime) -> Session | None:
        """The session a cookie carries, or None if forged, malformed or expired."""
        if len(value) > 4096 or value.count(".") != 1:
            return None
        body, signature = value.split(".")
        if not hmac.compare_digest(signature, self._sign(body)):
            return None
        try:
            data = json.loads(_unb64(body))
            session = Session(
                str(data["sub"]),
                Role(data["role"]),
                datetime.fromtimestamp(int(data["exp"]), tz=now.tzinfo),
                str(data["csrf"]),
            )
        except (ValueError, KeyError, TypeError):
            return None
        return session if session.expires > now else None

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest())


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
