"""Cross-replica locks: one runner per periodic job across ``serve`` processes."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, text

__all__ = ["advisory_lock"]


@contextmanager
def advisory_lock(engine: Engine, name: str) -> Iterator[bool]:
    """Try a PostgreSQL session advisory lock named ``name``; yields whether it is held.

    SQLite serves a single host, so there the lock is always held.
    """
    if engine.dialect.name != "postgresql":
        yield True
        return
    key = int.from_bytes(hashlib.sha256(f"iotpki:{name}".encode()).digest()[:8], "big", signed=True)
    with engine.connect() as conn:
        held = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())
        conn.commit()
        try:
            yield held
        finally:
            if held:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
