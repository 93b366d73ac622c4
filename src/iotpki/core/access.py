"""API tokens, dashboard users and roles: who may do what.

A token is ``itk_<id>_<secret>``; the store keeps the id and the SHA-256 of the secret only
(the secret carries 256 random bits, so a fast hash suffices), compared in constant time.
Revoking a token, or replacing or disabling a user, ends their dashboard sessions in the same
transaction.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import replace
from datetime import timedelta

from iotpki.core.models import ApiTokenRecord, Role, UserRecord
from iotpki.core.ports import Clock, Store
from iotpki.errors import AuthError, Forbidden, NotFound

__all__ = [
    "PERMISSIONS",
    "authenticate",
    "authorize",
    "create_token",
    "disable_user",
    "list_tokens",
    "put_user",
    "revoke_token",
]

_PREFIX = "itk"

# What each role may do; actions are "<noun>:<verb>".
PERMISSIONS: dict[Role, frozenset[str]] = {
    Role.ADMIN: frozenset({"*"}),
    Role.OPERATOR: frozenset(
        {
            "cert:read",
            "cert:issue",
            "cert:revoke",
            "ca:read",
            "device:read",
            "device:write",
            "secret:create",
            "audit:read",
            "finding:read",
            "finding:write",
            "report:read",
        }
    ),
    Role.AUDITOR: frozenset(
        {"cert:read", "ca:read", "device:read", "audit:read", "report:read", "finding:read"}
    ),
    Role.PROVISIONER: frozenset({"device:read", "device:write", "secret:create"}),
    Role.REPORTER: frozenset({"usage:ingest"}),
}


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(
    store: Store,
    clock: Clock,
    *,
    role: Role,
    description: str,
    actor: str,
    lifetime: timedelta | None = None,
) -> tuple[str, ApiTokenRecord]:
    """Create a token; the returned string is shown once and never stored."""
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    now = clock.now()
    record = ApiTokenRecord(
        token_id=token_id,
        role=role,
        description=description[:256],
        secret_hash=_hash(secret),
        created_at=now,
        expires_at=now + lifetime if lifetime else None,
    )
    with store.transaction() as tx:
        tx.add_token(record)
        tx.append_audit(now, actor, "token.created", token_id, {"role": str(role)})
    return f"{_PREFIX}_{token_id}_{secret}", record


def authenticate(store: Store, clock: Clock, token: str) -> ApiTokenRecord:
    """The token's record if the token is genuine, current and not revoked."""
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != _PREFIX or not parts[1] or not parts[2]:
        raise AuthError("malformed API token")
    with store.transaction(readonly=True) as tx:
        record = tx.get_token(parts[1])
    if record is None or not hmac.compare_digest(record.secret_hash, _hash(parts[2])):
        raise AuthError("unknown API token")
    if record.revoked:
        raise AuthError("API token revoked")
    if record.expires_at is not None and record.expires_at <= clock.now():
        raise AuthError("API token expired")
    return record


def authorize(role: Role, action: str) -> None:
    """Raise ``Forbidden`` unless ``role`` may perform ``action``."""
    allowed = PERMISSIONS[role]
    if "*" not in allowed and action not in allowed:
        raise Forbidden(f"role {role} may not {action}", role=str(role), action=action)


def list_tokens(store: Store) -> list[ApiTokenRecord]:
    """Every API token, revoked ones included, oldest first."""
    with store.transaction(readonly=True) as tx:
        return tx.list_tokens()


def revoke_token(store: Store, clock: Clock, token_id: str, *, actor: str) -> ApiTokenRecord:
    """Revoke a token at once, with the dashboard sessions opened with it."""
    now = clock.now()
    with store.transaction() as tx:
        record = tx.get_token(token_id[:32])
        if record is None:
            raise NotFound(f"no API token {token_id[:32]!r}", token_id=token_id[:32])
        tx.revoke_token(record.token_id)
        ended = tx.delete_sessions(f"token:{record.token_id}")
        tx.append_audit(
            now,
            actor,
            "token.revoked",
            record.token_id,
            {"role": str(record.role), "already": record.revoked, "sessions_ended": ended},
        )
    return replace(record, revoked=True)


def put_user(
    store: Store, clock: Clock, username: str, role: Role, password_hash: str, *, actor: str
) -> bool:
    """Create a dashboard user, or replace one (ending its sessions); True if replaced."""
    now = clock.now()
    with store.transaction() as tx:
        existing = tx.get_user(username)
        replaced = existing is not None
        created = existing.created_at if existing is not None else now
        tx.put_user(UserRecord(username, role, password_hash, created))
        ended = tx.delete_sessions(f"user:{username}")
        tx.append_audit(
            now,
            actor,
            "user.replaced" if replaced else "user.created",
            f"user:{username}",
            {"role": str(role), "sessions_ended": ended},
        )
    return replaced


def disable_user(store: Store, clock: Clock, username: str, *, actor: str) -> UserRecord:
    """Refuse a dashboard user's sign-ins from now on and end its sessions."""
    now = clock.now()
    with store.transaction() as tx:
        user = tx.get_user(username)
        if user is None:
            raise NotFound(f"no user {username[:64]!r}", username=username[:64])
        disabled = replace(user, disabled=True)
        tx.put_user(disabled)
        ended = tx.delete_sessions(f"user:{username}")
        tx.append_audit(now, actor, "user.disabled", f"user:{username}", {"sessions_ended": ended})
    return disabled
