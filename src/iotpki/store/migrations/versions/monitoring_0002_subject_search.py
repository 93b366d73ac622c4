"""Trigram indexes for the inventory's subject and SAN substring search.

SQLite: an FTS5 table with the ``trigram`` tokenizer over ``certificates.subject`` and ``sans``
(external content, kept current by triggers). PostgreSQL: ``pg_trgm`` GIN indexes on both
columns; where the extension cannot be created (no privilege) the search still works, by scan.

Revision ID: monitoring_0002
Revises: monitoring_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "monitoring_0002"
down_revision = "monitoring_0001"
branch_labels = None
depends_on = None

_SQLITE_UP = (
    "CREATE VIRTUAL TABLE certificates_search USING fts5("
    "subject, sans, content='certificates', content_rowid='id', tokenize='trigram')",
    "CREATE TRIGGER certificates_search_insert AFTER INSERT ON certificates BEGIN "
    "INSERT INTO certificates_search(rowid, subject, sans) "
    "VALUES (new.id, new.subject, new.sans); END",
    "CREATE TRIGGER certificates_search_delete AFTER DELETE ON certificates BEGIN "
    "INSERT INTO certificates_search(certificates_search, rowid, subject, sans) "
    "VALUES ('delete', old.id, old.subject, old.sans); END",
    "CREATE TRIGGER certificates_search_update AFTER UPDATE OF subject, sans ON certificates "
    "BEGIN INSERT INTO certificates_search(certificates_search, rowid, subject, sans) "
    "VALUES ('delete', old.id, old.subject, old.sans); "
    "INSERT INTO certificates_search(rowid, subject, sans) "
    "VALUES (new.id, new.subject, new.sans); END",
    "INSERT INTO certificates_search(certificates_search) VALUES ('rebuild')",
)
_SQLITE_DOWN = (
    "DROP TRIGGER IF EXISTS certificates_search_update",
    "DROP TRIGGER IF EXISTS certificates_search_delete",
    "DROP TRIGGER IF EXISTS certificates_search_insert",
    "DROP TABLE IF EXISTS certificates_search",
)


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for statement in _SQLITE_UP:
            op.execute(statement)
    elif bind.dialect.name == "postgresql":
        try:
            with bind.begin_nested():
                bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
        except sa.exc.DBAPIError:
            return  # no privilege to create the extension: substring search scans
        for column in ("subject", "sans"):
            op.execute(
                f"CREATE INDEX IF NOT EXISTS ix_certificates_{column}_trgm "
                f"ON certificates USING gin ({column} gin_trgm_ops)"
            )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for statement in _SQLITE_DOWN:
            op.execute(statement)
    elif bind.dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_certificates_sans_trgm")
        op.execute("DROP INDEX IF EXISTS ix_certificates_subject_trgm")
