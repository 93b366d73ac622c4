"""Revocation publication, operations monitoring, dashboard sessions and abuse counters."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from iotpki.store.schema.base import UTCDateTime, audit_events, certificates, metadata

__all__ = [
    "acme_attestations",
    "alert_deliveries",
    "campaign_members",
    "campaigns",
    "crl_numbers",
    "crl_partitions",
    "crls",
    "findings",
    "ingest_nonces",
    "key_attestations",
    "key_checks",
    "refusal_counters",
    "secret_lockouts",
    "signin_throttle",
    "usage_events",
    "users",
    "web_sessions",
]

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


# -- rotation campaigns (migration campaigns_0001) ------------------------------------------------

campaigns = Table(
    "campaigns",
    metadata,
    Column("campaign_id", String(32), primary_key=True),
    Column("name", String(128), nullable=False),
    Column("selector", Text, nullable=False),
    Column("deadline", UTCDateTime, nullable=False),
    Column("max_rate", String(32), nullable=False),  # a decimal: renewals per second
    Column("status", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("target_ca", String(64)),
    Column("profile", String(64)),
    Column("key_type", String(16)),
    Column("revoke_after", Boolean, nullable=False),
    Column("members", Integer, nullable=False),
)

campaign_members = Table(
    "campaign_members",
    metadata,
    Column("campaign_id", String(32), primary_key=True),
    Column("ca_name", String(64), primary_key=True),
    Column("serial", String(64), primary_key=True),
    Column("device_id", String(128)),
    Column("window_start", UTCDateTime, nullable=False),
    Column("window_end", UTCDateTime, nullable=False),
    Column("state", String(16), nullable=False),
    Column("replaced_by", String(64)),
    Column("replaced_at", UTCDateTime),
    Index("ix_campaign_members_certificate", "ca_name", "serial"),
    Index("ix_campaign_members_state", "campaign_id", "state"),
)
