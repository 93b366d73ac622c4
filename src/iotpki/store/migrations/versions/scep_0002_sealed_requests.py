"""SCEP: no challenge password at rest. A transaction keeps no CSR once answered, and a pending
one keeps its CSR encrypted to the RA (``sealed_csr``, ``sealed_by``) until an operator decides.

Rows written before: the CSRs of answered transactions are dropped here; a pending one keeps its
plain CSR until it is decided. SQLite may still hold the dropped bytes in free pages until the
database is vacuumed (docs/scep.md: ``VACUUM`` after this upgrade).

Revision ID: scep_0002
Revises: scep_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "scep_0002"
down_revision = "scep_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("scep_transactions") as batch:
        batch.alter_column("csr_der", existing_type=sa.LargeBinary(), nullable=True)
        batch.add_column(sa.Column("sealed_csr", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("sealed_by", sa.String(length=64), nullable=True))
    op.execute("UPDATE scep_transactions SET csr_der = NULL WHERE status <> 'pending'")


def downgrade() -> None:
    empty = sa.text("UPDATE scep_transactions SET csr_der = :empty WHERE csr_der IS NULL")
    op.get_bind().execute(empty, {"empty": b""})
    with op.batch_alter_table("scep_transactions") as batch:
        batch.drop_column("sealed_by")
        batch.drop_column("sealed_csr")
        batch.alter_column("csr_der", existing_type=sa.LargeBinary(), nullable=False)
