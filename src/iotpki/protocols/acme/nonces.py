"""Anti-replay nonces (RFC 8555 section 6.5): single use and expiring, on every replica.

A nonce carries its issue time and an HMAC under an installation secret every replica holds, so
any replica recognises the nonces any other issued without a lookup; the store records each
nonce as it is used, until it would have expired, so that none is accepted twice.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import struct
from datetime import UTC, datetime, timedelta

from iotpki.core.ports import Clock
from iotpki.core.ports.shared import OnceRegistry

__all__ = ["NONCE_SECRET", "NonceTable"]

NONCE_SECRET = "acme-nonce"  # the name of the nonce key among the sealed secrets
_SKEW = timedelta(seconds=60)  # replicas' clocks may differ this much
_LENGTH = 32  # issue time (8), random (8), tag (16)


class NonceTable:
    """Issues nonces and accepts each exactly once before it expires."""

    def __init__(
        self,
        key: bytes,
        spent: OnceRegistry,
        clock: Clock,
        lifetime: timedelta = timedelta(minutes=10),
    ) -> None:
        self._key = key
        self._spent = spent
        self._clock = clock
        self._lifetime = lifetime

    def issue(self) -> str:
        """A fresh nonce, base64url without padding (section 6.5.1)."""
        issued = int(self._clock.now().timestamp())
        body = struct.pack(">Q", issued) + secrets.token_bytes(8)
        return base64.urlsafe_b64encode(body + self._tag(body)).rstrip(b"=").decode()

    def consume(self, nonce: str) -> bool:
        """Accept a nonce once: False when forged, used or expired."""
        try:
            raw = base64.urlsafe_b64decode(nonce.encode("ascii") + b"==")
        except (UnicodeEncodeError, binascii.Error, ValueError):
            return False
        if len(raw) != _LENGTH or not hmac.compare_digest(raw[16:], self._tag(raw[:16])):
            return False
        (seconds,) = struct.unpack(">Q", raw[:8])
        if seconds > 2**40:
            return False
        issued = datetime.fromtimestamp(seconds, UTC)
        now = self._clock.now()
        expires = issued + self._lifetime
        if not issued - _SKEW <= now < expires:
            return False
        return self._spent.spend("acme-nonce", raw[:16].hex(), "", now, expires) is None

    def _tag(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()[:16]
