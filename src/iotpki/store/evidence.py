"""SQL for the evidence the monitoring checks read: usage of certificates and key quality.

``MonitoringSql`` holds what every monitoring query shares (the engine, chunked ``IN``, write
transactions); ``SqlMonitoringStore`` builds the findings, audit and delivery side on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Connection,
    any_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
)
from sqlalchemy.exc import IntegrityError

from iotpki.core.models import CAStatus, CertStatus
from iotpki.core.monitoring import (
    UsageEvent,
)
from iotpki.store import schema as s
from iotpki.store.locks import advisory_lock
from iotpki.store.sql import SqlStore

__all__ = ["EvidenceSql", "MonitoringSql"]

_REVOKED = str(CertStatus.REVOKED)
_CHUNK = 500
_ARRAY_CHUNK = 10_000


class MonitoringSql:
    """The engine and query helpers shared by every part of the monitoring store."""

    def __init__(self, store: SqlStore) -> None:
        self.engine = store.engine
        self.dialect = store.dialect
        self._chunk = _ARRAY_CHUNK if self.dialect == "postgresql" else _CHUNK

    def _among(self, column: ColumnElement[Any], values: Sequence[Any]) -> ColumnElement[bool]:
        """``column IN values``; on PostgreSQL ``= ANY`` of one array parameter, which psycopg
        sends as it is, where a placeholder per value costs it a client-side parse each time."""
        if self.dialect == "postgresql":
            return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))
        return column.in_(values)

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            conn.info["iotpki_immediate"] = True  # SQLite: BEGIN IMMEDIATE, as SqlStore does
            with conn.begin():
                yield conn

    def exclusive(self, name: str) -> AbstractContextManager[bool]:
        """A lock held by one replica at a time (see ``store.locks``)."""
        return advisory_lock(self.engine, name)


class EvidenceSql(MonitoringSql):
    """Usage evidence (events, ingest nonces, who uses what) and key-quality results."""

    # -- usage evidence ---------------------------------------------------------------------

    def add_usage(self, events: Sequence[UsageEvent]) -> None:
        """Append usage events."""
        if not events:
            return
        rows = [
            {
                "time": e.time,
                "kind": e.kind[:16],
                "serial": e.serial[:64],
                "ca_name": e.ca_name,
                "client_id": e.client_id[:256] if e.client_id else None,
                "source": e.source[:128] if e.source else None,
                "reporter": e.reporter[:128],
            }
            for e in events
        ]
        with self._write() as conn:
            conn.execute(insert(s.usage_events), rows)

    def ingest(
        self, nonce: str, reporter: str, events: Sequence[UsageEvent], now: datetime
    ) -> bool:
        """Record a reporter's batch once: False (and nothing stored) if its nonce was seen."""
        try:
            with self._write() as conn:
                conn.execute(
                    insert(s.ingest_nonces).values(nonce=nonce, reporter=reporter, seen_at=now)
                )
                if events:
                    conn.execute(
                        insert(s.usage_events),
                        [
                            {
                                "time": e.time,
                                "kind": e.kind,
                                "serial": e.serial,
                                "ca_name": e.ca_name,
                                "client_id": e.client_id,
                                "source": e.source,
                                "reporter": e.reporter,
                            }
                            for e in events
                        ],
                    )
        except IntegrityError:
            return False
        return True

    def purge(self, usage_before: datetime, nonces_before: datetime) -> None:
        """Drop usage evidence and nonces older than their windows."""
        with self._write() as conn:
            conn.execute(delete(s.usage_events).where(s.usage_events.c.time < usage_before))
            conn.execute(delete(s.ingest_nonces).where(s.ingest_nonces.c.seen_at < nonces_before))

    def known_serials(self, serials: Iterable[str]) -> set[str]:
        """Which of these serials this installation issued."""
        wanted = list(set(serials))
        found: set[str] = set()
        with self.engine.connect() as conn:
            for i in range(0, len(wanted), _CHUNK):
                rows = conn.execute(
                    select(s.certificates.c.serial).where(
                        s.certificates.c.serial.in_(wanted[i : i + _CHUNK])
                    )
                )
                found.update(r[0] for r in rows)
        return found

    def usage_of(self, serial: str, limit: int = 50) -> list[UsageEvent]:
        """The latest usage evidence of a certificate."""
        u = s.usage_events.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(s.usage_events)
                .where(u.serial == serial)
                .order_by(u.time.desc())
                .limit(limit)
            )
            return [
                UsageEvent(r.time, r.kind, r.serial, r.reporter, r.ca_name, r.client_id, r.source)
                for r in rows
            ]

    def shared_certificates(self, since: datetime) -> list[tuple[str, list[str]]]:
        """Certificates seen from more than one source since ``since``: (serial, sources)."""
        u = s.usage_events.c
        with self.engine.connect() as conn:
            serials = [
                r[0]
                for r in conn.execute(
                    select(u.serial)
                    .where(u.time >= since, u.source.is_not(None))
                    .group_by(u.serial)
                    .having(func.count(u.source.distinct()) > 1)
                    .limit(10_000)
                )
            ]
            result = []
            for serial in serials:
                sources = conn.execute(
                    select(u.source)
                    .distinct()
                    .where(u.serial == serial, u.time >= since, u.source.is_not(None))
                    .limit(20)
                )
                result.append((serial, sorted(str(r[0]) for r in sources)))
        return result

    def conflicting_client_ids(self, since: datetime) -> list[tuple[str, list[str]]]:
        """Client IDs presented by certificates of several identities: (client ID, serials)."""
        u = s.usage_events.c
        c = s.certificates.c
        identity = func.coalesce(c.device_id, c.subject)
        with self.engine.connect() as conn:
            ids = [
                r[0]
                for r in conn.execute(
                    select(u.client_id)
                    .join(s.certificates, c.serial == u.serial)
                    .where(u.time >= since, u.client_id.is_not(None))
                    .group_by(u.client_id)
                    .having(func.count(identity.distinct()) > 1)
                    .limit(10_000)
                )
            ]
            result = []
            for client_id in ids:
                serials = conn.execute(
                    select(u.serial)
                    .distinct()
                    .where(u.client_id == client_id, u.time >= since)
                    .limit(20)
                )
                result.append((str(client_id), sorted(r[0] for r in serials)))
        return result

    def revoked_in_use(self, since: datetime) -> list[tuple[str, str, datetime, str | None]]:
        """Revoked certificates used after their revocation: (serial, CA, last use, device)."""
        u = s.usage_events.c
        c = s.certificates.c
        stmt = (
            select(c.serial, c.ca_name, func.max(u.time), c.device_id)
            .join(s.certificates, c.serial == u.serial)
            .where(u.time >= since, c.status == _REVOKED, u.time >= c.revoked_at)
            .where(or_(u.ca_name.is_(None), u.ca_name == c.ca_name))
            .group_by(c.serial, c.ca_name, c.device_id)
            .limit(10_000)
        )
        with self.engine.connect() as conn:
            return [(r[0], r[1], r[2], r[3]) for r in conn.execute(stmt)]

    def revoked_ca_in_use(self, since: datetime) -> list[tuple[str, str, datetime, str | None]]:
        """Certificates used whose issuing CA is revoked: (serial, CA, last use, device)."""
        u = s.usage_events.c
        c = s.certificates.c
        stmt = (
            select(c.serial, c.ca_name, func.max(u.time), c.device_id)
            .join(s.certificates, c.serial == u.serial)
            .join(s.cas, s.cas.c.name == c.ca_name)
            .where(u.time >= since, s.cas.c.status == str(CAStatus.REVOKED))
            .group_by(c.serial, c.ca_name, c.device_id)
            .limit(10_000)
        )
        with self.engine.connect() as conn:
            return [(r[0], r[1], r[2], r[3]) for r in conn.execute(stmt)]

    # -- key quality --------------------------------------------------------------------------

    def unchecked_keys(self, after_id: int, limit: int) -> list[tuple[int, str, bytes]]:
        """Certificates after ``after_id`` whose key has no recorded check: (id, key, DER)."""
        c = s.certificates.c
        k = s.key_checks.c
        stmt = (
            select(c.id, c.key_fingerprint, c.der)
            .outerjoin(s.key_checks, k.fingerprint == c.key_fingerprint)
            .where(c.id > after_id, k.fingerprint.is_(None))
            .order_by(c.id)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [(r[0], r[1], r[2]) for r in conn.execute(stmt)]

    def max_certificate_id(self) -> int:
        """The highest certificate id (0 when empty)."""
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.max(s.certificates.c.id))).scalar() or 0)

    def record_key_checks(self, results: dict[str, tuple[str, str]], now: datetime) -> None:
        """Store key-quality results: fingerprint -> (result, detail)."""
        if not results:
            return
        rows = [
            {"fingerprint": fp, "result": res, "detail": detail, "checked_at": now}
            for fp, (res, detail) in results.items()
        ]
        with self._write() as conn:
            existing: set[str] = set()
            keys = list(results)
            for i in range(0, len(keys), _CHUNK):
                existing.update(
                    r[0]
                    for r in conn.execute(
                        select(s.key_checks.c.fingerprint).where(
                            s.key_checks.c.fingerprint.in_(keys[i : i + _CHUNK])
                        )
                    )
                )
            fresh = [r for r in rows if r["fingerprint"] not in existing]
            if fresh:
                conn.execute(insert(s.key_checks), fresh)

    def weak_keys(self) -> list[tuple[str, str, list[tuple[str, str, str | None]]]]:
        """Weak keys still certified: (fingerprint, detail, [(serial, CA, device)])."""
        c = s.certificates.c
        k = s.key_checks.c
        result: dict[str, tuple[str, list[tuple[str, str, str | None]]]] = {}
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(k.fingerprint, k.detail, c.serial, c.ca_name, c.device_id)
                .join(s.certificates, c.key_fingerprint == k.fingerprint)
                .where(k.result == "weak")
                .limit(10_000)
            )
            for r in rows:
                entry = result.setdefault(r[0], (r[1], []))
                entry[1].append((r[2], r[3], r[4]))
        return [(fp, detail, holders) for fp, (detail, holders) in result.items()]

    def shared_keys(self) -> list[tuple[str, list[tuple[str, str, str | None]]]]:
        """Public keys certified for more than one identity: (fingerprint, holders)."""
        c = s.certificates.c
        identity = func.coalesce(c.device_id, c.subject)
        with self.engine.connect() as conn:
            keys = [
                r[0]
                for r in conn.execute(
                    select(c.key_fingerprint)
                    .group_by(c.key_fingerprint)
                    .having(func.count(identity.distinct()) > 1)
                    .limit(10_000)
                )
            ]
            result = []
            for fp in keys:
                holders = conn.execute(
                    select(c.serial, c.ca_name, c.device_id)
                    .where(c.key_fingerprint == fp)
                    .limit(20)
                )
                result.append((fp, [(r[0], r[1], r[2]) for r in holders]))
        return result
