"""Cross-process locks: one runner per job, one initialiser, one migrator.

On PostgreSQL these are advisory locks, so they hold across machines. A SQLite database serves
one machine, so there they are ``flock`` locks on a file beside the database, which hold across
the worker processes of one ``serve``. An in-memory database has a single process.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, Engine, text

__all__ = ["advisory_lock", "exclusive", "lock_key", "transaction_lock"]


def lock_key(name: str) -> int:
    """The 64-bit advisory lock key that stands for ``name``."""
    digest = hashlib.sha256(f"iotpki:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextmanager
def advisory_lock(engine: Engine, name: str) -> Iterator[bool]:
    """Try the lock named ``name`` without waiting; yields whether it is held."""
    if engine.dialect.name == "postgresql":
        with _pg_session_lock(engine, name, wait=False) as held:
            yield held
        return
    with _file_lock(engine, name, wait=False) as held:
        yield held


@contextmanager
def exclusive(engine: Engine, name: str) -> Iterator[None]:
    """Hold the lock named ``name``, waiting for another holder to let go."""
    if engine.dialect.name == "postgresql":
        with _pg_session_lock(engine, name, wait=True):
            yield
        return
    with _file_lock(engine, name, wait=True):
        yield


def transaction_lock(conn: Connection, name: str) -> None:
    """Take the lock named ``name`` until ``conn``'s transaction ends (PostgreSQL only).

    SQLite needs none: its write transactions already exclude each other.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_key(name)})


@contextmanager
def _pg_session_lock(engine: Engine, name: str, *, wait: bool) -> Iterator[bool]:
    key = lock_key(name)
    take = "pg_advisory_lock" if wait else "pg_try_advisory_lock"
    with engine.connect() as conn:
        result = conn.execute(text(f"SELECT {take}(:k)"), {"k": key}).scalar()
        held = wait or bool(result)
        conn.commit()
        try:
            yield held
        finally:
            if held:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()


@contextmanager
def _file_lock(engine: Engine, name: str, *, wait: bool) -> Iterator[bool]:
    database = engine.url.database
    if not database or database == ":memory:":
        yield True
        return
    path = Path(f"{database}.{name}.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
