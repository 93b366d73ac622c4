"""A partial covering index for the complete CRL's query: only revoked certificates, holding
every column the CRL lists, so a million entries are read from the index alone.

Revision ID: revocation_0002
Revises: revocation_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "revocation_0002"
down_revision = "revocation_0001"
branch_labels = None
depends_on = None

_REVOKED = sa.text("status = 'revoked'")


def upgrade() -> None:
    op.create_index(
        "ix_certificates_crl",
        "certificates",
        ["ca_name", "not_after", "serial", "revoked_at", "revocation_reason", "invalidity_date"],
        sqlite_where=_REVOKED,
        postgresql_where=_REVOKED,
    )


def downgrade() -> None:
    op.drop_index("ix_certificates_crl", table_name="certificates")
