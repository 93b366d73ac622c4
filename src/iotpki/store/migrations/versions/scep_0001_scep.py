"""SCEP: one-time challenge passwords, transactions and RA certificates.

Revision ID: scep_0001
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "scep_0001"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "scep_challenges",
        sa.Column("challenge_id", sa.String(length=32), nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("profile", sa.String(length=64), nullable=False),
        sa.Column("ca_name", sa.String(length=64), nullable=True),
        sa.Column("approval", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("used_at", sa.DateTime(), nullable=True),
        sa.Column("transaction_id", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("challenge_id"),
        sa.UniqueConstraint("secret_hash"),
    )
    op.create_table(
        "scep_transactions",
        sa.Column("ca_name", sa.String(length=64), nullable=False),
        sa.Column("transaction_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("key_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("csr_der", sa.LargeBinary(), nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=True),
        sa.Column("profile", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("serial", sa.String(length=64), nullable=True),
        sa.Column("fail_info", sa.String(length=16), nullable=True),
        sa.Column("renewed_from", sa.String(length=64), nullable=True),
        sa.Column("challenge_id", sa.String(length=32), nullable=True),
        sa.Column("decided_by", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("ca_name", "transaction_id"),
    )
    op.create_index("ix_scep_transactions_status", "scep_transactions", ["status"])
    op.create_table(
        "scep_ras",
        sa.Column("ca_name", sa.String(length=64), nullable=False),
        sa.Column("serial", sa.String(length=64), nullable=False),
        sa.Column("key_backend", sa.String(length=32), nullable=False),
        sa.Column("key_ref", sa.String(length=256), nullable=False),
        sa.Column("certificate_der", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("ca_name", "serial"),
    )


def downgrade() -> None:
    op.drop_table("scep_ras")
    op.drop_index("ix_scep_transactions_status", table_name="scep_transactions")
    op.drop_table("scep_transactions")
    op.drop_table("scep_challenges")
