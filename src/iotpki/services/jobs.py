"""A small runner of periodic background jobs for the server.

Each job runs on one thread of the runner at its interval (or sooner when woken). An exclusive
job does the installation's work (publishing CRLs, scans, webhook deliveries): it first takes a
lock named after it across processes (a PostgreSQL advisory lock, a ``flock`` beside a SQLite
database), so that one process of a deployment runs it at a time; the others skip it. The other
jobs keep one process's own state current (its OCSP cache, its copy of the CRLs).

A runner started for the ``process`` scope runs only the latter (a request worker), one started
for the ``installation`` scope only the former (the job worker); ``all`` runs both.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Job", "JobRunner", "JobScope"]

log = logging.getLogger(__name__)

Lock = Callable[[str], AbstractContextManager[bool]]
JobScope = Literal["all", "process", "installation"]


@dataclass
class Job:
    """A function run every ``interval`` seconds; ``exclusive`` ones run on one replica only."""

    name: str
    interval: float
    run: Callable[[], object]
    exclusive: bool = False
    next_run: float = field(default=0.0)


class JobRunner:
    """Runs jobs on one daemon thread until stopped."""

    def __init__(self, jobs: list[Job], lock: Lock) -> None:
        self._jobs = jobs
        self._lock = lock
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_due(self) -> None:
        """Run every job whose time has come (also callable directly, e.g. by tests)."""
        for job in self._jobs:
            if time.monotonic() < job.next_run:
                continue
            job.next_run = time.monotonic() + job.interval
            try:
                if job.exclusive:
                    with self._lock(job.name) as held:
                        if held:
                            job.run()
                else:
                    job.run()
            except Exception:
                log.exception("background job %s failed", job.name)

    def wake(self, names: tuple[str, ...] = ()) -> None:
        """Make the named jobs (all, when none is named) due now."""
        for job in self._jobs:
            if not names or job.name in names:
                job.next_run = 0.0
        self._wake.set()

    def start(self, scope: JobScope = "all") -> None:
        """Start the runner thread for the jobs of ``scope`` (none: no thread)."""
        if scope != "all":
            self._jobs = [job for job in self._jobs if job.exclusive is (scope == "installation")]
        if not self._jobs:
            return
        self._thread = threading.Thread(target=self._loop, name="iotpki-jobs", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the runner thread and wait for the job in progress."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.run_due()
            pause = min(job.next_run for job in self._jobs) - time.monotonic()
            self._wake.wait(max(0.05, pause))
            self._wake.clear()
