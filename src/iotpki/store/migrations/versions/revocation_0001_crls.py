"""Revocation publication: CRL numbers, the latest complete and delta CRL per CA, and an index
that keeps the revoked-list query cheap with millions of certificates.

Revision ID: revocation_0001
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "revocation_0001"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "crl_numbers",
        sa.Column("ca_name", sa.String(length=64), nullable=False),
        sa.Column("last_number", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("ca_name"),
    )
    op.create_table(
        "crls",
        sa.Column("ca_name", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("number", sa.BigInteger(), nullable=False),
        sa.Column("base_number", sa.BigInteger(), nullable=True),
        sa.Column("this_update", sa.DateTime(), nullable=False),
        sa.Column("next_update", sa.DateTime(), nullable=False),
        sa.Column("entries", sa.Integer(), nullable=False),
        sa.Column("der", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("ca_name", "kind"),
    )
    op.create_index(
        "ix_certificates_ca_status_revoked",
        "certificates",
        ["ca_name", "status", "revoked_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_certificates_ca_status_revoked", table_name="certificates")
    op.drop_table("crls")
    op.drop_table("crl_numbers")
