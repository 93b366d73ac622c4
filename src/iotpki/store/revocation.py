"""The ``RevocationStore`` port on SQLAlchemy Core, beside ``SqlStore`` on the same engine."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import AbstractContextManager, closing, contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, delete, func, insert, literal_column, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.elements import ColumnClause

from iotpki.core.models import CertStatus
from iotpki.core.publication import CrlKind, CrlRecord, StatusRow
from iotpki.core.revocation import CrlEntry
from iotpki.store import schema as s
from iotpki.store.locks import advisory_lock
from iotpki.store.sql import SqlStore

__all__ = ["SqlRevocationStore"]

_REVOKED = str(CertStatus.REVOKED)
_STREAM_ROWS = 10_000
# A literal, not a bound value, so that the planner may use the partial covering index of the
# partitions' CRLs (``ix_certificates_crl_partition``).
_REVOKED_LITERAL: ColumnClause[Any] = literal_column(f"'{_REVOKED}'")
# The literal 'revoked' lets both databases use the partial index (a bound value would not).
_CRL_QUERY = (
    "SELECT serial, revoked_at, revocation_reason, invalidity_date FROM certificates "
    "WHERE ca_name = :ca_name AND status = 'revoked' AND not_after >= :valid_at"
)
_DELTA_CRL_QUERY = _CRL_QUERY + " AND revoked_at >= :since"
_PARTITION_QUERY = _CRL_QUERY + " AND crl_partition = :partition"
_PARTITION_DELTA_QUERY = _PARTITION_QUERY + " AND revoked_at >= :since"


def _stored_time(value: datetime, sqlite_store: bool) -> object:
    """A bound time as UTCDateTime stores it: naive UTC, as ISO text on SQLite."""
    naive = value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
    return naive.strftime("%Y-%m-%d %H:%M:%S.%f") if sqlite_store else naive


class SqlRevocationStore:
    """CRL numbers and CRLs, streamed revoked lists, and cross-replica job locks."""

    def __init__(self, store: SqlStore) -> None:
        self._engine = store.engine
        self._dialect = store.dialect

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._engine.connect() as conn:
            conn.info["iotpki_immediate"] = True  # SQLite: BEGIN IMMEDIATE, as SqlStore does
            with conn.begin():
                yield conn

    def next_crl_number(self, ca_name: str) -> int:
        """Allocate the CA's next CRL number in one statement (an upsert that returns it)."""
        dialect_insert: Any = postgresql.insert if self._dialect == "postgresql" else sqlite.insert
        stmt = (
            dialect_insert(s.crl_numbers)
            .values(ca_name=ca_name, last_number=1)
            .on_conflict_do_update(
                index_elements=["ca_name"],
                set_={"last_number": s.crl_numbers.c.last_number + 1},
            )
            .returning(s.crl_numbers.c.last_number)
        )
        with self._write() as conn:
            return int(conn.execute(stmt).scalar_one())

    def get_crl(self, ca_name: str, kind: CrlKind, *, with_der: bool = True) -> CrlRecord | None:
        """The latest CRL of that kind."""
        c = s.crls.c
        columns = [c.number, c.base_number, c.this_update, c.next_update, c.entries]
        if with_der:
            columns.append(c.der)
        with self._engine.connect() as conn:
            row = conn.execute(select(*columns).where(c.ca_name == ca_name, c.kind == kind)).first()
        if row is None:
            return None
        return CrlRecord(
            ca_name=ca_name,
            kind=kind,
            number=row.number,
            base_number=row.base_number,
            this_update=row.this_update,
            next_update=row.next_update,
            entries=row.entries,
            der=row.der if with_der else None,
        )

    def put_crl(self, record: CrlRecord) -> bool:
        """Replace the stored CRL of that kind unless it has a higher number."""
        if record.der is None:
            raise ValueError("a CRL is stored with its DER")
        c = s.crls.c
        where = (c.ca_name == record.ca_name, c.kind == record.kind)
        with self._write() as conn:
            stored = conn.execute(select(c.number).where(*where)).scalar_one_or_none()
            if stored is not None and stored >= record.number:
                return False
            conn.execute(delete(s.crls).where(*where))
            conn.execute(
                insert(s.crls).values(
                    ca_name=record.ca_name,
                    kind=record.kind,
                    number=record.number,
                    base_number=record.base_number,
                    this_update=record.this_update,
                    next_update=record.next_update,
                    entries=record.entries,
                    der=record.der,
                )
            )
        return True

    def revoked_entries(
        self, ca_name: str, *, valid_at: datetime, revoked_since: datetime | None = None
    ) -> Iterator[CrlEntry]:
        """Stream the revoked, unexpired certificates of a CA in batches of rows.

        RFC 5280 section 3.3 lets expired certificates leave the CRL. A million rows must be read
        in about a second, so this bypasses SQLAlchemy's per-row processing: a DBAPI cursor (a
        server-side one on PostgreSQL) reads only the four columns, from the partial covering
        index ``ix_certificates_crl``, in ``arraysize`` batches.
        """
        sql = _CRL_QUERY if revoked_since is None else _DELTA_CRL_QUERY
        return self._stream(sql, ca_name, None, valid_at, revoked_since)

    def _stream(
        self,
        sql: str,
        ca_name: str,
        partition: str | None,
        valid_at: datetime,
        revoked_since: datetime | None,
    ) -> Iterator[CrlEntry]:
        sqlite_store = self._dialect == "sqlite"
        params = {
            "ca_name": ca_name,
            "partition": partition,
            "valid_at": _stored_time(valid_at, sqlite_store),
            "since": None if revoked_since is None else _stored_time(revoked_since, sqlite_store),
        }
        with self._engine.connect() as conn, conn.begin():  # one snapshot for the whole list
            driver: Any = conn.connection.driver_connection
            if sqlite_store:
                with closing(driver.cursor()) as cursor:
                    cursor.arraysize = _STREAM_ROWS
                    cursor.execute(sql, params)
                    # SQLite keeps times as ISO text, naive UTC (as CrlEntry wants them).
                    parse = datetime.fromisoformat
                    while rows := cursor.fetchmany():
                        yield from [
                            (serial, parse(revoked_at), reason, invalid and parse(invalid))
                            for serial, revoked_at, reason, invalid in rows
                        ]
                return
            with driver.cursor(name="iotpki_crl_entries") as cursor:
                cursor.execute(re.sub(r":(\w+)", r"%(\1)s", sql), params)
                while rows := cursor.fetchmany(_STREAM_ROWS):
                    yield from rows  # psycopg gives naive datetimes for timestamp columns

    def first_revocation_since(self, ca_name: str, since: datetime) -> datetime | None:
        """The earliest revocation time at or after ``since``."""
        c = s.certificates.c
        with self._engine.connect() as conn:
            value: datetime | None = conn.execute(
                select(func.min(c.revoked_at)).where(
                    c.ca_name == ca_name, c.status == _REVOKED, c.revoked_at >= since
                )
            ).scalar_one_or_none()
        if value is not None and value.tzinfo is None:  # aggregates skip the column type
            value = s.UTCDateTime().process_result_value(value, self._engine.dialect)
        return value

    def revocations_since(self, ca_name: str, since: datetime, limit: int) -> list[str]:
        """Serials revoked at or after ``since``."""
        c = s.certificates.c
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(c.serial)
                .where(c.ca_name == ca_name, c.status == _REVOKED, c.revoked_at >= since)
                .limit(limit)
            )
            return [row.serial for row in rows]

    def certificate_statuses(
        self, ca_name: str, *, after_id: int, valid_at: datetime, limit: int
    ) -> list[StatusRow]:
        """Unexpired certificates of the CA in row order after ``after_id``."""
        c = s.certificates.c
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(c.id, c.serial, c.status, c.revoked_at, c.revocation_reason)
                .where(c.id > after_id, c.ca_name == ca_name, c.not_after >= valid_at)
                .order_by(c.id)
                .limit(limit)
            )
            return [(r.id, r.serial, r.status, r.revoked_at, r.revocation_reason) for r in rows]

    def exclusive(self, name: str) -> AbstractContextManager[bool]:
        """A lock held by one replica at a time (see ``store.locks``)."""
        return advisory_lock(self._engine, name)

    # -- CRL partitions (``core.partitions``) -------------------------------------------------

    def get_partition_crl(
        self, ca_name: str, partition: str, kind: CrlKind, *, with_der: bool = True
    ) -> CrlRecord | None:
        """The latest CRL of that kind of one partition."""
        c = s.crl_partitions.c
        with self._engine.connect() as conn:
            row = conn.execute(
                select(*_partition_columns(with_der)).where(
                    c.ca_name == ca_name, c.partition == partition, c.kind == kind
                )
            ).first()
        return None if row is None else _partition_record(ca_name, row, with_der)

    def partition_crls(self, ca_name: str) -> list[CrlRecord]:
        """Every stored partition CRL of the CA, without DER."""
        c = s.crl_partitions.c
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(*_partition_columns(False))
                .where(c.ca_name == ca_name)
                .order_by(c.partition, c.kind)
            ).all()
        return [_partition_record(ca_name, row, False) for row in rows]

    def put_partition_crl(self, record: CrlRecord) -> bool:
        """Replace the partition's stored CRL of that kind unless it has a higher number."""
        if record.der is None or record.partition is None or record.sha256 is None:
            raise ValueError("a partition CRL is stored with its partition, DER and digest")
        c = s.crl_partitions.c
        where = (c.ca_name == record.ca_name, c.partition == record.partition)
        with self._write() as conn:
            stored = conn.execute(
                select(c.number).where(*where, c.kind == record.kind)
            ).scalar_one_or_none()
            if stored is not None and stored >= record.number:
                return False
            conn.execute(delete(s.crl_partitions).where(*where, c.kind == record.kind))
            conn.execute(
                insert(s.crl_partitions).values(
                    ca_name=record.ca_name,
                    partition=record.partition,
                    kind=record.kind,
                    number=record.number,
                    base_number=record.base_number,
                    this_update=record.this_update,
                    next_update=record.next_update,
                    entries=record.entries,
                    sha256=record.sha256,
                    der=record.der,
                )
            )
        return True

    def drop_partition(self, ca_name: str, partition: str) -> None:
        """Forget an expired partition's CRLs."""
        c = s.crl_partitions.c
        with self._write() as conn:
            conn.execute(
                delete(s.crl_partitions).where(c.ca_name == ca_name, c.partition == partition)
            )

    def partitions_after(self, ca_name: str, after_id: int) -> tuple[int, set[str]]:
        """The partitions named by the CA's certificates recorded after row ``after_id``.

        The first call reads the partitions from ``ix_certificates_partition``; later ones read
        only the new rows, in row-id order (a primary-key range, whatever the planner prefers).
        """
        c = s.certificates.c
        found: set[str] = set()
        with self._engine.connect() as conn:
            if after_id == 0:  # the highest row first: a row added meanwhile is seen next time
                top = int(conn.execute(select(func.max(c.id))).scalar_one_or_none() or 0)
                rows = conn.execute(
                    select(c.crl_partition)
                    .where(c.ca_name == ca_name, c.crl_partition.is_not(None))
                    .distinct()
                )
                return top, {row[0] for row in rows}
            top = after_id
            while True:
                page = conn.execute(
                    select(c.id, c.ca_name, c.crl_partition)
                    .where(c.id > top)
                    .order_by(c.id)
                    .limit(_STREAM_ROWS)
                ).all()
                found |= {p for _, ca, p in page if ca == ca_name and p is not None}
                if not page:
                    return top, found
                top = page[-1][0]

    def unlisted_revocations(self, ca_name: str) -> dict[str, datetime]:
        """Per partition, the earliest revocation at or after its complete CRL's thisUpdate."""
        c = s.certificates.c
        p = s.crl_partitions.c
        with self._engine.connect() as conn:
            since = conn.execute(
                select(func.min(p.this_update)).where(p.ca_name == ca_name, p.kind == "full")
            ).scalar_one_or_none()
        if since is None:
            return {}
        if not isinstance(since, datetime):  # aggregates skip the column type
            since = s.UTCDateTime().process_result_value(since, self._engine.dialect)
        query = (
            select(c.crl_partition, func.min(c.revoked_at))
            .join(
                s.crl_partitions,
                (p.ca_name == c.ca_name) & (p.partition == c.crl_partition) & (p.kind == "full"),
            )
            .where(
                c.ca_name == ca_name,
                c.status == _REVOKED_LITERAL,
                c.revoked_at >= since,  # a range over ix_certificates_ca_status_revoked
                c.revoked_at >= p.this_update,
            )
            .group_by(c.crl_partition)
        )
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        convert = s.UTCDateTime().process_result_value
        out: dict[str, datetime] = {}
        for partition, first in rows:
            value = convert(first, self._engine.dialect)
            if value is not None:
                out[partition] = value
        return out

    def partition_entries(
        self,
        ca_name: str,
        partition: str,
        *,
        valid_at: datetime,
        revoked_since: datetime | None = None,
    ) -> Iterator[CrlEntry]:
        """The partition's revoked, unexpired certificates, streamed from their covering index
        ``ix_certificates_crl_partition`` as ``revoked_entries`` streams the CA's."""
        sql = _PARTITION_QUERY if revoked_since is None else _PARTITION_DELTA_QUERY
        return self._stream(sql, ca_name, partition, valid_at, revoked_since)


def _partition_columns(with_der: bool) -> list[Any]:
    c = s.crl_partitions.c
    columns = [
        c.partition,
        c.kind,
        c.number,
        c.base_number,
        c.this_update,
        c.next_update,
        c.entries,
        c.sha256,
    ]
    return [*columns, c.der] if with_der else columns


def _partition_record(ca_name: str, row: Any, with_der: bool) -> CrlRecord:
    return CrlRecord(
        ca_name=ca_name,
        kind=row.kind,
        number=row.number,
        base_number=row.base_number,
        this_update=row.this_update,
        next_update=row.next_update,
        entries=row.entries,
        der=row.der if with_der else None,
        partition=row.partition,
        sha256=row.sha256,
    )
