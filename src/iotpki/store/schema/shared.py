"""State every replica reads (migration replicas_0001): CA keys, sealed secrets, spent one-time
tokens, rate counters, the OCSP responders' delegated certificates and registered trust
anchors."""

from __future__ import annotations

from sqlalchemy import Column, Index, Integer, LargeBinary, String, Table

from iotpki.store.schema.base import UTCDateTime, metadata

__all__ = [
    "ocsp_responders",
    "rate_counters",
    "sealed_secrets",
    "spent_tokens",
    "trusted_roots",
    "wrapped_keys",
]

wrapped_keys = Table(
    "wrapped_keys",
    metadata,
    Column("key_ref", String(128), primary_key=True),
    Column("pem", LargeBinary, nullable=False),  # PKCS#8, encrypted under the passphrase
    Column("created_at", UTCDateTime, nullable=False),
)

sealed_secrets = Table(
    "sealed_secrets",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("salt", LargeBinary, nullable=False),
    Column("sealed", LargeBinary, nullable=False),  # AES-GCM under a scrypt key of the passphrase
)

spent_tokens = Table(
    "spent_tokens",
    metadata,
    Column("scope", String(32), primary_key=True),
    Column("token", String(128), primary_key=True),
    Column("value", String(128), nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
)
Index("ix_spent_tokens_expires", spent_tokens.c.expires_at)

rate_counters = Table(
    "rate_counters",
    metadata,
    Column("scope", String(32), primary_key=True),
    Column("key", String(256), primary_key=True),
    Column("window_start", UTCDateTime, primary_key=True),
    Column("count", Integer, nullable=False),
)
Index("ix_rate_counters_window", rate_counters.c.window_start)

ocsp_responders = Table(
    "ocsp_responders",
    metadata,
    Column("ca_name", String(64), primary_key=True),
    Column("cert_der", LargeBinary, nullable=False),
    Column("key_ref", String(128), nullable=False),
    Column("not_after", UTCDateTime, nullable=False),
)

trusted_roots = Table(
    "trusted_roots",
    metadata,
    Column("kind", String(32), primary_key=True),
    Column("fingerprint", String(64), primary_key=True),
    Column("der", LargeBinary, nullable=False),
    Column("added_at", UTCDateTime, nullable=False),
)
