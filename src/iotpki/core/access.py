"""API tokens and roles: who may do what.

A token is ``itk_<id>_<secret>``; the store keeps the id and the SHA-256 of the secret only
(the secret carries 256 random bits, so a fast hash suffices), compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta

from iotpki.core.models import ApiTokenRecord, Role
from iotpki.core.ports import Clock, Store
from iotpki.errors import AuthError, Forbidden

__all__ = ["PERMISSIONS", "authenticate", "authorize", "create_token"]

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
