"""The ``Store`` port on SQLAlchemy Core: SQLite (WAL) by default, PostgreSQL by URL."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.pool import NullPool

from iotpki.core.audit import GENESIS, canonical_encoding, chain_hash
from iotpki.core.models import (
    AuditEvent,
    CAKind,
    CARecord,
    CAStatus,
    CertificateQuery,
    CertificateRecord,
    CertStatus,
    DeviceRecord,
    DeviceStatus,
    LintFinding,
    RevocationReason,
)
from iotpki.errors import BackendError, Conflict
from iotpki.store import schema as s
from iotpki.store.abuse import AbuseSql
from iotpki.store.attestation import AttestationSql
from iotpki.store.auth import AuthSql
from iotpki.store.campaigns import CampaignSql
from iotpki.store.enrollment import EnrollmentSql
from iotpki.store.locks import exclusive
from iotpki.store.scep import ScepSql
from iotpki.store.shared import SharedStateSql

__all__ = ["SqlStore", "SqlTransaction"]

_MAX_PAGE = 1000

# Statements on the issuance path, built once: SQLAlchemy then reuses their compiled form
# instead of rebuilding and re-keying a new statement on every call.
_CA_BY_NAME = select(s.cas).where(s.cas.c.name == bindparam("name"))
_CERTIFICATES_BY_KEY = select(s.certificates).where(
    s.certificates.c.key_fingerprint == bindparam("fingerprint")
)
_DEVICE_BY_ID = select(s.devices).where(s.devices.c.device_id == bindparam("device_id"))


class _Raw:
    """A statement run on the DBAPI connection itself, inside the SQLAlchemy transaction.

    Used where a statement runs on every issuance: SQLAlchemy's per-execute cost (~60 us)
    would otherwise be several times that of the statement. Written with ``:name``
    placeholders (sqlite3's named style) and translated once to psycopg's ``%(name)s``.
    """

    def __init__(self, sql: str) -> None:
        self.named = sql
        self.pyformat = re.sub(r":(\w+)", r"%(\1)s", sql)


_RAW_BLOCKED = _Raw("SELECT 1 FROM blocked_keys WHERE fingerprint = :fingerprint")
_RAW_KEY_HOLDERS = _Raw(
    "SELECT serial, device_id, subject FROM certificates WHERE key_fingerprint = :fingerprint"
)
_RAW_DEVICE_STATUS = _Raw("SELECT status FROM devices WHERE device_id = :device_id")
_RAW_INSERT_DEVICE = _Raw(
    "INSERT INTO devices (device_id, status, metadata, created_at) "
    "VALUES (:device_id, :status, :metadata, :created_at)"
)
_CERTIFICATE_COLUMNS = (
    "ca_name, serial, profile, device_id, subject, sans, not_before, not_after, "
    "key_fingerprint, key_algorithm, der, status, issued_at, lint_status, crl_partition"
)
_RAW_INSERT_CERTIFICATE = _Raw(
    f"INSERT INTO certificates ({_CERTIFICATE_COLUMNS}) VALUES ("
    + ", ".join(f":{c.strip()}" for c in _CERTIFICATE_COLUMNS.split(","))
    + ")"
)
_RAW_AUDIT_HEAD = {
    "sqlite": _Raw("SELECT seq, hash FROM audit_head WHERE id = 1"),
    "postgresql": _Raw("SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE"),
}
_RAW_INSERT_AUDIT = _Raw(
    "INSERT INTO audit_events (seq, time, actor, action, target, data, prev_hash, hash) "
    "VALUES (:seq, :time, :actor, :action, :target, :data, :prev_hash, :hash)"
)
_RAW_MOVE_AUDIT_HEAD = _Raw("UPDATE audit_head SET seq = :seq, hash = :hash WHERE id = 1")


def _json(data: object) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


def _ca(row: Row[Any]) -> CARecord:
    return CARecord(
        name=row.name,
        kind=CAKind(row.kind),
        status=CAStatus(row.status),
        parent=row.parent,
        key_backend=row.key_backend,
        key_ref=row.key_ref,
        certificate_der=row.certificate_der,
        csr_der=row.csr_der,
        created_at=row.created_at,
    )


def _certificate(row: Row[Any]) -> CertificateRecord:
    return CertificateRecord(
        serial=row.serial,
        ca_name=row.ca_name,
        profile=row.profile,
        device_id=row.device_id,
        subject=row.subject,
        sans=tuple(json.loads(row.sans)),
        not_before=row.not_before,
        not_after=row.not_after,
        key_fingerprint=row.key_fingerprint,
        key_algorithm=row.key_algorithm,
        der=row.der,
        status=CertStatus(row.status),
        revoked_at=row.revoked_at,
        revocation_reason=RevocationReason(row.revocation_reason)
        if row.revocation_reason
        else None,
        invalidity_date=row.invalidity_date,
        issued_at=row.issued_at,
        lint_status=row.lint_status,
        crl_partition=row.crl_partition,
    )


def _audit(row: Row[Any]) -> AuditEvent:
    return AuditEvent(
        seq=row.seq,
        time=row.time,
        actor=row.actor,
        action=row.action,
        target=row.target,
        data=json.loads(row.data),
        prev_hash=row.prev_hash,
        hash=row.hash,
    )


class SqlTransaction(EnrollmentSql, ScepSql, AttestationSql, AuthSql, AbuseSql, CampaignSql):
    """The ``StoreTransaction`` port over one SQLAlchemy connection in a transaction."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._sqlite = conn.dialect.name == "sqlite"
        self._dialect = conn.dialect.name

    def _raw(self, statement: _Raw, params: dict[str, Any]) -> Any:
        """Run a raw statement in this transaction; returns the DBAPI cursor."""
        cursor = self._conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        cursor.execute(statement.named if self._sqlite else statement.pyformat, params)
        return cursor

    def _time(self, value: datetime | None) -> object:
        """A timestamp as the UTCDateTime column stores it (naive UTC; text on SQLite)."""
        if value is None:
            return None
        naive = value.astimezone(UTC).replace(tzinfo=None)
        return naive.strftime("%Y-%m-%d %H:%M:%S.%f") if self._sqlite else naive

    def get_ca(self, name: str) -> CARecord | None:
        """The CA of that name, if any."""
        row = self._conn.execute(_CA_BY_NAME, {"name": name}).first()
        return None if row is None else _ca(row)

    def list_cas(self) -> list[CARecord]:
        """Every CA, oldest first."""
        rows = self._conn.execute(
            select(s.cas).order_by(s.cas.c.kind.desc(), s.cas.c.created_at, s.cas.c.name)
        )
        return [_ca(row) for row in rows]

    def put_ca(self, record: CARecord) -> None:
        """Insert a CA or replace the one of the same name."""
        values = {
            "kind": str(record.kind),
            "status": str(record.status),
            "parent": record.parent,
            "key_backend": record.key_backend,
            "key_ref": record.key_ref,
            "certificate_der": record.certificate_der,
            "csr_der": record.csr_der,
            "created_at": record.created_at,
        }
        done = self._conn.execute(update(s.cas).where(s.cas.c.name == record.name).values(values))
        if done.rowcount == 0:
            self._conn.execute(insert(s.cas).values(name=record.name, **values))

    def add_certificate(self, record: CertificateRecord) -> None:
        """Insert a certificate; a repeated (CA, serial) fails the transaction (``Conflict``)."""
        self._raw(
            _RAW_INSERT_CERTIFICATE,
            {
                "ca_name": record.ca_name,
                "serial": record.serial,
                "profile": record.profile,
                "device_id": record.device_id,
                "subject": record.subject,
                "sans": json.dumps(list(record.sans)),
                "not_before": self._time(record.not_before),
                "not_after": self._time(record.not_after),
                "key_fingerprint": record.key_fingerprint,
                "key_algorithm": record.key_algorithm,
                "der": record.der,
                "status": str(record.status),
                "issued_at": self._time(record.issued_at),
                "lint_status": record.lint_status,
                "crl_partition": record.crl_partition,
            },
        )

    def get_certificate(self, ca_name: str | None, serial: str) -> CertificateRecord | None:
        """A certificate by serial, within one CA or across all."""
        query = select(s.certificates).where(s.certificates.c.serial == serial)
        if ca_name is not None:
            query = query.where(s.certificates.c.ca_name == ca_name)
        rows = self._conn.execute(query.limit(2)).all()
        if len(rows) > 1:
            raise Conflict(f"serial {serial} exists in several CAs: name the CA", serial=serial)
        return _certificate(rows[0]) if rows else None

    def certificates_with_key(self, fingerprint: str) -> list[CertificateRecord]:
        """Every certificate whose public key has this fingerprint."""
        rows = self._conn.execute(_CERTIFICATES_BY_KEY, {"fingerprint": fingerprint})
        return [_certificate(row) for row in rows]

    def is_key_blocked(self, fingerprint: str) -> bool:
        """Whether this key was revoked for key compromise."""
        cursor = self._raw(_RAW_BLOCKED, {"fingerprint": fingerprint})
        return cursor.fetchone() is not None

    def key_holders(self, fingerprint: str) -> list[tuple[str, str | None, str]]:
        """(serial, device ID, subject) of every certificate with this key."""
        cursor = self._raw(_RAW_KEY_HOLDERS, {"fingerprint": fingerprint})
        return [(row[0], row[1], row[2]) for row in cursor.fetchall()]

    def device_status(self, device_id: str) -> str | None:
        """The registry status of a device, or None when it is not registered."""
        row = self._raw(_RAW_DEVICE_STATUS, {"device_id": device_id}).fetchone()
        return None if row is None else str(row[0])

    def block_key(self, fingerprint: str, reason: str, at: datetime) -> None:
        """Refuse this key from now on."""
        if not self.is_key_blocked(fingerprint):
            self._conn.execute(
                insert(s.blocked_keys).values(fingerprint=fingerprint, reason=reason, blocked_at=at)
            )

    def mark_revoked(
        self,
        ca_name: str,
        serial: str,
        at: datetime,
        reason: RevocationReason,
        invalidity_date: datetime | None,
    ) -> None:
        """Record a revocation."""
        self._conn.execute(
            update(s.certificates)
            .where(s.certificates.c.ca_name == ca_name, s.certificates.c.serial == serial)
            .values(
                status=str(CertStatus.REVOKED),
                revoked_at=at,
                revocation_reason=str(reason),
                invalidity_date=invalidity_date,
            )
        )

    def list_certificates(self, query: CertificateQuery, now: datetime) -> list[CertificateRecord]:
        """Certificates matching the query, newest first, one page."""
        c = s.certificates.c
        stmt = select(s.certificates)
        if query.status is not None:
            stmt = stmt.where(c.status == str(query.status))
        if query.ca_name is not None:
            stmt = stmt.where(c.ca_name == query.ca_name)
        if query.profile is not None:
            stmt = stmt.where(c.profile == query.profile)
        if query.device_id is not None:
            stmt = stmt.where(c.device_id == query.device_id)
        if query.subject_contains:
            literal = query.subject_contains.replace("\\", "\\\\")
            literal = literal.replace("%", "\\%").replace("_", "\\_")
            pattern = f"%{literal}%"
            stmt = stmt.where(
                or_(c.subject.like(pattern, escape="\\"), c.sans.like(pattern, escape="\\"))
            )
        if query.expiring_before is not None:
            stmt = stmt.where(c.not_after < query.expiring_before)
        if not query.include_expired:
            stmt = stmt.where(c.not_after >= now)
        limit = max(1, min(query.limit, _MAX_PAGE))
        stmt = stmt.order_by(c.id.desc()).limit(limit).offset(max(0, query.offset))
        return [_certificate(row) for row in self._conn.execute(stmt)]

    def get_device(self, device_id: str) -> DeviceRecord | None:
        """A device of the registry."""
        row = self._conn.execute(_DEVICE_BY_ID, {"device_id": device_id}).first()
        if row is None:
            return None
        return DeviceRecord(
            device_id=row.device_id,
            status=DeviceStatus(row.status),
            metadata=json.loads(row.metadata),
            created_at=row.created_at,
        )

    def add_device(self, record: DeviceRecord) -> None:
        """Insert a device that is not in the registry yet."""
        self._raw(
            _RAW_INSERT_DEVICE,
            {
                "device_id": record.device_id,
                "status": record.status,
                "metadata": _json(record.metadata),
                "created_at": self._time(record.created_at),
            },
        )

    def put_device(self, record: DeviceRecord) -> None:
        """Insert or update a device."""
        values = {"status": record.status, "metadata": _json(record.metadata)}
        done = self._conn.execute(
            update(s.devices).where(s.devices.c.device_id == record.device_id).values(values)
        )
        if done.rowcount == 0:
            self._conn.execute(
                insert(s.devices).values(
                    device_id=record.device_id, created_at=record.created_at, **values
                )
            )

    def append_audit(
        self, time: datetime, actor: str, action: str, target: str, data: dict[str, object]
    ) -> AuditEvent:
        """Append one event, locking the chain head so that the chain stays linear."""
        head_seq, prev_hash = self._raw(_RAW_AUDIT_HEAD[self._dialect], {}).fetchone()
        seq = head_seq + 1
        encoded = _json(data)
        data = json.loads(encoded)
        digest = chain_hash(prev_hash, canonical_encoding(seq, time, actor, action, target, data))
        self._raw(
            _RAW_INSERT_AUDIT,
            {
                "seq": seq,
                "time": self._time(time),
                "actor": actor,
                "action": action,
                "target": target[:256],
                "data": encoded,
                "prev_hash": prev_hash,
                "hash": digest,
            },
        )
        self._raw(_RAW_MOVE_AUDIT_HEAD, {"seq": seq, "hash": digest})
        return AuditEvent(seq, time, actor, action, target[:256], data, prev_hash, digest)


class SqlStore(SharedStateSql):
    """The ``Store`` port for SQLite or PostgreSQL."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self.dialect = url.split(":", 1)[0].split("+", 1)[0]
        self.engine = _engine(url, echo)

    def migrate(self) -> None:
        """Bring the schema to the latest revision (Alembic) and seed the audit head."""
        from iotpki.store.migrate import upgrade

        upgrade(self.engine)

    def waiting_lock(self, name: str) -> AbstractContextManager[None]:
        """Hold the cross-process lock ``name``, waiting while another process holds it."""
        return exclusive(self.engine, name)

    @contextmanager
    def transaction(self, *, readonly: bool = False) -> Iterator[SqlTransaction]:
        """A unit of work: commit on normal exit, roll back on an exception."""
        try:
            with self.engine.connect() as conn:
                conn.info["iotpki_immediate"] = not readonly
                with conn.begin():
                    yield SqlTransaction(conn)
        except IntegrityError as exc:
            raise Conflict(f"the change conflicts with stored data: {exc.orig}") from exc
        except OperationalError as exc:
            raise BackendError(f"database unavailable: {exc.orig}") from exc

    def audit_events(self, after_seq: int = 0) -> Iterator[AuditEvent]:
        """Audit events in sequence order, streamed in pages."""
        last = after_seq
        while True:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    select(s.audit_events)
                    .where(s.audit_events.c.seq > last)
                    .order_by(s.audit_events.c.seq)
                    .limit(5000)
                ).all()
            if not rows:
                return
            for row in rows:
                yield _audit(row)
            last = rows[-1].seq

    def latest_audit(self, action: str) -> AuditEvent | None:
        """The newest audit event with this action."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(s.audit_events)
                .where(s.audit_events.c.action == action)
                .order_by(s.audit_events.c.seq.desc())
                .limit(1)
            ).first()
        return None if row is None else _audit(row)

    def audit_head(self) -> tuple[int, str]:
        """Sequence number and hash recorded as the chain's head."""
        with self.engine.connect() as conn:
            row = conn.execute(select(s.audit_head).where(s.audit_head.c.id == 1)).first()
        return (0, GENESIS) if row is None else (row.seq, row.hash)

    def certificates_to_lint(self, limit: int) -> list[CertificateRecord]:
        """Certificates not linted yet, oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(s.certificates)
                .where(s.certificates.c.lint_status.is_(None))
                .order_by(s.certificates.c.id)
                .limit(limit)
            )
            return [_certificate(row) for row in rows]

    def record_lint(self, ca_name: str, serial: str, findings: list[LintFinding]) -> None:
        """Replace a certificate's lint findings and set its lint status."""
        from iotpki.lint import worst_severity

        with self.transaction() as tx:
            conn = tx._conn
            conn.execute(
                delete(s.lint_findings).where(
                    s.lint_findings.c.ca_name == ca_name, s.lint_findings.c.serial == serial
                )
            )
            kept = [f for f in findings if f.severity != "INFO"]
            if kept:
                conn.execute(
                    insert(s.lint_findings),
                    [
                        {
                            "ca_name": ca_name,
                            "serial": serial,
                            "severity": f.severity,
                            "code": f.code,
                            "node": f.node[:256],
                            "message": f.message,
                        }
                        for f in kept
                    ],
                )
            conn.execute(
                update(s.certificates)
                .where(s.certificates.c.ca_name == ca_name, s.certificates.c.serial == serial)
                .values(lint_status=worst_severity(findings))
            )

    def lint_findings(self, ca_name: str, serial: str) -> list[LintFinding]:
        """The findings kept for a certificate."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(s.lint_findings).where(
                    s.lint_findings.c.ca_name == ca_name, s.lint_findings.c.serial == serial
                )
            )
            return [LintFinding(r.severity, r.code, r.node, r.message) for r in rows]

    def count_certificates(self) -> int:
        """How many certificates the store holds."""
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(s.certificates)).scalar_one())

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


def _engine(url: str, echo: bool) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            echo=echo,
            connect_args={"check_same_thread": False, "timeout": 30},
            poolclass=NullPool if ":memory:" in url else None,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Connection) -> None:
            immediate = conn.info.pop("iotpki_immediate", False)
            driver = conn.connection.driver_connection
            driver.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")  # type: ignore[union-attr]

        return engine
    return create_engine(url, echo=echo, pool_size=10, max_overflow=20, pool_pre_ping=True)
