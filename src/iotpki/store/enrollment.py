"""SQL for EST enrollment state: bootstrap CAs, IDevID bindings, secrets and approvals.

A mixin of :class:`iotpki.store.sql.SqlTransaction`, kept apart so the enrollment tables' code
lives beside each other and not inside the general store module.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Row

from iotpki.core.models import (
    ApprovalRecord,
    ApprovalStatus,
    BootstrapCARecord,
    BootstrapCAStatus,
    BootstrapKind,
    EnrollmentSecretRecord,
    EnrollMethod,
    EnrollPolicy,
    IdevidBinding,
)
from iotpki.store import schema as s

__all__ = ["EnrollmentSql"]

_APPROVAL_PAGE = 500


def _bootstrap(row: Row[Any]) -> BootstrapCARecord:
    return BootstrapCARecord(
        name=row.name,
        certificate_der=row.certificate_der,
        fingerprint=row.fingerprint,
        enroll_policy=EnrollPolicy(row.enroll_policy),
        profile=row.profile,
        approval=row.approval,
        status=BootstrapCAStatus(row.status),
        created_at=row.created_at,
        kind=BootstrapKind(row.kind),
        device_pattern=row.device_pattern,
    )


def _secret(row: Row[Any]) -> EnrollmentSecretRecord:
    return EnrollmentSecretRecord(
        secret_id=row.secret_id,
        device_id=row.device_id,
        secret_hash=row.secret_hash,
        created_at=row.created_at,
        expires_at=row.expires_at,
        profile=row.profile,
        approval=row.approval,
        used_at=row.used_at,
        failed_attempts=row.failed_attempts,
        locked_until=row.locked_until,
    )


def _approval(row: Row[Any]) -> ApprovalRecord:
    return ApprovalRecord(
        request_id=row.request_id,
        device_id=row.device_id,
        method=EnrollMethod(row.method),
        profile=row.profile,
        ca_name=row.ca_name,
        csr_fingerprint=row.csr_fingerprint,
        status=ApprovalStatus(row.status),
        created_at=row.created_at,
        decided_at=row.decided_at,
        decided_by=row.decided_by,
        serial=row.serial,
    )


class EnrollmentSql:
    """The enrollment part of the ``StoreTransaction`` port."""

    _conn: Connection
    _sqlite: bool

    def get_bootstrap_ca(self, name: str) -> BootstrapCARecord | None:
        """A registered bootstrap (manufacturer) CA."""
        row = self._conn.execute(
            select(s.bootstrap_cas).where(s.bootstrap_cas.c.name == name)
        ).first()
        return None if row is None else _bootstrap(row)

    def list_bootstrap_cas(self) -> list[BootstrapCARecord]:
        """Every registered bootstrap CA, by name."""
        rows = self._conn.execute(select(s.bootstrap_cas).order_by(s.bootstrap_cas.c.name))
        return [_bootstrap(row) for row in rows]

    def put_bootstrap_ca(self, record: BootstrapCARecord) -> None:
        """Insert or replace a bootstrap CA."""
        values = {
            "certificate_der": record.certificate_der,
            "fingerprint": record.fingerprint,
            "enroll_policy": record.enroll_policy,
            "profile": record.profile,
            "approval": record.approval,
            "status": record.status,
            "kind": record.kind,
            "device_pattern": record.device_pattern,
        }
        table = s.bootstrap_cas
        done = self._conn.execute(update(table).where(table.c.name == record.name).values(values))
        if done.rowcount == 0:
            self._conn.execute(
                insert(table).values(name=record.name, created_at=record.created_at, **values)
            )

    def provisioning_request(self, request_key: str) -> tuple[str, str] | None:
        """The CA and serial a provisioning request ID was answered with, if it was."""
        c = s.provisioning_requests.c
        row = self._conn.execute(
            select(c.ca_name, c.serial).where(c.request_key == request_key)
        ).first()
        return None if row is None else (row.ca_name, row.serial)

    def add_provisioning_request(
        self, request_key: str, ca_name: str, serial: str, at: datetime
    ) -> bool:
        """Record the certificate a provisioning request ID is answered with; False (nothing
        written) when the ID was answered already."""
        dialect_insert = sqlite.insert if self._sqlite else postgresql.insert
        inserted = self._conn.execute(
            dialect_insert(s.provisioning_requests)
            .values(request_key=request_key, ca_name=ca_name, serial=serial, created_at=at)
            .on_conflict_do_nothing()
            .returning(s.provisioning_requests.c.request_key)
        ).first()
        return inserted is not None

    def get_idevid_binding(self, bootstrap_ca: str, idevid: str) -> IdevidBinding | None:
        """The device an IDevID of a bootstrap CA is bound to."""
        table = s.idevid_bindings
        row = self._conn.execute(
            select(table).where(table.c.bootstrap_ca == bootstrap_ca, table.c.idevid == idevid)
        ).first()
        if row is None:
            return None
        return IdevidBinding(row.bootstrap_ca, row.idevid, row.device_id, row.created_at)

    def put_idevid_binding(self, record: IdevidBinding) -> None:
        """Bind an IDevID to a device, replacing an earlier binding."""
        table = s.idevid_bindings
        done = self._conn.execute(
            update(table)
            .where(table.c.bootstrap_ca == record.bootstrap_ca, table.c.idevid == record.idevid)
            .values(device_id=record.device_id)
        )
        if done.rowcount == 0:
            self._conn.execute(
                insert(table).values(
                    bootstrap_ca=record.bootstrap_ca,
                    idevid=record.idevid,
                    device_id=record.device_id,
                    created_at=record.created_at,
                )
            )

    def add_enrollment_secret(self, record: EnrollmentSecretRecord) -> None:
        """Insert an enrollment secret."""
        self._conn.execute(
            insert(s.enrollment_secrets).values(
                secret_id=record.secret_id,
                device_id=record.device_id,
                secret_hash=record.secret_hash,
                profile=record.profile,
                approval=record.approval,
                created_at=record.created_at,
                expires_at=record.expires_at,
                used_at=record.used_at,
                failed_attempts=record.failed_attempts,
                locked_until=record.locked_until,
            )
        )

    def enrollment_secrets(self, device_id: str) -> list[EnrollmentSecretRecord]:
        """Every enrollment secret of a device, newest first."""
        table = s.enrollment_secrets
        rows = self._conn.execute(
            select(table)
            .where(table.c.device_id == device_id)
            .order_by(table.c.created_at.desc(), table.c.secret_id)
        )
        return [_secret(row) for row in rows]

    def update_enrollment_secret(self, record: EnrollmentSecretRecord) -> bool:
        """Store use and failure counters; False when the secret was used meanwhile."""
        table = s.enrollment_secrets
        done = self._conn.execute(
            update(table)
            .where(table.c.secret_id == record.secret_id, table.c.used_at.is_(None))
            .values(
                used_at=record.used_at,
                failed_attempts=record.failed_attempts,
                locked_until=record.locked_until,
            )
        )
        return bool(done.rowcount)

    def add_approval(self, record: ApprovalRecord) -> None:
        """Insert an enrollment approval request."""
        self._conn.execute(
            insert(s.enrollment_approvals).values(
                request_id=record.request_id,
                device_id=record.device_id,
                method=record.method,
                profile=record.profile,
                ca_name=record.ca_name,
                csr_fingerprint=record.csr_fingerprint,
                status=record.status,
                created_at=record.created_at,
                decided_at=record.decided_at,
                decided_by=record.decided_by,
                serial=record.serial,
            )
        )

    def get_approval(self, request_id: str) -> ApprovalRecord | None:
        """An approval request by id."""
        table = s.enrollment_approvals
        row = self._conn.execute(select(table).where(table.c.request_id == request_id)).first()
        return None if row is None else _approval(row)

    def find_approval(self, device_id: str, csr_fingerprint: str) -> ApprovalRecord | None:
        """The newest approval request of a device for one CSR."""
        table = s.enrollment_approvals
        row = self._conn.execute(
            select(table)
            .where(table.c.device_id == device_id, table.c.csr_fingerprint == csr_fingerprint)
            .order_by(table.c.created_at.desc())
            .limit(1)
        ).first()
        return None if row is None else _approval(row)

    def list_approvals(self, status: str | None) -> list[ApprovalRecord]:
        """Approval requests, newest first, optionally of one status."""
        table = s.enrollment_approvals
        query = select(table)
        if status is not None:
            query = query.where(table.c.status == status)
        rows = self._conn.execute(query.order_by(table.c.created_at.desc()).limit(_APPROVAL_PAGE))
        return [_approval(row) for row in rows]

    def update_approval(self, record: ApprovalRecord) -> None:
        """Store an approval request's decision."""
        table = s.enrollment_approvals
        self._conn.execute(
            update(table)
            .where(table.c.request_id == record.request_id)
            .values(
                status=record.status,
                decided_at=record.decided_at,
                decided_by=record.decided_by,
                serial=record.serial,
            )
        )
