"""CRL partitions: the partition each certificate names, the partitions' CRLs, their indexes.

Revision ID: revocation_0003
Revises: revocation_0002
"""

import sqlalchemy as sa
from alembic import op

revision = "revocation_0003"
down_revision = "revocation_0002"
branch_labels = None
depends_on = None

_REVOKED = sa.text("status = 'revoked'")


def upgrade() -> None:
    op.add_column("certificates", sa.Column("crl_partition", sa.String(32)))
    op.create_table(
        "crl_partitions",
        sa.Column("ca_name", sa.String(64), primary_key=True),
        sa.Column("partition", sa.String(32), primary_key=True),
        sa.Column("kind", sa.String(8), primary_key=True),
        sa.Column("number", sa.BigInteger, nullable=False),
        sa.Column("base_number", sa.BigInteger),
        sa.Column("this_update", sa.DateTime, nullable=False),
        sa.Column("next_update", sa.DateTime, nullable=False),
        sa.Column("entries", sa.Integer, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("der", sa.LargeBinary, nullable=False),
    )
    op.create_index(
        "ix_certificates_crl_partition",
        "certificates",
        [
            "ca_name",
            "crl_partition",
            "not_after",
            "serial",
            "revoked_at",
            "revocation_reason",
            "invalidity_date",
            "status",  # in the index too, so that SQLite reads a partition from it alone
        ],
        sqlite_where=_REVOKED,
        postgresql_where=_REVOKED,
    )
    op.create_index("ix_certificates_partition", "certificates", ["ca_name", "crl_partition"])


def downgrade() -> None:
    op.drop_index("ix_certificates_partition", table_name="certificates")
    op.drop_index("ix_certificates_crl_partition", table_name="certificates")
    op.drop_table("crl_partitions")
    op.drop_column("certificates", "crl_partition")
