"""One runner at a time: the monitor's exclusive jobs take a PostgreSQL advisory lock
(``pg_try_advisory_lock``), so with several server processes on one database only one scans."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from iotpki.services.installation import Installation
from iotpki.services.jobs import Job, JobRunner
from iotpki.store.monitoring import SqlMonitoringStore
from iotpki.store.sql import SqlStore

from conftest import ManualClock, _postgres_database, make_installation

_HOLDER = """
import sys
from iotpki.store.monitoring import SqlMonitoringStore
from iotpki.store.sql import SqlStore

store = SqlMonitoringStore(SqlStore(sys.argv[1]))
with store.exclusive("monitoring.scan") as held:
    print("held" if held else "busy", flush=True)
    sys.stdin.readline()  # hold the lock until the parent closes our stdin
"""


@pytest.fixture
def pg(tmp_path: Path, clock: ManualClock) -> Iterator[tuple[Installation, str]]:
    databases = _postgres_database()
    url = next(databases)
    inst = make_installation(tmp_path / "home", url, clock=clock)
    try:
        yield inst, url
    finally:
        inst.close()
        databases.close()


def _replica(url: str) -> SqlMonitoringStore:
    """What another server process has: its own engine and connections."""
    return SqlMonitoringStore(SqlStore(url))


def test_the_lock_is_exclusive_across_connections(pg: tuple[Installation, str]) -> None:
    inst, url = pg
    first, second = SqlMonitoringStore(inst.store), _replica(url)
    with first.exclusive("monitoring.scan") as held:
        assert held
        with second.exclusive("monitoring.scan") as other:
            assert not other
        with second.exclusive("monitoring.deliver") as unrelated:
            assert unrelated  # each job has a lock of its own
    with second.exclusive("monitoring.scan") as after:
        assert after  # released when the holder's block ended
    second.engine.dispose()


def test_a_second_process_cannot_take_a_held_lock(pg: tuple[Installation, str]) -> None:
    inst, url = pg
    child = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "held"
        with SqlMonitoringStore(inst.store).exclusive("monitoring.scan") as held:
            assert not held
        child.stdin.close()
        assert child.wait(timeout=30) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    with SqlMonitoringStore(inst.store).exclusive("monitoring.scan") as held:
        assert held  # the process ended, and so did its session's lock


def test_only_one_runner_runs_an_exclusive_job(pg: tuple[Installation, str]) -> None:
    inst, url = pg
    started, release = threading.Event(), threading.Event()
    runs = {"a": 0, "b": 0}

    def slow_scan() -> None:
        runs["a"] += 1
        started.set()
        release.wait(timeout=30)

    def other_scan() -> None:
        runs["b"] += 1

    a = JobRunner(
        [Job("monitoring.scan", 60.0, slow_scan, exclusive=True)], _replica(url).exclusive
    )
    b = JobRunner(
        [Job("monitoring.scan", 60.0, other_scan, exclusive=True)],
        SqlMonitoringStore(inst.store).exclusive,
    )
    thread = threading.Thread(target=a.run_due)
    thread.start()
    try:
        assert started.wait(timeout=30)
        b.run_due()
        assert runs == {"a": 1, "b": 0}  # replica b skipped: a holds the lock
    finally:
        release.set()
        thread.join(timeout=30)
    b.wake()
    b.run_due()
    assert runs == {"a": 1, "b": 1}


def test_sqlite_has_a_single_host_and_always_runs(inst: Installation) -> None:
    with SqlMonitoringStore(inst.store).exclusive("monitoring.scan") as held:
        assert held
