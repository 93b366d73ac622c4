"""A virtual clock that many agent threads share and only the test moves forward.

Agents call ``sleep``; the test calls ``settle`` (wait until every agent is asleep or done, a
condition with a generous bound) and then ``advance`` (jump to the earliest wake-up and wake
whoever is due). Virtual time stands still while agents talk to the server, so how fast the
machine is changes only how long the test takes, never what it sees.
"""

from __future__ import annotations

import math
import threading
import time
from datetime import datetime, timedelta

__all__ = ["VirtualClock"]


class VirtualClock:
    """Virtual UTC time in whole seconds, for the server and every agent alike."""

    def __init__(self, start: datetime) -> None:
        self.start = start.replace(microsecond=0)
        self._now = self.start
        self._cond = threading.Condition()
        self._sleeping: dict[object, datetime] = {}  # token -> wake-up time
        self._awake = 0  # parties running (neither asleep nor gone)
        self._released = False

    def now(self) -> datetime:
        """The current virtual time."""
        with self._cond:
            return self._now

    def join(self) -> None:
        """Count one more party (an agent thread about to start)."""
        with self._cond:
            self._awake += 1

    def leave(self) -> None:
        """A party is done for good."""
        with self._cond:
            self._awake -= 1
            self._cond.notify_all()

    def sleep(self, seconds: float, stop: threading.Event) -> bool:
        """Sleep in virtual time until the test advances past the wake-up, or release."""
        token = object()
        with self._cond:
            if self._released or stop.is_set():
                return True
            self._sleeping[token] = self._now + timedelta(seconds=max(0.0, seconds))
            self._awake -= 1
            self._cond.notify_all()
            while token in self._sleeping and not self._released:
                self._cond.wait()
            if token in self._sleeping:  # released while asleep
                del self._sleeping[token]
                self._awake += 1
            return stop.is_set()

    def settle(self, bound: float = 600.0) -> None:
        """Wait until every party is asleep or gone (bounded: a hang fails, slowness does not)."""
        deadline = time.monotonic() + bound
        with self._cond:
            while self._awake > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{self._awake} agents still busy after {bound:.0f} s")
                self._cond.wait(remaining)

    def advance(self, limit: datetime) -> bool:
        """Jump to the next wake-up (rounded up to a whole second) and wake those due.

        Returns False, with the clock at ``limit``, when nobody wakes up before ``limit``.
        """
        with self._cond:
            assert self._awake == 0, "advance() before settle()"
            if not self._sleeping:
                self._now = max(self._now, limit)
                return False
            wake = min(self._sleeping.values())
            whole = self.start + timedelta(seconds=math.ceil((wake - self.start).total_seconds()))
            target = max(self._now, whole)
            if target > limit:
                self._now = max(self._now, limit)
                return False
            self._now = target
            due = [token for token, at in self._sleeping.items() if at <= target]
            for token in due:
                del self._sleeping[token]
            self._awake += len(due)
            self._cond.notify_all()
            return True

    def release(self) -> None:
        """Wake every sleeper now and let later sleeps return at once (at the end of a test)."""
        with self._cond:
            self._released = True
            self._cond.notify_all()
