"""``serve --workers N``: a pre-fork master, N request processes on the same listeners and one
job worker.

The master binds the sockets, makes what the workers would otherwise race for (the HTTPS
listener's identity), forks the workers and then only watches them: a worker that dies is
started again (with a growing pause if it keeps dying at once), SIGTERM or SIGINT is passed
on to every worker, which stops accepting and finishes its requests, and the master returns
when all have ended. Each worker opens the installation itself after the fork, so no database
connection, key session or thread crosses the fork; the kernel spreads new connections over
the workers' accept calls on the shared sockets.

The request workers run only the jobs that keep their own state current (OCSP cache, CRLs);
the installation's background work (linting, CRL publication, scans, webhooks) runs in the job
worker, off the request processes' CPU, under the store's cross-process locks (PostgreSQL
advisory locks, ``flock`` beside a SQLite database) so that each job runs once at a time
across replicas.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from iotpki.server import ensure_tls_identity, run_jobs, serve
from iotpki.services.installation import Installation, open_installation
from iotpki.settings import Settings

__all__ = ["default_workers", "run_workers"]

log = logging.getLogger(__name__)

_STOP_GRACE = 30.0  # seconds a worker has to finish its requests before it is killed
_QUICK_DEATH = 5.0  # a worker that dies sooner than this after its start is restarted slowly
_MAX_PAUSE = 30.0
JOB_SLOT = -1  # the slot of the job worker; request workers are 0..N-1


def default_workers() -> int:
    """One worker per CPU this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@dataclass
class _Worker:
    slot: int
    pid: int
    started: float
    pause: float = 0.0


@dataclass
class _Master:
    settings: Settings
    sockets: tuple[socket.socket, socket.socket]
    access_log: bool
    ready_write: int
    workers: dict[int, _Worker] = field(default_factory=dict)
    stopping: bool = False

    def start(self, slot: int, pause: float = 0.0) -> None:
        pid = os.fork()
        if pid == 0:  # the worker: never returns into the master's code
            os._exit(self._run_worker(slot))
        self.workers[pid] = _Worker(slot, pid, time.monotonic(), pause)

    def _run_worker(self, slot: int) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        master = os.getppid()
        threading.Thread(target=_stop_when_orphaned, args=(master,), daemon=True).start()
        try:
            inst = open_installation(self.settings)
        except Exception:
            log.exception("a worker could not open the installation")
            return 1
        https, http = self.sockets
        try:
            if slot == JOB_SLOT:
                https.close()  # the job worker accepts no connections
                http.close()
                run_jobs(inst)
            else:
                serve(
                    inst,
                    https,
                    http,
                    access_log=self.access_log,
                    on_ready=self._announce,
                    jobs="process",
                )
        except Exception:
            log.exception("a worker failed")
            return 1
        finally:
            inst.close()
        return 0

    def _announce(self) -> None:
        """Tell the master that this worker accepts connections."""
        os.write(self.ready_write, b".")

    def reap(self) -> None:
        """Collect ended workers; start a new one in each slot unless stopping."""
        while self.workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.workers.clear()
                return
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            if worker is None or self.stopping:
                continue
            code = os.waitstatus_to_exitcode(status)
            quick = time.monotonic() - worker.started < _QUICK_DEATH
            pause = min(_MAX_PAUSE, max(1.0, worker.pause * 2)) if quick else 0.0
            log.warning(
                "worker %d (pid %d) ended with %d: starting it again", worker.slot, pid, code
            )
            if pause:
                time.sleep(pause)
            self.start(worker.slot, pause)

    def stop(self) -> None:
        """Ask every worker to finish (SIGTERM), then kill what is left after the grace time."""
        self.stopping = True
        for pid in list(self.workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + _STOP_GRACE
        while self.workers and time.monotonic() < deadline:
            self.reap()
            time.sleep(0.05)
        for pid in list(self.workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        self.workers.clear()


def run_workers(
    inst: Installation,
    https_socket: socket.socket,
    http_socket: socket.socket,
    workers: int,
    *,
    access_log: bool = False,
    on_ready: Callable[[], None] | None = None,
    jobs: bool = True,
) -> None:
    """Serve with ``workers`` request processes (and, with ``jobs``, a job worker) until SIGINT
    or SIGTERM; ``on_ready`` once every request worker accepts."""
    ensure_tls_identity(inst)  # made once here, found by every worker
    inst.close()  # nothing of it may cross the fork
    ready_read, ready_write = os.pipe()
    master = _Master(inst.settings, (https_socket, http_socket), access_log, ready_write)
    with _signals() as signalled:
        for slot in [*range(workers), *([JOB_SLOT] if jobs else [])]:
            master.start(slot)
        ready = 0
        while not signalled():
            readable, _, _ = select.select([ready_read], [], [], 0.2)
            if readable:
                ready += len(os.read(ready_read, 64))
                if ready == workers and on_ready is not None:
                    on_ready()
            master.reap()
        master.stop()
    os.close(ready_read)
    os.close(ready_write)
    for sock in (https_socket, http_socket):
        sock.close()


def _stop_when_orphaned(master: int) -> None:
    """A worker whose master died (SIGKILL leaves no time to stop it) stops itself."""
    while os.getppid() == master:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)


@contextlib.contextmanager
def _signals() -> Iterator[Callable[[], bool]]:
    """SIGTERM and SIGINT set a flag the master's loop reads; the old handlers come back after."""
    received: list[int] = []

    def note(signum: int, _frame: object) -> None:
        received.append(signum)

    previous = {s: signal.signal(s, note) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield lambda: bool(received)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
