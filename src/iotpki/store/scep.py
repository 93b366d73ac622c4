"""SQL for SCEP state: challenge passwords, transactions and RA certificates.

A mixin of :class:`iotpki.store.sql.SqlTransaction`, like :mod:`iotpki.store.enrollment`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update
from sqlalchemy.engine import Row

from iotpki.core.models import (
    ScepChallengeRecord,
    ScepRaRecord,
    ScepTransactionKind,
    ScepTransactionRecord,
    ScepTransactionStatus,
)
from iotpki.store import schema as s

__all__ = ["ScepSql"]

_MAX_PAGE = 1000


def _challenge(row: Row[Any]) -> ScepChallengeRecord:
    return ScepChallengeRecord(
        challenge_id=row.challenge_id,
        device_id=row.device_id,
        secret_hash=row.secret_hash,
        created_at=row.created_at,
        expires_at=row.expires_at,
        profile=row.profile,
        ca_name=row.ca_name,
        approval=row.approval,
        used_at=row.used_at,
        transaction_id=row.transaction_id,
    )


def _transaction(row: Row[Any]) -> ScepTransactionRecord:
    return ScepTransactionRecord(
        ca_name=row.ca_name,
        transaction_id=row.transaction_id,
        kind=ScepTransactionKind(row.kind),
        status=ScepTransactionStatus(row.status),
        key_fingerprint=row.key_fingerprint,
        csr_der=row.csr_der,
        device_id=row.device_id,
        profile=row.profile,
        created_at=row.created_at,
        updated_at=row.updated_at,
        serial=row.serial,
        fail_info=row.fail_info,
        renewed_from=row.renewed_from,
        challenge_id=row.challenge_id,
        decided_by=row.decided_by,
        sealed_csr=row.sealed_csr,
        sealed_by=row.sealed_by,
    )


def _transaction_values(record: ScepTransactionRecord) -> dict[str, object]:
    return {
        "ca_name": record.ca_name,
        "transaction_id": record.transaction_id,
        "kind": record.kind,
        "status": record.status,
        "key_fingerprint": record.key_fingerprint,
        "csr_der": record.csr_der,
        "device_id": record.device_id,
        "profile": record.profile,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "serial": record.serial,
        "fail_info": record.fail_info,
        "renewed_from": record.renewed_from,
        "challenge_id": record.challenge_id,
        "decided_by": record.decided_by,
        "sealed_csr": record.sealed_csr,
        "sealed_by": record.sealed_by,
    }


# The enrollment path's statements, built once: binding values at execution skips SQLAlchemy's
# per-call statement construction and cache-key work.
_CH = s.scep_challenges.c
_TX = s.scep_transactions.c
_GET_CHALLENGE = select(s.scep_challenges).where(_CH.secret_hash == bindparam("p_hash"))
_USE_CHALLENGE = (
    update(s.scep_challenges)
    .where(_CH.challenge_id == bindparam("p_id"), _CH.used_at.is_(None))
    .values(used_at=bindparam("p_at"), transaction_id=bindparam("p_transaction"))
)
_GET_TRANSACTION = select(s.scep_transactions).where(
    _TX.ca_name == bindparam("p_ca"), _TX.transaction_id == bindparam("p_transaction")
)
_ADD_TRANSACTION = insert(s.scep_transactions)


class ScepSql:
    """SCEP tables' reads and writes inside the enclosing transaction."""

    _conn: Connection

    def add_scep_challenge(self, record: ScepChallengeRecord) -> None:
        """Insert a SCEP challenge password."""
        self._conn.execute(
            insert(s.scep_challenges).values(
                challenge_id=record.challenge_id,
                device_id=record.device_id,
                secret_hash=record.secret_hash,
                profile=record.profile,
                ca_name=record.ca_name,
                approval=record.approval,
                created_at=record.created_at,
                expires_at=record.expires_at,
                used_at=record.used_at,
                transaction_id=record.transaction_id,
            )
        )

    def get_scep_challenge(self, secret_hash: str) -> ScepChallengeRecord | None:
        """The challenge password with this SHA-256, if any."""
        row = self._conn.execute(_GET_CHALLENGE, {"p_hash": secret_hash}).first()
        return None if row is None else _challenge(row)

    def use_scep_challenge(self, challenge_id: str, at: datetime, transaction_id: str) -> bool:
        """Mark a challenge used by a transaction; False if it was used already."""
        done = self._conn.execute(
            _USE_CHALLENGE, {"p_id": challenge_id, "p_at": at, "p_transaction": transaction_id}
        )
        return done.rowcount == 1

    def get_scep_transaction(
        self, ca_name: str, transaction_id: str
    ) -> ScepTransactionRecord | None:
        """A SCEP transaction of a CA by its transactionID."""
        row = self._conn.execute(
            _GET_TRANSACTION, {"p_ca": ca_name, "p_transaction": transaction_id}
        ).first()
        return None if row is None else _transaction(row)

    def add_scep_transaction(self, record: ScepTransactionRecord) -> None:
        """Insert a SCEP transaction; one with the same CA and ID is a ``Conflict``."""
        self._conn.execute(_ADD_TRANSACTION, _transaction_values(record))

    def replace_scep_transaction(
        self, old: ScepTransactionRecord, new: ScepTransactionRecord
    ) -> bool:
        """Replace ``old`` by ``new`` unless it changed meanwhile (then False)."""
        c = s.scep_transactions.c
        done = self._conn.execute(
            update(s.scep_transactions)
            .where(
                c.ca_name == old.ca_name,
                c.transaction_id == old.transaction_id,
                c.status == old.status,
                c.updated_at == old.updated_at,
            )
            .values(_transaction_values(new))
        )
        return done.rowcount == 1

    def list_scep_transactions(self, status: str | None, limit: int) -> list[ScepTransactionRecord]:
        """SCEP transactions, newest first, optionally of one status."""
        c = s.scep_transactions.c
        query = select(s.scep_transactions)
        if status is not None:
            query = query.where(c.status == status)
        query = query.order_by(c.updated_at.desc()).limit(max(1, min(limit, _MAX_PAGE)))
        return [_transaction(row) for row in self._conn.execute(query)]

    def add_scep_ra(self, record: ScepRaRecord) -> None:
        """Insert a SCEP RA certificate."""
        self._conn.execute(
            insert(s.scep_ras).values(
                ca_name=record.ca_name,
                serial=record.serial,
                key_backend=record.key_backend,
                key_ref=record.key_ref,
                certificate_der=record.certificate_der,
                created_at=record.created_at,
            )
        )

    def list_scep_ras(self, ca_name: str) -> list[ScepRaRecord]:
        """The SCEP RA certificates of a CA, newest first."""
        rows = self._conn.execute(
            select(s.scep_ras)
            .where(s.scep_ras.c.ca_name == ca_name)
            .order_by(s.scep_ras.c.created_at.desc(), s.scep_ras.c.serial)
        )
        return [
            ScepRaRecord(
                ca_name=row.ca_name,
                serial=row.serial,
                key_backend=row.key_backend,
                key_ref=row.key_ref,
                certificate_der=row.certificate_der,
                created_at=row.created_at,
            )
            for row in rows
        ]
