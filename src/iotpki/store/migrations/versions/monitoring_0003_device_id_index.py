"""An index on certificates (device_id, id) that covers the inventory's device-ID prefix page.

Revision ID: monitoring_0003
Revises: monitoring_0002
"""

from alembic import op

revision = "monitoring_0003"
down_revision = "monitoring_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_certificates_device_id", "certificates", ["device_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_certificates_device_id", table_name="certificates")
