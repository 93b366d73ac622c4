"""Rate limits on new orders, per account and per identifier (RFC 8555 section 6.6).

Sliding-window counters in the memory of the serving process; a refusal is ``rateLimited``
with a ``Retry-After`` header. With several replicas each counts its own share.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable

__all__ = ["SlidingWindow"]


class SlidingWindow:
    """At most ``limit`` events per key within ``window`` seconds (0 disables the limit)."""

    def __init__(
        self, limit: int, window: float, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window = window
        self._monotonic = monotonic
        self._events: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, keys: list[str]) -> int | None:
        """Seconds to wait if any key is at its limit; otherwise count one event for each."""
        if self.limit <= 0:
            return None
        now = self._monotonic()
        with self._lock:
            queues = [self._events.setdefault(key, deque()) for key in keys]
            for queue in queues:
                while queue and queue[0] <= now - self.window:
                    queue.popleft()
            waits = [q[0] + self.window - now for q in queues if len(q) >= self.limit]
            if waits:
                return max(1, math.ceil(max(waits)))
            for queue in queues:
                queue.append(now)
            if len(self._events) > 100_000:
                self._events = {k: q for k, q in self._events.items() if q}
        return None
