"""Rate limits every replica enforces together: windowed counters in the store.

Each key counts events in fixed windows; the rate is estimated over a sliding window as the
current window's count plus the previous window's, weighted by how much of it the sliding
window still covers. A refused event is taken back, so that a client waiting as told gets in.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from iotpki.core.ports import Clock
from iotpki.core.ports.shared import RateCounters

__all__ = ["SharedWindow"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class SharedWindow:
    """At most ``limit`` events per key within ``window`` (0 disables the limit)."""

    def __init__(
        self, counters: RateCounters, scope: str, limit: int, window: timedelta, clock: Clock
    ) -> None:
        self._counters = counters
        self._scope = scope
        self.limit = limit
        self._window = window
        self._clock = clock

    def count(self, keys: list[str]) -> None:
        """Count one event for each key, whatever the limit (an event that is never refused)."""
        if self.limit <= 0 or not keys:
            return
        start = self._start(self._clock.now())
        self._counters.add_events(self._scope, keys, start, start - self._window)

    def _start(self, now: datetime) -> datetime:
        offset = (now - _EPOCH).total_seconds() % self._window.total_seconds()
        return now - timedelta(seconds=offset)

    def retry_after(self, keys: list[str]) -> int | None:
        """Seconds to wait if any key is at its limit; otherwise count one event for each."""
        if self.limit <= 0 or not keys:
            return None
        now = self._clock.now()
        span = self._window.total_seconds()
        offset = (now - _EPOCH).total_seconds() % span
        start = now - timedelta(seconds=offset)
        counts = self._counters.add_events(self._scope, keys, start, start - self._window)
        covered = 1.0 - offset / span  # the part of the previous window still inside
        waits = [
            _wait(current - 1, previous, covered, self.limit, span, offset)
            for current, previous in counts
            if current + previous * covered > self.limit
        ]
        if not waits:
            return None
        self._counters.take_back_events(self._scope, keys, start)
        return max(waits)


def _wait(
    before: int, previous: int, covered: float, limit: int, span: float, offset: float
) -> int:
    """Seconds until one more event fits, ``before`` events counted in this window already."""
    if before >= limit or previous == 0:
        return max(1, math.ceil(span - offset))  # the next window starts afresh
    # The previous window's weight falls linearly: find when before + previous * w <= limit - 1.
    weight = (limit - 1 - before) / previous
    return max(1, math.ceil((covered - weight) * span))
