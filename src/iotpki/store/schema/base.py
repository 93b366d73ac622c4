"""The core tables: CAs, certificates, devices, tokens, audit, lint; the timestamp type."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Dialect,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)

__all__ = [
    "UTCDateTime",
    "api_tokens",
    "audit_events",
    "audit_head",
    "blocked_keys",
    "cas",
    "certificates",
    "devices",
    "lint_findings",
    "metadata",
]


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as naive UTC and read back timezone-aware."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Convert to naive UTC for storage."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Attach UTC on the way out."""
        return None if value is None else value.replace(tzinfo=UTC)


metadata = MetaData()

cas = Table(
    "cas",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("parent", String(64)),
    Column("key_backend", String(32)),
    Column("key_ref", String(256)),
    Column("certificate_der", LargeBinary),
    Column("csr_der", LargeBinary),
    Column("created_at", UTCDateTime),
)

certificates = Table(
    "certificates",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ca_name", String(64), nullable=False),
    Column("serial", String(64), nullable=False),
    Column("profile", String(64), nullable=False),
    Column("device_id", String(128)),
    Column("subject", String(1024), nullable=False),
    Column("sans", Text, nullable=False),
    Column("not_before", UTCDateTime, nullable=False),
    Column("not_after", UTCDateTime, nullable=False),
    Column("key_fingerprint", String(64), nullable=False),
    Column("key_algorithm", String(16), nullable=False),
    Column("der", LargeBinary, nullable=False),
    Column("status", String(16), nullable=False),
    Column("revoked_at", UTCDateTime),
    Column("revocation_reason", String(32)),
    Column("invalidity_date", UTCDateTime),
    Column("issued_at", UTCDateTime),
    Column("lint_status", String(8)),
    Column("crl_partition", String(32)),  # migration revocation_0003; None: the CA-wide CRL
    UniqueConstraint("ca_name", "serial", name="uq_certificates_ca_serial"),
    Index("ix_certificates_serial", "serial"),
    Index("ix_certificates_device", "device_id"),
    Index("ix_certificates_key", "key_fingerprint"),
    Index("ix_certificates_not_after", "not_after"),
    Index("ix_certificates_status_not_after", "status", "not_after"),
    Index("ix_certificates_lint_pending", "lint_status", "id"),
)

blocked_keys = Table(
    "blocked_keys",
    metadata,
    Column("fingerprint", String(64), primary_key=True),
    Column("reason", String(256), nullable=False),
    Column("blocked_at", UTCDateTime, nullable=False),
)

devices = Table(
    "devices",
    metadata,
    Column("device_id", String(128), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("metadata", Text, nullable=False),
    Column("created_at", UTCDateTime),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("token_id", String(32), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("description", String(256), nullable=False),
    Column("secret_hash", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime),
    Column("revoked", Boolean, nullable=False),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("time", UTCDateTime, nullable=False),
    Column("actor", String(128), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", String(256), nullable=False),
    Column("data", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)

audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", Integer, nullable=False),
    Column("hash", String(64), nullable=False),
)

lint_findings = Table(
    "lint_findings",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ca_name", String(64), nullable=False),
    Column("serial", String(64), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("code", String(128), nullable=False),
    Column("node", String(256), nullable=False),
    Column("message", Text, nullable=False),
    Index("ix_lint_findings_cert", "ca_name", "serial"),
)

# -- revocation: the complete CRL's covering index (migration revocation_0002) ------------------

Index(
    "ix_certificates_crl",
    certificates.c.ca_name,
    certificates.c.not_after,
    certificates.c.serial,
    certificates.c.revoked_at,
    certificates.c.revocation_reason,
    certificates.c.invalidity_date,
    sqlite_where=certificates.c.status == "revoked",
    postgresql_where=certificates.c.status == "revoked",
)

# A partition's CRL reads its revoked certificates from this index alone; the publisher learns
# the partitions of new certificates through the second (migration revocation_0003).
Index(
    "ix_certificates_crl_partition",
    certificates.c.ca_name,
    certificates.c.crl_partition,
    certificates.c.not_after,
    certificates.c.serial,
    certificates.c.revoked_at,
    certificates.c.revocation_reason,
    certificates.c.invalidity_date,
    certificates.c.status,  # so that SQLite reads the partition from the index alone
    sqlite_where=certificates.c.status == "revoked",
    postgresql_where=certificates.c.status == "revoked",
)
Index("ix_certificates_partition", certificates.c.ca_name, certificates.c.crl_partition)

# -- the inventory's device-ID prefix page (migration monitoring_0003) ---------------------------

Index("ix_certificates_device_id", certificates.c.device_id, certificates.c.id)
