"""Durable state on SQLAlchemy: SQLite in the data directory by default, PostgreSQL by URL."""

from iotpki.store.sql import SqlStore, SqlTransaction

__all__ = ["SqlStore", "SqlTransaction"]
