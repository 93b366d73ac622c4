"""The ``Store`` port on SQLAlchemy Core: SQLite (WAL) by default, PostgreSQL by URL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
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
    ApiTokenRecord,
    AuditEvent,
    CAKind,
    CARecord,
    CAStatus,
    CertificateQuery,
    CertificateRecord,
    CertStatus,
    DeviceRecord,
    LintFinding,
    RevocationReason,
    Role,
)
from iotpki.errors import BackendError, Conflict
from iotpki.store import schema as s

__all__ = ["SqlStore", "SqlTransaction"]

_MAX_PAGE = 1000


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


class SqlTransaction:
    """The ``StoreTransaction`` port over one SQLAlchemy connection in a transaction."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def get_ca(self, name: str) -> CARecord | None:
        """The CA of that name, if any."""
        row = self._conn.execute(select(s.cas).where(s.cas.c.name == name)).first()
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
        self._conn.execute(
            insert(s.certificates).values(
                ca_name=record.ca_name,
                serial=record.serial,
                profile=record.profile,
                device_id=record.device_id,
                subject=record.subject,
                sans=json.dumps(list(record.sans)),
                not_before=record.not_before,
                not_after=record.not_after,
                key_fingerprint=record.key_fingerprint,
                key_algorithm=record.key_algorithm,
                der=record.der,
                status=str(record.status),
                issued_at=record.issued_at,
                lint_status=record.lint_status,
            )
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
        rows = self._conn.execute(
            select(s.certificates).where(s.certificates.c.key_fingerprint == fingerprint)
        )
        return [_certificate(row) for row in rows]

    def is_key_blocked(self, fingerprint: str) -> bool:
        """Whether this key was revoked for key compromise."""
        query = select(s.blocked_keys.c.fingerprint).where(
            s.blocked_keys.c.fingerprint == fingerprint
        )
        return self._conn.execute(query).first() is not None

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
        row = self._conn.execute(
            select(s.devices).where(s.devices.c.device_id == device_id)
        ).first()
        if row is None:
            return None
        return DeviceRecord(
            device_id=row.device_id,
            status=row.status,
            metadata=json.loads(row.metadata),
            created_at=row.created_at,
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

    def add_token(self, record: ApiTokenRecord) -> None:
        """Insert an API token."""
        self._conn.execute(
            insert(s.api_tokens).values(
                token_id=record.token_id,
                role=str(record.role),
                description=record.description,
                secret_hash=record.secret_hash,
                created_at=record.created_at,
                expires_at=record.expires_at,
                revoked=record.revoked,
            )
        )

    def get_token(self, token_id: str) -> ApiTokenRecord | None:
        """An API token by its public id."""
        row = self._conn.execute(
            select(s.api_tokens).where(s.api_tokens.c.token_id == token_id)
        ).first()
        if row is None:
            return None
        return ApiTokenRecord(
            token_id=row.token_id,
            role=Role(row.role),
            description=row.description,
            secret_hash=row.secret_hash,
            created_at=row.created_at,
            expires_at=row.expires_at,
            revoked=row.revoked,
        )

    def append_audit(
        self, time: datetime, actor: str, action: str, target: str, data: dict[str, object]
    ) -> AuditEvent:
        """Append one event, locking the chain head so that the chain stays linear."""
        head = self._conn.execute(
            select(s.audit_head.c.seq, s.audit_head.c.hash)
            .where(s.audit_head.c.id == 1)
            .with_for_update()
        ).one()
        seq = head.seq + 1
        data = json.loads(_json(data))
        digest = chain_hash(head.hash, canonical_encoding(seq, time, actor, action, target, data))
        self._conn.execute(
            insert(s.audit_events).values(
                seq=seq,
                time=time,
                actor=actor,
                action=action,
                target=target[:256],
                data=_json(data),
                prev_hash=head.hash,
                hash=digest,
            )
        )
        self._conn.execute(
            update(s.audit_head).where(s.audit_head.c.id == 1).values(seq=seq, hash=digest)
        )
        return AuditEvent(seq, time, actor, action, target[:256], data, head.hash, digest)


class SqlStore:
    """The ``Store`` port for SQLite or PostgreSQL."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self.dialect = url.split(":", 1)[0].split("+", 1)[0]
        self.engine = _engine(url, echo)

    def migrate(self) -> None:
        """Bring the schema to the latest revision (Alembic) and seed the audit head."""
        from iotpki.store.migrate import upgrade

        upgrade(self.engine)

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
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine
    return create_engine(url, echo=echo, pool_size=10, max_overflow=20, pool_pre_ping=True)
