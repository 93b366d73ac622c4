"""EST enrollment: bootstrap CAs, IDevID bindings, one-time secrets, approval requests.

Revision ID: 0002_est
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_est"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bootstrap_cas",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("certificate_der", sa.LargeBinary(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("enroll_policy", sa.String(length=16), nullable=False),
        sa.Column("profile", sa.String(length=64), nullable=True),
        sa.Column("approval", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "idevid_bindings",
        sa.Column("bootstrap_ca", sa.String(length=64), nullable=False),
        sa.Column("idevid", sa.String(length=128), nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("bootstrap_ca", "idevid"),
    )
    op.create_table(
        "enrollment_secrets",
        sa.Column("secret_id", sa.String(length=32), nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("profile", sa.String(length=64), nullable=True),
        sa.Column("approval", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("used_at", sa.DateTime(), nullable=True),
        sa.Column("failed_attempts", sa.Integer(), nullable=False),
        sa.Column("locked_until", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("secret_id"),
    )
    op.create_index("ix_enrollment_secrets_device", "enrollment_secrets", ["device_id"])
    op.create_table(
        "enrollment_approvals",
        sa.Column("request_id", sa.String(length=32), nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column("profile", sa.String(length=64), nullable=False),
        sa.Column("ca_name", sa.String(length=64), nullable=True),
        sa.Column("csr_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("decided_at", sa.DateTime(), nullable=True),
        sa.Column("decided_by", sa.String(length=128), nullable=True),
        sa.Column("serial", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("request_id"),
    )
    op.create_index(
        "ix_enrollment_approvals_device",
        "enrollment_approvals",
        ["device_id", "csr_fingerprint"],
    )
    op.create_index("ix_enrollment_approvals_status", "enrollment_approvals", ["status"])


def downgrade() -> None:
    op.drop_index("ix_enrollment_approvals_status", table_name="enrollment_approvals")
    op.drop_index("ix_enrollment_approvals_device", table_name="enrollment_approvals")
    op.drop_table("enrollment_approvals")
    op.drop_index("ix_enrollment_secrets_device", table_name="enrollment_secrets")
    op.drop_table("enrollment_secrets")
    op.drop_table("idevid_bindings")
    op.drop_table("bootstrap_cas")
