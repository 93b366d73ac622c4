"""The database schema (SQLAlchemy Core); Alembic migrations create and evolve it."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
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
    "alert_deliveries",
    "api_tokens",
    "audit_events",
    "audit_head",
    "blocked_keys",
    "bootstrap_cas",
    "cas",
    "certificates",
    "crl_numbers",
    "crl_partitions",
    "crls",
    "devices",
    "enrollment_approvals",
    "enrollment_secrets",
    "findings",
    "idevid_bindings",
    "ingest_nonces",
    "key_checks",
    "lint_findings",
    "metadata",
    "refusal_counters",
    "scep_challenges",
    "scep_ras",
    "scep_transactions",
    "secret_lockouts",
    "signin_throttle",
    "usage_events",
    "users",
    "web_sessions",
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

# -- ACME (RFC 8555): migration acme_0001 -------------------------------------------------------

acme_eab = Table(
    "acme_eab",
    metadata,
    Column("key_id", String(64), primary_key=True),
    Column("hmac_key", LargeBinary, nullable=False),
    Column("tenant", String(128), nullable=False),
    Column("profile", String(64), nullable=False),
    Column("device_profile", String(64), nullable=False),
    Column("device_patterns", Text, nullable=False),
    Column("description", String(256), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime),
    Column("used_at", UTCDateTime),
    Column("used_by", String(32)),
    Column("revoked", Boolean, nullable=False),
)

acme_accounts = Table(
    "acme_accounts",
    metadata,
    Column("account_id", String(32), primary_key=True),
    Column("thumbprint", String(64), nullable=False, unique=True),
    Column("jwk", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("contacts", Text, nullable=False),
    Column("terms_agreed", Boolean, nullable=False),
    Column("eab_key_id", String(64)),
    Column("tenant", String(128)),
    Column("profile", String(64), nullable=False),
    Column("device_profile", String(64), nullable=False),
    Column("device_patterns", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

acme_orders = Table(
    "acme_orders",
    metadata,
    Column("order_id", String(32), primary_key=True),
    Column("account_id", String(32), nullable=False, index=True),
    Column("status", String(16), nullable=False),
    Column("identifiers", Text, nullable=False),
    Column("profile", String(64), nullable=False),
    Column("expires", UTCDateTime, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("certificate_serial", String(64)),
    Column("certificate_ca", String(64)),
    Column("error", Text),
    Column("replaces", String(256), index=True),
    Index("ix_acme_orders_certificate", "certificate_ca", "certificate_serial"),
)

acme_authorizations = Table(
    "acme_authorizations",
    metadata,
    Column("authz_id", String(32), primary_key=True),
    Column("order_id", String(32), nullable=False, index=True),
    Column("account_id", String(32), nullable=False),
    Column("identifier_type", String(32), nullable=False),
    Column("identifier_value", String(256), nullable=False),
    Column("status", String(16), nullable=False),
    Column("expires", UTCDateTime, nullable=False),
    Index("ix_acme_authz_account_identifier", "account_id", "identifier_value"),
)

acme_challenges = Table(
    "acme_challenges",
    metadata,
    Column("challenge_id", String(32), primary_key=True),
    Column("authz_id", String(32), nullable=False, index=True),
    Column("type", String(32), nullable=False),
    Column("token", String(64), nullable=False),
    Column("status", String(16), nullable=False, index=True),
    Column("validated_at", UTCDateTime),
    Column("error", Text),
    Column("attempts", Integer, nullable=False),
)

acme_renewal_overrides = Table(
    "acme_renewal_overrides",
    metadata,
    Column("override_id", String(32), primary_key=True),
    Column("window_start", UTCDateTime, nullable=False),
    Column("window_end", UTCDateTime, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("serial", String(64)),
    Column("ca_name", String(64)),
    Column("profile", String(64)),
    Column("issued_before", UTCDateTime),
    Column("explanation_url", String(512)),
    Column("actor", String(128), nullable=False),
)

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

# -- revocation publication (migration revocation_0001) -----------------------------------------

Index(
    "ix_certificates_ca_status_revoked",
    certificates.c.ca_name,
    certificates.c.status,
    certificates.c.revoked_at,
)

crl_numbers = Table(
    "crl_numbers",
    metadata,
    Column("ca_name", String(64), primary_key=True),
    Column("last_number", BigInteger, nullable=False),
)

crls = Table(
    "crls",
    metadata,
    Column("ca_name", String(64), primary_key=True),
    Column("kind", String(8), primary_key=True),  # "full" or "delta": the latest of each
    Column("number", BigInteger, nullable=False),
    Column("base_number", BigInteger),
    Column("this_update", UTCDateTime, nullable=False),
    Column("next_update", UTCDateTime, nullable=False),
    Column("entries", Integer, nullable=False),
    Column("der", LargeBinary, nullable=False),
)

# The latest complete and delta CRL of each partition (migration revocation_0003).
crl_partitions = Table(
    "crl_partitions",
    metadata,
    Column("ca_name", String(64), primary_key=True),
    Column("partition", String(32), primary_key=True),
    Column("kind", String(8), primary_key=True),
    Column("number", BigInteger, nullable=False),
    Column("base_number", BigInteger),
    Column("this_update", UTCDateTime, nullable=False),
    Column("next_update", UTCDateTime, nullable=False),
    Column("entries", Integer, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("der", LargeBinary, nullable=False),
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

# -- operations monitoring (migration monitoring_0001) ------------------------------------------

Index("ix_certificates_profile_id", certificates.c.profile, certificates.c.id)
Index("ix_certificates_status_id", certificates.c.status, certificates.c.id)
Index("ix_audit_events_time", audit_events.c.time)

findings = Table(
    "findings",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("check", String(64), nullable=False),
    Column("key", String(256), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("status", String(16), nullable=False),  # "open" or "resolved"
    Column("summary", String(512), nullable=False),
    Column("ca_name", String(64)),
    Column("serial", String(64)),
    Column("device_id", String(128)),
    Column("evidence", Text, nullable=False),
    Column("state", String(64), nullable=False),  # hash of what an alert says
    Column("alerted_state", String(64)),
    Column("first_seen", UTCDateTime, nullable=False),
    Column("last_seen", UTCDateTime, nullable=False),
    Column("resolved_at", UTCDateTime),
    UniqueConstraint("check", "key", name="uq_findings_check_key"),
    Index("ix_findings_status_check", "status", "check"),
    Index("ix_findings_serial", "serial"),
)

usage_events = Table(
    "usage_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("time", UTCDateTime, nullable=False),
    Column("kind", String(16), nullable=False),  # "tls", "ocsp", "enroll", "connect"
    Column("serial", String(64), nullable=False),
    Column("ca_name", String(64)),
    Column("client_id", String(256)),
    Column("source", String(128)),
    Column("reporter", String(128), nullable=False),
    Index("ix_usage_events_time", "time"),
    Index("ix_usage_events_serial_time", "serial", "time"),
    Index("ix_usage_events_client_time", "client_id", "time"),
)

ingest_nonces = Table(
    "ingest_nonces",
    metadata,
    Column("nonce", String(64), primary_key=True),
    Column("reporter", String(64), nullable=False),
    Column("seen_at", UTCDateTime, nullable=False),
    Index("ix_ingest_nonces_seen", "seen_at"),
)

alert_deliveries = Table(
    "alert_deliveries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("finding_id", Integer, nullable=False),
    Column("target", String(512), nullable=False),
    Column("event", String(16), nullable=False),
    Column("payload", Text, nullable=False),
    Column("status", String(16), nullable=False),  # "pending", "delivered", "failed"
    Column("attempts", Integer, nullable=False),
    Column("http_status", Integer),
    Column("last_error", String(512)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("delivered_at", UTCDateTime),
    Index("ix_alert_deliveries_due", "status", "next_attempt_at"),
)

key_checks = Table(
    "key_checks",
    metadata,
    Column("fingerprint", String(64), primary_key=True),
    Column("result", String(16), nullable=False),  # "ok" or "weak"
    Column("detail", Text, nullable=False),
    Column("checked_at", UTCDateTime, nullable=False),
)

users = Table(
    "users",
    metadata,
    Column("username", String(64), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("password_hash", String(256), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("disabled", Boolean, nullable=False),
)

# TPM key attestation (issue 9): the attestation behind a certificate's key, and the attested
# key of an ACME authorization between device-attest-01 and finalize.
key_attestations = Table(
    "key_attestations",
    metadata,
    Column("ca_name", String(64), primary_key=True),
    Column("serial", String(64), primary_key=True),
    Column("key_fingerprint", String(64), nullable=False),
    Column("method", String(32), nullable=False),
    Column("attested_at", UTCDateTime, nullable=False),
    Column("device_identity", String(256)),
    Column("ak_fingerprint", String(64), nullable=False),
    Column("ak_issuer", String(512), nullable=False),
    Column("root_fingerprint", String(64), nullable=False),
    Column("root_subject", String(512), nullable=False),
    Index("ix_key_attestations_key", "key_fingerprint"),
)

acme_attestations = Table(
    "acme_attestations",
    metadata,
    Column("authz_id", String(32), primary_key=True),
    Column("order_id", String(32), nullable=False),
    Column("key_spki", LargeBinary, nullable=False),
    Column("key_fingerprint", String(64), nullable=False),
    Column("method", String(32), nullable=False),
    Column("attested_at", UTCDateTime, nullable=False),
    Column("device_identity", String(256)),
    Column("ak_fingerprint", String(64), nullable=False),
    Column("ak_issuer", String(512), nullable=False),
    Column("root_fingerprint", String(64), nullable=False),
    Column("root_subject", String(512), nullable=False),
    Index("ix_acme_attestations_order", "order_id"),
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

# -- dashboard sessions and sign-in throttling (migration auth_0001) ----------------------------

web_sessions = Table(
    "web_sessions",
    metadata,
    Column("session_hash", String(64), primary_key=True),  # SHA-256 of the cookie's id, hex
    Column("subject", String(160), nullable=False),
    Column("role", String(16), nullable=False),
    Column("csrf", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Index("ix_web_sessions_subject", "subject"),
    Index("ix_web_sessions_expires", "expires_at"),
)

signin_throttle = Table(
    "signin_throttle",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("last_failure", UTCDateTime, nullable=False),
    Column("blocked_until", UTCDateTime),
)

# -- abuse: folded anonymous refusals, per-source secret lockouts (migration abuse_0001) --------

refusal_counters = Table(
    "refusal_counters",
    metadata,
    Column("source", String(64), primary_key=True),
    Column("action", String(64), primary_key=True),
    Column("code", String(64), primary_key=True),
    Column("actor", String(128), nullable=False),
    Column("window_start", UTCDateTime, nullable=False),
    Column("last_time", UTCDateTime, nullable=False),
    Column("repeats", Integer, nullable=False),
    Column("target", String(256), nullable=False),
    Column("reason", String(512), nullable=False),
    Index("ix_refusal_counters_window", "window_start"),
)

secret_lockouts = Table(
    "secret_lockouts",
    metadata,
    Column("device_id", String(128), primary_key=True),
    Column("source", String(64), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("locked_until", UTCDateTime),
)
