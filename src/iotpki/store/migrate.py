"""Run the Alembic migrations that ship inside the package."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

from iotpki.store.locks import transaction_lock

__all__ = ["upgrade"]

_SCRIPTS = Path(__file__).with_name("migrations")


def upgrade(engine: Engine) -> None:
    """Upgrade the database behind ``engine`` to the newest revision of every branch.

    Processes that start together on an empty database take turns: the first creates the
    schema, the others find it current when they get the lock.
    """
    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    with engine.connect() as conn:
        conn.info["iotpki_immediate"] = True  # SQLite: BEGIN IMMEDIATE, one migrator at a time
        with conn.begin():
            transaction_lock(conn, "migrations")  # PostgreSQL: replicas started together wait
            config.attributes["connection"] = conn
            command.upgrade(config, "heads")
