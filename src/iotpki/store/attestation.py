"""SQL for TPM key attestations: the record behind a certificate's key, and the attested key of
an ACME authorization until its order is finalized.

A mixin of :class:`iotpki.store.sql.SqlTransaction`, like :mod:`iotpki.store.scep`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, insert, select, tuple_
from sqlalchemy.engine import Row

from iotpki.core.models import KeyAttestation
from iotpki.store import schema as s

__all__ = ["AttestationSql"]

_FIELDS = (
    "key_fingerprint",
    "method",
    "attested_at",
    "device_identity",
    "ak_fingerprint",
    "ak_issuer",
    "root_fingerprint",
    "root_subject",
)
_BATCH = 500


def _values(record: KeyAttestation) -> dict[str, object]:
    return {name: getattr(record, name) for name in _FIELDS}


def _record(row: Row[Any], *, ca_name: str | None, serial: str | None) -> KeyAttestation:
    return KeyAttestation(
        **{name: getattr(row, name) for name in _FIELDS}, ca_name=ca_name, serial=serial
    )


class AttestationSql:
    """Key attestation reads and writes inside one transaction."""

    _conn: Connection

    def add_key_attestation(self, record: KeyAttestation) -> None:
        """Record the attestation of an issued certificate's key."""
        if record.ca_name is None or record.serial is None:
            raise ValueError("a key attestation is recorded for an issued certificate")
        self._conn.execute(
            insert(s.key_attestations).values(
                ca_name=record.ca_name, serial=record.serial, **_values(record)
            )
        )

    def get_key_attestation(self, ca_name: str, serial: str) -> KeyAttestation | None:
        """The attestation of a certificate's key, if it was attested."""
        t = s.key_attestations
        row = self._conn.execute(
            select(t).where(t.c.ca_name == ca_name, t.c.serial == serial)
        ).first()
        return None if row is None else _record(row, ca_name=row.ca_name, serial=row.serial)

    def attested_serials(self, certificates: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of these (CA name, serial) pairs have an attested key."""
        wanted = list(certificates)
        t = s.key_attestations
        found: set[tuple[str, str]] = set()
        for start in range(0, len(wanted), _BATCH):
            batch = wanted[start : start + _BATCH]
            rows = self._conn.execute(
                select(t.c.ca_name, t.c.serial).where(tuple_(t.c.ca_name, t.c.serial).in_(batch))
            )
            found.update((row.ca_name, row.serial) for row in rows)
        return found

    def add_pending_attestation(
        self, authz_id: str, order_id: str, key_spki: bytes, record: KeyAttestation
    ) -> None:
        """Keep the key an ACME authorization's device-attest-01 proved, until finalize."""
        self._conn.execute(
            insert(s.acme_attestations).values(
                authz_id=authz_id, order_id=order_id, key_spki=key_spki, **_values(record)
            )
        )

    def order_attestations(self, order_id: str) -> list[tuple[bytes, KeyAttestation]]:
        """The attested keys (SubjectPublicKeyInfo DER and record) of an order's authorizations."""
        t = s.acme_attestations
        rows = self._conn.execute(select(t).where(t.c.order_id == order_id).order_by(t.c.authz_id))
        return [(bytes(row.key_spki), _record(row, ca_name=None, serial=None)) for row in rows]
