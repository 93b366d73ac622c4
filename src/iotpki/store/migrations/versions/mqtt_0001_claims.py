"""Provisioning over MQTT: bootstrap CAs gain a kind (``idevid``, or ``claim`` for a batch's
claim certificates) and the device IDs a claim CA's batches may request; answered provisioning
request IDs are kept so that a duplicate delivery issues nothing.

Revision ID: mqtt_0001
Revises: 0002_est
"""

import sqlalchemy as sa
from alembic import op

revision = "mqtt_0001"
down_revision = "0002_est"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("bootstrap_cas") as batch:
        batch.add_column(
            sa.Column("kind", sa.String(length=16), nullable=False, server_default="idevid")
        )
        batch.add_column(sa.Column("device_pattern", sa.String(length=256), nullable=True))
    op.create_table(
        "provisioning_requests",
        sa.Column("request_key", sa.String(length=256), nullable=False),
        sa.Column("ca_name", sa.String(length=64), nullable=False),
        sa.Column("serial", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("request_key"),
    )


def downgrade() -> None:
    op.drop_table("provisioning_requests")
    with op.batch_alter_table("bootstrap_cas") as batch:
        batch.drop_column("device_pattern")
        batch.drop_column("kind")
