"""SQL for abuse counters: folded anonymous refusals and per-source enrollment-secret lockouts.

A mixin of :class:`iotpki.store.sql.SqlTransaction`. Counter rows are claimed with an insert
that does nothing on conflict followed by a locking read, so that concurrent refusals from one
source on several replicas update one row instead of failing on its key.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Row

from iotpki.core.models import RefusalCounter, SecretLockout
from iotpki.store import schema as s

__all__ = ["AbuseSql"]


def _counter(row: Row[Any]) -> RefusalCounter:
    return RefusalCounter(
        source=row.source,
        action=row.action,
        code=row.code,
        actor=row.actor,
        window_start=row.window_start,
        last_time=row.last_time,
        count=row.repeats,
        target=row.target,
        reason=row.reason,
    )


def _counter_values(counter: RefusalCounter) -> dict[str, object]:
    return {
        "source": counter.source[:64],
        "action": counter.action[:64],
        "code": counter.code[:64],
        "actor": counter.actor[:128],
        "window_start": counter.window_start,
        "last_time": counter.last_time,
        "repeats": counter.count,
        "target": counter.target[:256],
        "reason": counter.reason[:512],
    }


def _key(counter: RefusalCounter) -> Any:
    c = s.refusal_counters.c
    return and_(
        c.source == counter.source[:64],
        c.action == counter.action[:64],
        c.code == counter.code[:64],
    )


class AbuseSql:
    """Refusal counters and secret lockouts (mixed into ``SqlTransaction``)."""

    _conn: Connection
    _sqlite: bool

    def claim_refusal_counter(self, counter: RefusalCounter) -> tuple[RefusalCounter, bool]:
        """The locked counter of ``counter``'s key, inserted as given if absent (then True)."""
        dialect_insert = sqlite.insert if self._sqlite else postgresql.insert
        inserted = self._conn.execute(
            dialect_insert(s.refusal_counters)
            .values(_counter_values(counter))
            .on_conflict_do_nothing()
            .returning(s.refusal_counters.c.source)
        ).first()
        row = self._conn.execute(
            select(s.refusal_counters).where(_key(counter)).with_for_update()
        ).one()
        return _counter(row), inserted is not None

    def put_refusal_counter(self, counter: RefusalCounter) -> None:
        """Store a counter claimed in this transaction."""
        self._conn.execute(
            update(s.refusal_counters).where(_key(counter)).values(_counter_values(counter))
        )

    def closed_refusal_counters(self, before: datetime, limit: int) -> list[RefusalCounter]:
        """Locked counters whose window started before ``before``, oldest first."""
        c = s.refusal_counters.c
        rows = self._conn.execute(
            select(s.refusal_counters)
            .where(c.window_start < before)
            .order_by(c.window_start)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return [_counter(row) for row in rows]

    def delete_refusal_counter(self, counter: RefusalCounter) -> None:
        """Forget a counter (its window was written to the chain)."""
        self._conn.execute(delete(s.refusal_counters).where(_key(counter)))

    def secret_lockout(self, device_id: str, source: str) -> SecretLockout | None:
        """The failed guesses at a device's secrets from one source, if any."""
        c = s.secret_lockouts.c
        row = self._conn.execute(
            select(s.secret_lockouts).where(c.device_id == device_id, c.source == source[:64])
        ).first()
        if row is None:
            return None
        return SecretLockout(
            device_id=row.device_id,
            source=row.source,
            failures=row.failures,
            updated_at=row.updated_at,
            locked_until=row.locked_until,
        )

    def put_secret_lockout(self, record: SecretLockout) -> None:
        """Insert or replace the failed guesses of one device and source."""
        c = s.secret_lockouts.c
        self._conn.execute(
            delete(s.secret_lockouts).where(
                c.device_id == record.device_id, c.source == record.source[:64]
            )
        )
        self._conn.execute(
            s.secret_lockouts.insert().values(
                device_id=record.device_id,
                source=record.source[:64],
                failures=record.failures,
                updated_at=record.updated_at,
                locked_until=record.locked_until,
            )
        )

    def prune_secret_lockouts(self, device_id: str, before: datetime) -> None:
        """Forget a device's failure counts last updated before ``before``."""
        c = s.secret_lockouts.c
        self._conn.execute(
            delete(s.secret_lockouts).where(c.device_id == device_id, c.updated_at < before)
        )
