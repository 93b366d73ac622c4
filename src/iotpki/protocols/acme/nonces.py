"""Anti-replay nonces (RFC 8555 section 6.5): single use, expiring, bounded in number.

Nonces live in the memory of the serving process: every request that carries one is answered
by the same process's table. With several replicas behind a balancer without affinity a client
may present a nonce another replica issued; it gets ``badNonce`` with a fresh nonce and retries,
which RFC 8555 section 6.5 requires clients to do.
"""

from __future__ import annotations

import base64
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["NonceTable"]


class NonceTable:
    """Issues nonces and accepts each exactly once before it expires."""

    def __init__(
        self,
        lifetime: float = 600.0,
        capacity: int = 200_000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lifetime = lifetime
        self._capacity = capacity
        self._monotonic = monotonic
        self._issued: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def issue(self) -> str:
        """A fresh nonce: 128 random bits, base64url without padding (section 6.5.1)."""
        nonce = base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode()
        now = self._monotonic()
        with self._lock:
            self._issued[nonce] = now + self._lifetime
            while len(self._issued) > self._capacity:
                self._issued.popitem(last=False)
            self._drop_expired(now)
        return nonce

    def consume(self, nonce: str) -> bool:
        """Accept a nonce once: False when unknown, used or expired."""
        now = self._monotonic()
        with self._lock:
            deadline = self._issued.pop(nonce, None)
        return deadline is not None and deadline > now

    def _drop_expired(self, now: float) -> None:
        # Insertion order is expiry order: drop a few expired ones from the front per call.
        for _ in range(8):
            if not self._issued:
                return
            first, deadline = next(iter(self._issued.items()))
            if deadline > now:
                return
            del self._issued[first]

    def __len__(self) -> int:
        return len(self._issued)
