"""Background validation of challenges (RFC 8555 section 7.5.1): retries until a deadline.

The queue runs each job as an asyncio task on the serving loop. Tests build it with
``manual=True`` and run the queued jobs deterministically with :meth:`ValidationQueue.drain`;
the sleep between attempts is injectable as well.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

__all__ = ["Job", "ValidationQueue"]

log = logging.getLogger(__name__)

Job = Callable[[], Awaitable[object]]


class ValidationQueue:
    """Runs validation jobs in the background, or on demand when ``manual``."""

    def __init__(
        self,
        *,
        retry_delays: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0),
        deadline: float = 60.0,
        manual: bool = False,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.retry_delays = retry_delays
        self.deadline = deadline
        self.manual = manual
        self.sleep = sleep
        self._pending: list[Job] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, job: Job) -> None:
        """Start ``job`` now in the background (or keep it for :meth:`drain`)."""
        if self.manual:
            self._pending.append(job)
            return
        task = asyncio.get_running_loop().create_task(self._run(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, job: Job) -> None:
        try:
            await job()
        except Exception:  # a job records its own outcome; this only keeps the loop alive
            log.exception("challenge validation job failed")

    async def drain(self) -> int:
        """Run every queued job to completion (manual mode); returns how many ran."""
        ran = 0
        while self._pending:
            job = self._pending.pop(0)
            await self._run(job)
            ran += 1
        return ran

    @property
    def active(self) -> int:
        """Jobs queued or running."""
        return len(self._pending) + len(self._tasks)
