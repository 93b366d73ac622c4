"""SQL for the inventory: the dashboard's certificate search, counts and report figures.

Pages are keyset-paged on the certificates' id (newest first), so a page costs the same on the
first and the millionth row. Subject and SAN search is a case-insensitive substring match kept
fast by a trigram index (migration ``monitoring_0002``): SQLite's FTS5 ``trigram`` tokenizer
over the two columns, PostgreSQL's ``pg_trgm`` GIN indexes. Terms shorter than three characters
cannot use a trigram index and fall back to a scan.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    ScalarSelect,
    Select,
    and_,
    column,
    func,
    or_,
    select,
    table,
    text,
)

from iotpki.core.models import CertStatus
from iotpki.core.monitoring import InventoryFilter, InventoryRow
from iotpki.store import schema as s
from iotpki.store.sql import SqlStore

__all__ = ["SEARCH_TABLE", "SqlInventoryStore"]

SEARCH_TABLE = "certificates_search"
"""SQLite's FTS5 table over the certificates' subject and SANs (``rowid`` is the id)."""

_SEARCH = table(SEARCH_TABLE, column("rowid"))
_VALID = str(CertStatus.VALID)
_REVOKED = str(CertStatus.REVOKED)
_TRIGRAM = 3


def _like_literal(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _fts_phrase(value: str) -> str:
    """An FTS5 phrase matching ``value`` as a substring (trigram tokenizer)."""
    return '"' + value.replace('"', '""') + '"'


def _inventory(row: Any, now: datetime) -> InventoryRow:
    status = row.status
    if status == _VALID and row.not_after < now:
        status = "expired"
    return InventoryRow(
        id=row.id,
        serial=row.serial,
        ca_name=row.ca_name,
        profile=row.profile,
        device_id=row.device_id,
        subject=row.subject,
        not_before=row.not_before,
        not_after=row.not_after,
        status=status,
        revocation_reason=row.revocation_reason,
        key_algorithm=row.key_algorithm,
        lint_status=row.lint_status,
    )


def _columns() -> Select[Any]:
    c = s.certificates.c
    return select(
        c.id,
        c.serial,
        c.ca_name,
        c.profile,
        c.device_id,
        c.subject,
        c.not_before,
        c.not_after,
        c.status,
        c.revocation_reason,
        c.key_algorithm,
        c.lint_status,
    )


def _page_ids(
    conditions: list[ColumnElement[bool]], limit: int, *, device: bool
) -> ScalarSelect[int]:
    """The page's ids, newest first: read from an index alone, the rows are fetched after.

    A device-ID prefix is a range of ``ix_certificates_device_id`` (device_id, id), which covers
    this query: the matching ids are read from the index and the newest kept (a top-N sort).
    Ordering by ``id + 0`` stops PostgreSQL from walking the primary key backwards instead and
    filtering: its estimate assumes the matches are spread evenly over the ids, but a prefix's
    devices are enrolled together, so that walk reads every newer row first (400,000 for a
    prefix matching a tenth of a million certificates).
    """
    c = s.certificates.c
    order: ColumnElement[int] = c.id + 0 if device else c.id
    return select(c.id).where(*conditions).order_by(order.desc()).limit(limit).scalar_subquery()


class SqlInventoryStore:
    """Read queries over the certificates for the dashboard, the metrics and the report."""

    def __init__(self, store: SqlStore) -> None:
        self.engine = store.engine
        self.dialect = store.dialect

    def search(
        self, flt: InventoryFilter, now: datetime, *, before_id: int | None, limit: int
    ) -> list[InventoryRow]:
        """One page of certificates, newest first, strictly older than ``before_id``."""
        c = s.certificates.c
        conditions: list[ColumnElement[bool]] = []
        if before_id is not None:
            conditions.append(c.id < before_id)
        if flt.device:
            conditions.append(
                and_(c.device_id >= flt.device, c.device_id < flt.device + "\U0010ffff")
            )
        if flt.serial:
            serial = flt.serial.lower().lstrip("0") or "0"
            conditions.append(and_(c.serial >= serial, c.serial < serial + "g"))
        if flt.profile:
            conditions.append(c.profile == flt.profile)
        if flt.ca:
            conditions.append(c.ca_name == flt.ca)
        if flt.status == "revoked":
            conditions.append(c.status == _REVOKED)
        elif flt.status == "valid":
            conditions.extend([c.status == _VALID, c.not_after >= now])
        elif flt.status == "expired":
            conditions.extend([c.status == _VALID, c.not_after < now])
        if flt.expires_after is not None:
            conditions.append(c.not_after >= flt.expires_after)
        if flt.expires_before is not None:
            conditions.append(c.not_after < flt.expires_before)
        if flt.subject:
            stmt, order = self._subject_match(_columns(), flt.subject)
            stmt = stmt.where(*conditions).order_by(order.desc()).limit(limit)
        else:
            stmt = _columns().where(c.id.in_(_page_ids(conditions, limit, device=bool(flt.device))))
            stmt = stmt.order_by(c.id.desc())
        with self.engine.connect() as conn:
            return [_inventory(r, now) for r in conn.execute(stmt)]

    def _subject_match(
        self, stmt: Select[Any], term: str
    ) -> tuple[Select[Any], ColumnElement[int]]:
        """Restrict to certificates whose subject or SANs contain ``term`` (any case), and the
        column to order the page by."""
        c = s.certificates.c
        pattern = f"%{_like_literal(term)}%"
        if self.dialect == "sqlite" and len(term) >= _TRIGRAM:
            # The FTS5 table drives the join in its rowid order, so the first page of a common
            # term stops early and a rare term is found through the trigram index.
            match = text(f"{SEARCH_TABLE} MATCH :phrase").bindparams(phrase=_fts_phrase(term))
            rowid: ColumnElement[int] = _SEARCH.c.rowid
            return stmt.join(_SEARCH, rowid == c.id).where(match), rowid
        if self.dialect == "postgresql":
            subject = or_(c.subject.ilike(pattern, escape="\\"), c.sans.ilike(pattern, escape="\\"))
        else:
            subject = or_(c.subject.like(pattern, escape="\\"), c.sans.like(pattern, escape="\\"))
        return stmt.where(subject), c.id

    def counts(self, now: datetime) -> dict[str, dict[str, int]]:
        """Certificates by status (valid, expired, revoked) and by profile."""
        c = s.certificates.c
        expired = and_(c.status == _VALID, c.not_after < now)
        with self.engine.connect() as conn:
            by_status = {
                r[0]: int(r[1])
                for r in conn.execute(select(c.status, func.count()).group_by(c.status))
            }
            n_expired = int(
                conn.execute(
                    select(func.count()).select_from(s.certificates).where(expired)
                ).scalar_one()
            )
            by_profile = {
                r[0]: int(r[1])
                for r in conn.execute(select(c.profile, func.count()).group_by(c.profile))
            }
            by_algorithm = {
                r[0]: int(r[1])
                for r in conn.execute(
                    select(c.key_algorithm, func.count()).group_by(c.key_algorithm)
                )
            }
        status = {
            "valid": by_status.get(_VALID, 0) - n_expired,
            "expired": n_expired,
            "revoked": by_status.get(_REVOKED, 0),
        }
        return {"status": status, "profile": by_profile, "algorithm": by_algorithm}

    def count_expiring(
        self, now: datetime, until: datetime, *, excluded_profiles: Sequence[str] = ()
    ) -> int:
        """Valid certificates whose not_after falls in [now, until), outside the given profiles."""
        c = s.certificates.c
        stmt = (
            select(func.count())
            .select_from(s.certificates)
            .where(c.status == _VALID, c.not_after >= now, c.not_after < until)
        )
        if excluded_profiles:
            stmt = stmt.where(c.profile.not_in(excluded_profiles))
        with self.engine.connect() as conn:
            return int(conn.execute(stmt).scalar_one())

    def profile_expiry(
        self, profiles: Sequence[str], now: datetime
    ) -> list[tuple[str, int, datetime]]:
        """(profile, valid certificates, soonest not_after) for each of ``profiles`` in use."""
        c = s.certificates.c
        stmt = (
            select(c.profile, func.count(), func.min(c.not_after))
            .where(c.status == _VALID, c.not_after >= now, c.profile.in_(profiles))
            .group_by(c.profile)
            .order_by(c.profile)
        )
        with self.engine.connect() as conn:
            return [(r[0], int(r[1]), r[2]) for r in conn.execute(stmt)]

    def lifetimes(self, limit: int = 100_000) -> list[float]:
        """Lifetimes in days of the newest certificates (for the report's distribution)."""
        c = s.certificates.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(c.not_before, c.not_after).order_by(c.id.desc()).limit(limit)
            )
            return [(r[1] - r[0]).total_seconds() / 86400 for r in rows]

    def lint_summary(self) -> list[tuple[str, str, int]]:
        """Lint findings by (severity, code), most frequent first."""
        lf = s.lint_findings.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(lf.severity, lf.code, func.count().label("n"))
                .group_by(lf.severity, lf.code)
                .order_by(text("n DESC"))
                .limit(200)
            )
            return [(r[0], r[1], int(r[2])) for r in rows]

    def lint_status_counts(self) -> dict[str, int]:
        """Certificates by lint status ("pending" when not linted yet)."""
        c = s.certificates.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(c.lint_status, func.count()).group_by(c.lint_status))
            return {(r[0] or "pending"): int(r[1]) for r in rows}

    def certificates_of_device(
        self, device_id: str, now: datetime, limit: int = 50
    ) -> list[InventoryRow]:
        """A device's certificates, newest first (the detail page's history)."""
        c = s.certificates.c
        stmt = _columns().where(c.device_id == device_id).order_by(c.id.desc()).limit(limit)
        with self.engine.connect() as conn:
            return [_inventory(r, now) for r in conn.execute(stmt)]
