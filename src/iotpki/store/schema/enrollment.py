"""Enrollment state: EST bootstrap CAs, secrets, approvals; SCEP challenges, RAs, transactions."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
)

from iotpki.store.schema.base import UTCDateTime, metadata

__all__ = [
    "bootstrap_cas",
    "enrollment_approvals",
    "enrollment_secrets",
    "idevid_bindings",
    "provisioning_requests",
    "scep_challenges",
    "scep_ras",
    "scep_transactions",
]

# -- EST enrollment (migration 0002_est) ---------------------------------------------------------

bootstrap_cas = Table(
    "bootstrap_cas",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("certificate_der", LargeBinary, nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("enroll_policy", String(16), nullable=False),
    Column("profile", String(64)),
    Column("approval", Boolean, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", UTCDateTime),
    Column("kind", String(16), nullable=False, server_default="idevid"),  # mqtt_0001
    Column("device_pattern", String(256)),
)

# -- provisioning over MQTT (migration mqtt_0001) ------------------------------------------------

provisioning_requests = Table(  # a request ID answered once: a duplicate delivery issues nothing
    "provisioning_requests",
    metadata,
    Column("request_key", String(256), primary_key=True),
    Column("ca_name", String(64), nullable=False),
    Column("serial", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

idevid_bindings = Table(
    "idevid_bindings",
    metadata,
    Column("bootstrap_ca", String(64), primary_key=True),
    Column("idevid", String(128), primary_key=True),
    Column("device_id", String(128), nullable=False),
    Column("created_at", UTCDateTime),
)

enrollment_secrets = Table(
    "enrollment_secrets",
    metadata,
    Column("secret_id", String(32), primary_key=True),
    Column("device_id", String(128), nullable=False),
    Column("secret_hash", String(64), nullable=False),
    Column("profile", String(64)),
    Column("approval", Boolean, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("used_at", UTCDateTime),
    Column("failed_attempts", Integer, nullable=False),
    Column("locked_until", UTCDateTime),
    Index("ix_enrollment_secrets_device", "device_id"),
)

enrollment_approvals = Table(
    "enrollment_approvals",
    metadata,
    Column("request_id", String(32), primary_key=True),
    Column("device_id", String(128), nullable=False),
    Column("method", String(16), nullable=False),
    Column("profile", String(64), nullable=False),
    Column("ca_name", String(64)),
    Column("csr_fingerprint", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("decided_at", UTCDateTime),
    Column("decided_by", String(128)),
    Column("serial", String(64)),
    Index("ix_enrollment_approvals_device", "device_id", "csr_fingerprint"),
    Index("ix_enrollment_approvals_status", "status"),
)

# -- SCEP (migration scep_0001) ------------------------------------------------------------------

scep_challenges = Table(
    "scep_challenges",
    metadata,
    Column("challenge_id", String(32), primary_key=True),
    Column("device_id", String(128), nullable=False),
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("profile", String(64), nullable=False),
    Column("ca_name", String(64)),
    Column("approval", Boolean, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("used_at", UTCDateTime),
    Column("transaction_id", String(128)),
)

scep_transactions = Table(
    "scep_transactions",
    metadata,
    Column("ca_name", String(64), primary_key=True),
    Column("transaction_id", String(128), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("key_fingerprint", String(64), nullable=False),
    Column("csr_der", LargeBinary),
    Column("device_id", String(128)),
    Column("profile", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("serial", String(64)),
    Column("fail_info", String(16)),
    Column("renewed_from", String(64)),
    Column("challenge_id", String(32)),
    Column("decided_by", String(128)),
    Column("sealed_csr", LargeBinary),  # migration scep_0002
    Column("sealed_by", String(64)),
    Index("ix_scep_transactions_status", "status"),
)

scep_ras = Table(
    "scep_ras",
    metadata,
    Column("ca_name", String(64), primary_key=True),
    Column("serial", String(64), primary_key=True),
    Column("key_backend", String(32), nullable=False),
    Column("key_ref", String(256), nullable=False),
    Column("certificate_der", LargeBinary, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)
