"""Run the Alembic migrations that ship inside the package."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

__all__ = ["upgrade"]

_SCRIPTS = Path(__file__).with_name("migrations")


def upgrade(engine: Engine) -> None:
    """Upgrade the database behind ``engine`` to the newest revision of every branch."""
    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "heads")
