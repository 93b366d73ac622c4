"""TPM key attestation: the attestation behind a certificate's key, and pending ACME ones.

Revision ID: attestation_0001
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "attestation_0001"
down_revision = "0001"
branch_labels = None
depends_on = None

_AK_COLUMNS = (
    ("key_fingerprint", sa.String(length=64), False),
    ("method", sa.String(length=32), False),
    ("attested_at", sa.DateTime(), False),
    ("device_identity", sa.String(length=256), True),
    ("ak_fingerprint", sa.String(length=64), False),
    ("ak_issuer", sa.String(length=512), False),
    ("root_fingerprint", sa.String(length=64), False),
    ("root_subject", sa.String(length=512), False),
)


def _columns() -> list[sa.Column[object]]:
    return [sa.Column(name, kind, nullable=nullable) for name, kind, nullable in _AK_COLUMNS]


def upgrade() -> None:
    op.create_table(
        "key_attestations",
        sa.Column("ca_name", sa.String(length=64), nullable=False),
        sa.Column("serial", sa.String(length=64), nullable=False),
        *_columns(),
        sa.PrimaryKeyConstraint("ca_name", "serial"),
    )
    op.create_index("ix_key_attestations_key", "key_attestations", ["key_fingerprint"])
    op.create_table(
        "acme_attestations",
        sa.Column("authz_id", sa.String(length=32), nullable=False),
        sa.Column("order_id", sa.String(length=32), nullable=False),
        sa.Column("key_spki", sa.LargeBinary(), nullable=False),
        *_columns(),
        sa.PrimaryKeyConstraint("authz_id"),
    )
    op.create_index("ix_acme_attestations_order", "acme_attestations", ["order_id"])


def downgrade() -> None:
    op.drop_index("ix_acme_attestations_order", table_name="acme_attestations")
    op.drop_table("acme_attestations")
    op.drop_index("ix_key_attestations_key", table_name="key_attestations")
    op.drop_table("key_attestations")
