"""ACME state (RFC 8555): accounts, orders, authorizations, challenges, EAB, ARI overrides."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
)

from iotpki.store.schema.base import UTCDateTime, metadata

__all__ = [
    "acme_accounts",
    "acme_authorizations",
    "acme_challenges",
    "acme_eab",
    "acme_orders",
    "acme_renewal_overrides",
]

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
