"""State every replica shares: CA keys of the file backend (encrypted PKCS#8), sealed installation
secrets, spent one-time tokens (ACME nonces, SCEP sender nonces, AK CA activations), windowed rate
counters, the OCSP responders' delegated certificates and registered trust anchors (the AK CA's
EK manufacturer roots, which lived as files in one replica's home).

Revision ID: replicas_0001
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "replicas_0001"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "wrapped_keys",
        sa.Column("key_ref", sa.String(length=128), nullable=False),
        sa.Column("pem", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key_ref"),
    )
    op.create_table(
        "sealed_secrets",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("salt", sa.LargeBinary(), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "spent_tokens",
        sa.Column("scope", sa.String(length=32), nullable=False),
        sa.Column("token", sa.String(length=128), nullable=False),
        sa.Column("value", sa.String(length=128), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("scope", "token"),
    )
    op.create_index("ix_spent_tokens_expires", "spent_tokens", ["expires_at"])
    op.create_table(
        "rate_counters",
        sa.Column("scope", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=256), nullable=False),
        sa.Column("window_start", sa.DateTime(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("scope", "key", "window_start"),
    )
    op.create_index("ix_rate_counters_window", "rate_counters", ["window_start"])
    op.create_table(
        "ocsp_responders",
        sa.Column("ca_name", sa.String(length=64), nullable=False),
        sa.Column("cert_der", sa.LargeBinary(), nullable=False),
        sa.Column("key_ref", sa.String(length=128), nullable=False),
        sa.Column("not_after", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("ca_name"),
    )
    op.create_table(
        "trusted_roots",
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("der", sa.LargeBinary(), nullable=False),
        sa.Column("added_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("kind", "fingerprint"),
    )


def downgrade() -> None:
    op.drop_table("trusted_roots")
    op.drop_table("ocsp_responders")
    op.drop_index("ix_rate_counters_window", table_name="rate_counters")
    op.drop_table("rate_counters")
    op.drop_index("ix_spent_tokens_expires", table_name="spent_tokens")
    op.drop_table("spent_tokens")
    op.drop_table("sealed_secrets")
    op.drop_table("wrapped_keys")
