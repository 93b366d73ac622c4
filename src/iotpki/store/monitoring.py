"""SQL for operations monitoring, beside ``SqlStore`` on the same engine.

Findings, audit-derived rates, expiry and age queries, alert deliveries and dashboard users, on
top of the usage and key-quality evidence of ``store.evidence``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Select,
    bindparam,
    case,
    delete,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import Row

from iotpki.core.audit import REPEATED
from iotpki.core.models import AuditEvent, CertStatus
from iotpki.core.monitoring import (
    Delivery,
    FindingChange,
    FindingRecord,
    Observation,
)
from iotpki.store import schema as s
from iotpki.store.evidence import _CHUNK, EvidenceSql

__all__ = ["SqlMonitoringStore"]

_VALID = str(CertStatus.VALID)
_FINDING_COLUMNS = tuple(column.name for column in s.findings.c)
_FINDING_TIMES = tuple(
    i for i, column in enumerate(s.findings.c) if isinstance(column.type, s.UTCDateTime)
)
_COPY_FINDINGS = "COPY findings ({}) FROM STDIN".format(
    ", ".join(f'"{name}"' for name in _FINDING_COLUMNS)
)
_NEXT_FINDING_IDS = text(
    "SELECT nextval(pg_get_serial_sequence('findings', 'id')) FROM generate_series(1, :n)"
)


def _finding(row: Row[Any]) -> FindingRecord:
    return FindingRecord(
        id=row.id,
        check=row.check,
        key=row.key,
        severity=row.severity,
        status=row.status,
        summary=row.summary,
        ca_name=row.ca_name,
        serial=row.serial,
        device_id=row.device_id,
        evidence=json.loads(row.evidence),
        state=row.state,
        alerted_state=row.alerted_state,
        first_seen=row.first_seen,
        last_seen=row.last_seen,
        resolved_at=row.resolved_at,
    )


def _delivery(row: Row[Any]) -> Delivery:
    return Delivery(
        id=row.id,
        finding_id=row.finding_id,
        target=row.target,
        event=row.event,
        payload=row.payload,
        status=row.status,
        attempts=row.attempts,
        http_status=row.http_status,
        last_error=row.last_error,
        created_at=row.created_at,
        next_attempt_at=row.next_attempt_at,
        delivered_at=row.delivered_at,
    )


def _naive(value: datetime) -> datetime:
    """A time as ``UTCDateTime`` stores it: naive UTC."""
    return value.astimezone(UTC).replace(tzinfo=None)


def _evidence(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, default=str)[:65536]


class SqlMonitoringStore(EvidenceSql):
    """Monitoring state and the read queries of the dashboard, checks and report."""

    def _findings_among(self, keys: Sequence[tuple[str, str]]) -> Select[Any]:
        """Findings whose (check, key) may be among ``keys`` (the caller keeps the exact pairs).

        Two lists rather than a row-value IN: PostgreSQL cannot use the (check, key) index for
        the latter and scans the table once per chunk.
        """
        f = s.findings.c
        return select(s.findings).where(
            f.check.in_(sorted({c for c, _ in keys})),
            self._among(f.key, sorted({k for _, k in keys})),
        )

    # -- findings ---------------------------------------------------------------------------

    def sync_findings(
        self, checks: Sequence[str], observed: Sequence[Observation], now: datetime
    ) -> list[FindingChange]:
        """Record one run of ``checks``: open or refresh what was observed, resolve the rest."""
        f = s.findings.c
        changes: list[FindingChange] = []
        by_key = {(o.check, o.key): o for o in observed}
        with self._write() as conn:
            open_rows = {
                (r.check, r.key): r
                for r in conn.execute(
                    select(s.findings).where(f.status == "open", f.check.in_(list(checks)))
                )
            }
            missing = [k for k in by_key if k not in open_rows]
            earlier: dict[tuple[str, str], Row[Any]] = {}
            for i in range(0, len(missing), self._chunk):
                chunk = missing[i : i + self._chunk]
                for r in conn.execute(self._findings_among(chunk)):
                    if (r.check, r.key) in by_key:
                        earlier[(r.check, r.key)] = r
            inserts: list[dict[str, Any]] = []
            for key, obs in by_key.items():
                values = {
                    "severity": obs.severity,
                    "status": "open",
                    "summary": obs.summary[:512],
                    "ca_name": obs.ca_name,
                    "serial": obs.serial,
                    "device_id": obs.device_id,
                    "evidence": _evidence(obs.evidence),
                    "state": obs.state,
                    "last_seen": now,
                    "resolved_at": None,
                }
                row = open_rows.get(key) or earlier.get(key)
                if row is None:
                    inserts.append(
                        {"check": obs.check, "key": obs.key[:256], "first_seen": now, **values}
                    )
                elif row.status != "open" or row.state != obs.state:
                    conn.execute(update(s.findings).where(f.id == row.id).values(**values))
                    event = "changed" if row.status == "open" else "opened"
                    changes.append(FindingChange(event, _finding_after(row, values)))
            gone = [r for k, r in open_rows.items() if k not in by_key]
            for i in range(0, len(gone), _CHUNK):
                conn.execute(
                    update(s.findings)
                    .where(f.id.in_([r.id for r in gone[i : i + _CHUNK]]))
                    .values(status="resolved", resolved_at=now)
                )
            # Every finding still open was observed in this run: one statement refreshes them.
            conn.execute(
                update(s.findings)
                .where(f.status == "open", f.check.in_(list(checks)), f.last_seen != now)
                .values(last_seen=now)
            )
            for values in self._insert_findings(conn, inserts):
                changes.append(FindingChange("opened", _finding_values(values)))
            for r in gone:
                resolved = _finding_after(r, {"status": "resolved", "resolved_at": now})
                changes.append(FindingChange("resolved", resolved))
        return changes

    def _insert_findings(
        self, conn: Connection, rows: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Insert new findings in one batch; the rows are returned with their ids.

        The ids are taken first, so nothing is read back: on PostgreSQL from the table's
        sequence in one query, then the rows go in by ``COPY`` (``INSERT ... RETURNING`` in
        multi-row batches costs psycopg a client-side parse of every batch); on SQLite after the
        highest id, under the write lock ``_write`` holds, then one ``executemany``.
        """
        if not rows:
            return []
        if self.dialect != "postgresql":
            highest = int(conn.execute(select(func.max(s.findings.c.id))).scalar() or 0)
            ids = range(highest + 1, highest + 1 + len(rows))
            added = [{"id": i, "alerted_state": None, **r} for i, r in zip(ids, rows, strict=True)]
            conn.execute(insert(s.findings), added)
            return added
        taken = conn.execute(_NEXT_FINDING_IDS, {"n": len(rows)}).scalars()
        added = [{"id": i, "alerted_state": None, **r} for i, r in zip(taken, rows, strict=True)]
        stored: dict[datetime, datetime] = {}  # the rows share their times: convert each once
        driver: Any = conn.connection.driver_connection
        with driver.cursor() as cursor, cursor.copy(_COPY_FINDINGS) as copy:
            for row in added:
                values = [row[name] for name in _FINDING_COLUMNS]
                for i in _FINDING_TIMES:
                    if (value := values[i]) is not None:
                        values[i] = stored.get(value) or stored.setdefault(value, _naive(value))
                copy.write_row(values)
        return added

    def list_findings(
        self,
        *,
        status: str | None = "open",
        check: str | None = None,
        serial: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[FindingRecord]:
        """Findings, most severe and newest first."""
        f = s.findings.c
        stmt = select(s.findings)
        if status is not None:
            stmt = stmt.where(f.status == status)
        if check is not None:
            stmt = stmt.where(f.check == check)
        if serial is not None:
            stmt = stmt.where(f.serial == serial)
        order = case(
            (f.severity == "critical", 0),
            (f.severity == "high", 1),
            (f.severity == "medium", 2),
            else_=3,
        )
        stmt = stmt.order_by(order, f.last_seen.desc(), f.id.desc()).limit(limit).offset(offset)
        with self.engine.connect() as conn:
            return [_finding(r) for r in conn.execute(stmt)]

    def get_finding(self, finding_id: int) -> FindingRecord | None:
        """A finding by id."""
        with self.engine.connect() as conn:
            row = conn.execute(select(s.findings).where(s.findings.c.id == finding_id)).first()
        return None if row is None else _finding(row)

    def open_findings_by_check(self) -> dict[tuple[str, str], int]:
        """How many findings are open, by (check, severity)."""
        f = s.findings.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(f.check, f.severity, func.count())
                .where(f.status == "open")
                .group_by(f.check, f.severity)
            )
            return {(r[0], r[1]): int(r[2]) for r in rows}

    def mark_alerted(self, alerted: Sequence[tuple[int, str]]) -> None:
        """Remember which state of each finding (id, state) has been alerted: one batch."""
        if not alerted:
            return
        stmt = (
            update(s.findings)
            .where(s.findings.c.id == bindparam("finding_id"))
            .values(alerted_state=bindparam("alerted"))
        )
        with self._write() as conn:
            conn.execute(stmt, [{"finding_id": i, "alerted": state} for i, state in alerted])

    # -- audit-derived rates ------------------------------------------------------------------

    def audit_counts(self, since: datetime, actions: Sequence[str]) -> dict[str, int]:
        """How many audit events of each action (``%`` patterns allowed) since a time.

        Folded refusals count in full: a summary entry as the repeats it stands for, and the
        repeats of windows still open from the refusal counters.
        """
        a = s.audit_events.c
        r = s.refusal_counters.c
        clauses = [a.action.like(p) if "%" in p else a.action == p for p in actions]
        pending = [r.action.like(p) if "%" in p else r.action == p for p in actions]
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(a.action, func.count())
                .where(a.time >= since, or_(*clauses))
                .group_by(a.action)
            )
            counts = {row[0]: int(row[1]) for row in rows}
            summaries = conn.execute(
                select(a.action, a.data).where(
                    a.time >= since, or_(*clauses), a.data.like(f'%"{REPEATED}":%')
                )
            )
            for action, data in summaries:
                repeated = json.loads(data).get(REPEATED)
                if isinstance(repeated, int):
                    counts[action] += repeated - 1
            open_windows = conn.execute(
                select(r.action, func.sum(r.repeats))
                .where(r.last_time >= since, r.repeats > 0, or_(*pending))
                .group_by(r.action)
            )
            for action, repeats in open_windows:
                counts[action] = counts.get(action, 0) + int(repeats)
            return counts

    def audit_top_targets(
        self, since: datetime, actions: Sequence[str], limit: int = 10
    ) -> list[tuple[str, int]]:
        """The targets most often named by these actions since a time."""
        a = s.audit_events.c
        clauses = [a.action.like(p) if "%" in p else a.action == p for p in actions]
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(a.target, func.count().label("n"))
                .where(a.time >= since, or_(*clauses))
                .group_by(a.target)
                .order_by(text("n DESC"))
                .limit(limit)
            )
            return [(r[0], int(r[1])) for r in rows]

    def audit_page(self, before_seq: int | None, limit: int) -> list[AuditEvent]:
        """Audit events, newest first, before a sequence number."""
        a = s.audit_events.c
        stmt = select(s.audit_events).order_by(a.seq.desc()).limit(limit)
        if before_seq is not None:
            stmt = stmt.where(a.seq < before_seq)
        with self.engine.connect() as conn:
            return [
                AuditEvent(
                    r.seq,
                    r.time,
                    r.actor,
                    r.action,
                    r.target,
                    json.loads(r.data),
                    r.prev_hash,
                    r.hash,
                )
                for r in conn.execute(stmt)
            ]

    # -- expiry and age -------------------------------------------------------------------------

    def expiring(
        self, now: datetime, horizon: datetime, expired_since: datetime
    ) -> list[tuple[str, str, str, str | None, str, datetime, datetime]]:
        """Valid certificates ending before ``horizon`` (and not before ``expired_since``) whose
        device holds no later certificate:
        (serial, CA, profile, device, subject, not_after, not_before)."""
        c = s.certificates.c
        stmt = select(
            c.serial, c.ca_name, c.profile, c.device_id, c.subject, c.not_after, c.not_before
        ).where(
            c.status == _VALID,
            c.not_after < horizon,
            c.not_after >= expired_since,
            c.profile != "sub-ca",
        )
        # Which of those devices hold a later valid certificate: asked by device ID in chunks
        # (the device index), not as a correlated subquery, which SQLite plans by expiry and
        # so turns quadratic on a large fleet.
        with self.engine.connect() as conn:
            rows = [(r[0], r[1], r[2], r[3], r[4], r[5], r[6]) for r in conn.execute(stmt)]
            devices = sorted({r[3] for r in rows if r[3] is not None})
            latest: dict[str, datetime] = {}
            for i in range(0, len(devices), self._chunk):
                # Only the device index may serve this (status is filtered here): with a
                # status condition SQLite prefers the status index and scans the fleet.
                chunk = conn.execute(
                    select(c.device_id, c.status, c.not_after).where(
                        self._among(c.device_id, devices[i : i + self._chunk])
                    )
                )
                for device, status, not_after in chunk:
                    if status == _VALID and (device not in latest or not_after > latest[device]):
                        latest[device] = not_after
        return [r for r in rows if r[3] is None or latest.get(r[3], r[5]) <= r[5]]

    def older_than(
        self, profile: str, issued_before: datetime, now: datetime, limit: int = 10_000
    ) -> list[tuple[str, str, str | None, datetime]]:
        """Valid, unexpired certificates of a profile older than a time."""
        c = s.certificates.c
        stmt = (
            select(c.serial, c.ca_name, c.device_id, c.not_before)
            .where(
                c.profile == profile,
                c.status == _VALID,
                c.not_before < issued_before,
                c.not_after >= now,
            )
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [(r[0], r[1], r[2], r[3]) for r in conn.execute(stmt)]

    # -- alert deliveries -------------------------------------------------------------------

    def add_deliveries(self, rows: Sequence[dict[str, Any]]) -> None:
        """Queue alert deliveries (finding_id, target, event, payload, created_at)."""
        if not rows:
            return
        with self._write() as conn:
            conn.execute(
                insert(s.alert_deliveries),
                [
                    {
                        **r,
                        "status": "pending",
                        "attempts": 0,
                        "next_attempt_at": r["created_at"],
                    }
                    for r in rows
                ],
            )

    def due_deliveries(self, now: datetime, limit: int = 100) -> list[Delivery]:
        """Pending deliveries whose next attempt is due."""
        d = s.alert_deliveries.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(s.alert_deliveries)
                .where(d.status == "pending", d.next_attempt_at <= now)
                .order_by(d.id)
                .limit(limit)
            )
            return [_delivery(r) for r in rows]

    def update_delivery(self, delivery_id: int, **values: Any) -> None:
        """Record an attempt's outcome."""
        with self._write() as conn:
            conn.execute(
                update(s.alert_deliveries)
                .where(s.alert_deliveries.c.id == delivery_id)
                .values(**values)
            )

    def list_deliveries(self, limit: int = 100) -> list[Delivery]:
        """The latest deliveries."""
        d = s.alert_deliveries.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(s.alert_deliveries).order_by(d.id.desc()).limit(limit))
            return [_delivery(r) for r in rows]

    # -- dashboard users ----------------------------------------------------------------------

    def put_user(self, username: str, role: str, password_hash: str, now: datetime) -> None:
        """Create or replace a dashboard user."""
        u = s.users.c
        with self._write() as conn:
            conn.execute(delete(s.users).where(u.username == username))
            conn.execute(
                insert(s.users).values(
                    username=username,
                    role=role,
                    password_hash=password_hash,
                    created_at=now,
                    disabled=False,
                )
            )

    def get_user(self, username: str) -> tuple[str, str, bool] | None:
        """A user's (role, password hash, disabled)."""
        with self.engine.connect() as conn:
            row = conn.execute(select(s.users).where(s.users.c.username == username)).first()
        return None if row is None else (row.role, row.password_hash, bool(row.disabled))


def _finding_values(values: dict[str, Any]) -> FindingRecord:
    """The record of a finding from the values it was inserted with."""
    return FindingRecord(**{**values, "evidence": json.loads(values["evidence"])})


def _finding_after(row: Row[Any], values: dict[str, Any]) -> FindingRecord:
    base = _finding(row)
    merged = {
        "id": base.id,
        "check": base.check,
        "key": base.key,
        "severity": values.get("severity", base.severity),
        "status": values.get("status", base.status),
        "summary": values.get("summary", base.summary),
        "ca_name": values.get("ca_name", base.ca_name),
        "serial": values.get("serial", base.serial),
        "device_id": values.get("device_id", base.device_id),
        "evidence": json.loads(values["evidence"]) if "evidence" in values else base.evidence,
        "state": values.get("state", base.state),
        "alerted_state": base.alerted_state,
        "first_seen": base.first_seen,
        "last_seen": values.get("last_seen", base.last_seen),
        "resolved_at": values.get("resolved_at", base.resolved_at),
    }
    return FindingRecord(**merged)
