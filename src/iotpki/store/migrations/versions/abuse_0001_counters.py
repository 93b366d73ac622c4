"""Abuse counters: anonymous refusals folded per source and window, and failed enrollment-secret
guesses per device and source address.

Revision ID: abuse_0001
Revises: 0002_est
"""

import sqlalchemy as sa
from alembic import op

revision = "abuse_0001"
down_revision = "0002_est"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "refusal_counters",
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("window_start", sa.DateTime(), nullable=False),
        sa.Column("last_time", sa.DateTime(), nullable=False),
        sa.Column("repeats", sa.Integer(), nullable=False),
        sa.Column("target", sa.String(length=256), nullable=False),
        sa.Column("reason", sa.String(length=512), nullable=False),
        sa.PrimaryKeyConstraint("source", "action", "code"),
    )
    op.create_index("ix_refusal_counters_window", "refusal_counters", ["window_start"])
    op.create_table(
        "secret_lockouts",
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("locked_until", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("device_id", "source"),
    )


def downgrade() -> None:
    op.drop_table("secret_lockouts")
    op.drop_index("ix_refusal_counters_window", table_name="refusal_counters")
    op.drop_table("refusal_counters")
