"""SQL for who may sign in: API tokens, dashboard users, sessions and sign-in throttling.

A mixin of :class:`iotpki.store.sql.SqlTransaction`, like :mod:`iotpki.store.enrollment`, so
that a change and the audit event recording it commit together.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.engine import Row

from iotpki.core.models import ApiTokenRecord, Role, SessionRecord, ThrottleRecord, UserRecord
from iotpki.store import schema as s

__all__ = ["AuthSql"]

_MAX_TOKENS = 10_000


def _token(row: Row[Any]) -> ApiTokenRecord:
    return ApiTokenRecord(
        token_id=row.token_id,
        role=Role(row.role),
        description=row.description,
        secret_hash=row.secret_hash,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked=row.revoked,
    )


class AuthSql:
    """Tokens, users, sessions and throttling state inside one transaction."""

    _conn: Connection
    _dialect: str

    # -- API tokens -----------------------------------------------------------------------------

    def add_token(self, record: ApiTokenRecord) -> None:
        """Insert an API token."""
        self._conn.execute(
            insert(s.api_tokens).values(
                token_id=record.token_id,
                role=str(record.role),
                description=record.description,
                secret_hash=record.secret_hash,
                created_at=record.created_at,
                expires_at=record.expires_at,
                revoked=record.revoked,
            )
        )

    def get_token(self, token_id: str) -> ApiTokenRecord | None:
        """An API token by its public id."""
        row = self._conn.execute(
            select(s.api_tokens).where(s.api_tokens.c.token_id == token_id)
        ).first()
        return None if row is None else _token(row)

    def list_tokens(self) -> list[ApiTokenRecord]:
        """Every API token, revoked ones included, oldest first."""
        t = s.api_tokens.c
        rows = self._conn.execute(
            select(s.api_tokens).order_by(t.created_at, t.token_id).limit(_MAX_TOKENS)
        )
        return [_token(row) for row in rows]

    def revoke_token(self, token_id: str) -> None:
        """Mark an API token revoked."""
        self._conn.execute(
            update(s.api_tokens).where(s.api_tokens.c.token_id == token_id).values(revoked=True)
        )

    # -- dashboard users ------------------------------------------------------------------------

    def get_user(self, username: str) -> UserRecord | None:
        """A dashboard user by name."""
        row = self._conn.execute(select(s.users).where(s.users.c.username == username)).first()
        if row is None:
            return None
        return UserRecord(
            username=row.username,
            role=Role(row.role),
            password_hash=row.password_hash,
            created_at=row.created_at,
            disabled=bool(row.disabled),
        )

    def put_user(self, record: UserRecord) -> None:
        """Create or replace a dashboard user."""
        self._conn.execute(delete(s.users).where(s.users.c.username == record.username))
        self._conn.execute(
            insert(s.users).values(
                username=record.username,
                role=str(record.role),
                password_hash=record.password_hash,
                created_at=record.created_at,
                disabled=record.disabled,
            )
        )

    # -- dashboard sessions ---------------------------------------------------------------------

    def add_session(self, record: SessionRecord) -> None:
        """Insert a session."""
        self._conn.execute(
            insert(s.web_sessions).values(
                session_hash=record.session_hash,
                subject=record.subject,
                role=str(record.role),
                csrf=record.csrf,
                created_at=record.created_at,
                expires_at=record.expires_at,
            )
        )

    def get_session(self, session_hash: str) -> SessionRecord | None:
        """A session by the hash of its id."""
        w = s.web_sessions.c
        row = self._conn.execute(
            select(s.web_sessions).where(w.session_hash == session_hash)
        ).first()
        if row is None:
            return None
        return SessionRecord(
            session_hash=row.session_hash,
            subject=row.subject,
            role=Role(row.role),
            csrf=row.csrf,
            created_at=row.created_at,
            expires_at=row.expires_at,
        )

    def delete_session(self, session_hash: str) -> int:
        """End one session; the number of rows deleted."""
        w = s.web_sessions.c
        return self._conn.execute(
            delete(s.web_sessions).where(w.session_hash == session_hash)
        ).rowcount

    def delete_sessions(self, subject: str) -> int:
        """End every session of a token or user; how many there were."""
        w = s.web_sessions.c
        return self._conn.execute(delete(s.web_sessions).where(w.subject == subject)).rowcount

    def purge_sessions(self, now: datetime) -> int:
        """Delete sessions that have expired."""
        w = s.web_sessions.c
        return self._conn.execute(delete(s.web_sessions).where(w.expires_at <= now)).rowcount

    # -- sign-in throttling ---------------------------------------------------------------------

    def throttle_states(self, keys: Sequence[str], *, lock: bool = False) -> list[ThrottleRecord]:
        """The throttling state kept under these keys (locked for update on PostgreSQL)."""
        t = s.signin_throttle.c
        query = select(s.signin_throttle).where(t.key.in_(list(keys)))
        if lock and self._dialect == "postgresql":
            query = query.with_for_update()
        return [
            ThrottleRecord(row.key, row.failures, row.last_failure, row.blocked_until)
            for row in self._conn.execute(query)
        ]

    def put_throttle(self, record: ThrottleRecord) -> None:
        """Insert or replace the state under one key."""
        values = {
            "failures": record.failures,
            "last_failure": record.last_failure,
            "blocked_until": record.blocked_until,
        }
        t = s.signin_throttle.c
        done = self._conn.execute(
            update(s.signin_throttle).where(t.key == record.key).values(values)
        )
        if done.rowcount == 0:
            self._conn.execute(insert(s.signin_throttle).values(key=record.key, **values))

    def clear_throttle(self, key: str) -> None:
        """Forget the failures counted under one key."""
        self._conn.execute(delete(s.signin_throttle).where(s.signin_throttle.c.key == key))
