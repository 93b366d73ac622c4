"""Rotation campaigns: the campaigns and, per campaign, the certificates it replaces with their
renewal windows and where each stands.

Revision ID: campaigns_0001
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "campaigns_0001"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "campaigns",
        sa.Column("campaign_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("selector", sa.Text(), nullable=False),
        sa.Column("deadline", sa.DateTime(), nullable=False),
        sa.Column("max_rate", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("target_ca", sa.String(length=64), nullable=True),
        sa.Column("profile", sa.String(length=64), nullable=True),
        sa.Column("key_type", sa.String(length=16), nullable=True),
        sa.Column("revoke_after", sa.Boolean(), nullable=False),
        sa.Column("members", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("campaign_id"),
    )
    op.create_table(
        "campaign_members",
        sa.Column("campaign_id", sa.String(length=32), nullable=False),
        sa.Column("ca_name", sa.String(length=64), nullable=False),
        sa.Column("serial", sa.String(length=64), nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=True),
        sa.Column("window_start", sa.DateTime(), nullable=False),
        sa.Column("window_end", sa.DateTime(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("replaced_by", sa.String(length=64), nullable=True),
        sa.Column("replaced_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("campaign_id", "ca_name", "serial"),
    )
    op.create_index("ix_campaign_members_certificate", "campaign_members", ["ca_name", "serial"])
    op.create_index("ix_campaign_members_state", "campaign_members", ["campaign_id", "state"])


def downgrade() -> None:
    op.drop_index("ix_campaign_members_state", table_name="campaign_members")
    op.drop_index("ix_campaign_members_certificate", table_name="campaign_members")
    op.drop_table("campaign_members")
    op.drop_table("campaigns")
