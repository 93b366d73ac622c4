"""The store's access control: API tokens, dashboard users, sessions and sign-in throttling."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from iotpki.core.models import (
    ApiTokenRecord,
    SessionRecord,
    ThrottleRecord,
    UserRecord,
)

__all__ = ["SessionTx", "TokenTx"]


class TokenTx(Protocol):
    """API tokens."""

    def add_token(self, record: ApiTokenRecord) -> None:
        """Insert an API token."""
        ...

    def get_token(self, token_id: str) -> ApiTokenRecord | None:
        """An API token by its public id."""
        ...

    def list_tokens(self) -> list[ApiTokenRecord]:
        """Every API token, revoked ones included, oldest first."""
        ...

    def revoke_token(self, token_id: str) -> None:
        """Mark an API token revoked."""
        ...


class SessionTx(Protocol):
    """Dashboard users, their sessions and sign-in throttling."""

    def get_user(self, username: str) -> UserRecord | None:
        """A dashboard user by name."""
        ...

    def put_user(self, record: UserRecord) -> None:
        """Create or replace a dashboard user."""
        ...

    def add_session(self, record: SessionRecord) -> None:
        """Insert a session."""
        ...

    def get_session(self, session_hash: str) -> SessionRecord | None:
        """A session by the hash of its id."""
        ...

    def delete_session(self, session_hash: str) -> int:
        """End one session; the number of rows deleted."""
        ...

    def delete_sessions(self, subject: str) -> int:
        """End every session of a token or user; how many there were."""
        ...

    def purge_sessions(self, now: datetime) -> int:
        """Delete sessions that have expired."""
        ...

    def throttle_states(self, keys: Sequence[str], *, lock: bool = False) -> list[ThrottleRecord]:
        """The throttling state kept under these keys (locked for update on PostgreSQL)."""
        ...

    def put_throttle(self, record: ThrottleRecord) -> None:
        """Insert or replace the state under one key."""
        ...

    def clear_throttle(self, key: str) -> None:
        """Forget the failures counted under one key."""
        ...
