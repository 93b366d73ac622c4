"""External account binding (RFC 8555 section 7.3.4): operator-made, single-use credentials
that tie a new ACME account to a tenant, its profiles and the device serials it may order.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any

from iotpki.core.acme_ports import AcmeStore, AcmeTransaction, EabCredential
from iotpki.errors import NotFound, RequestError
from iotpki.protocols.acme import jws
from iotpki.protocols.acme.context import AcmeContext
from iotpki.protocols.acme.problems import AcmeProblem

__all__ = ["check_binding", "create", "credential_json", "revoke"]


def create(
    store: AcmeStore,
    *,
    now: datetime,
    actor: str,
    profiles: Collection[str],
    tenant: str,
    profile: str = "server",
    device_profile: str = "device",
    device_patterns: tuple[str, ...] = (),
    description: str = "",
    lifetime: timedelta | None = None,
) -> tuple[EabCredential, str]:
    """A new credential and its HMAC key as base64url (shown once, to give to the client)."""
    for name in (profile, device_profile):
        if name not in profiles:
            raise RequestError(f"no profile named {name!r}", profile=name)
    if not tenant or len(tenant) > 128:
        raise RequestError("a tenant name of 1 to 128 characters is needed", field="tenant")
    if any(not p or len(p) > 128 for p in device_patterns) or len(device_patterns) > 100:
        raise RequestError("device patterns are 1 to 128 characters, at most 100")
    secret = secrets.token_bytes(32)
    credential = EabCredential(
        key_id=f"eab-{secrets.token_urlsafe(12)}",
        hmac_key=secret,
        tenant=tenant,
        profile=profile,
        device_profile=device_profile,
        device_patterns=tuple(device_patterns),
        description=description[:256],
        created_at=now,
        expires_at=now + lifetime if lifetime else None,
    )
    with store.transaction() as tx:
        tx.add_eab(credential)
        tx.append_audit(
            now,
            actor,
            "acme.eab.created",
            credential.key_id,
            {
                "tenant": tenant,
                "profile": profile,
                "device_profile": device_profile,
                "device_patterns": list(device_patterns),
                "expires_at": credential.expires_at.isoformat() if credential.expires_at else None,
            },
        )
    return credential, jws.b64url_encode(secret)


def revoke(store: AcmeStore, key_id: str, *, now: datetime, actor: str) -> None:
    """Withdraw an unused credential."""
    with store.transaction() as tx:
        if not tx.revoke_eab(key_id):
            raise NotFound(f"no unused EAB credential {key_id!r}", key_id=key_id)
        tx.append_audit(now, actor, "acme.eab.revoked", key_id, {})


def credential_json(credential: EabCredential) -> dict[str, Any]:
    """A credential as the admin API and CLI show it (never its key)."""
    return {
        "key_id": credential.key_id,
        "tenant": credential.tenant,
        "profile": credential.profile,
        "device_profile": credential.device_profile,
        "device_patterns": list(credential.device_patterns),
        "description": credential.description,
        "created_at": credential.created_at.isoformat(),
        "expires_at": credential.expires_at.isoformat() if credential.expires_at else None,
        "used_at": credential.used_at.isoformat() if credential.used_at else None,
        "used_by": credential.used_by,
        "revoked": credential.revoked,
    }


def check_binding(
    ctx: AcmeContext,
    tx: AcmeTransaction,
    binding: object,
    signed: jws.SignedRequest,
    thumbprint: str,
) -> EabCredential:
    """Verify an externalAccountBinding of a newAccount request (section 7.3.4)."""
    if not isinstance(binding, dict):
        raise AcmeProblem("malformed", "externalAccountBinding must be a JWS object")
    header = binding.get("protected")
    if not isinstance(header, str):
        raise AcmeProblem("malformed", "externalAccountBinding must be a flattened JWS")
    fields = jws.parse_header(header)
    key_id = fields.get("kid")
    if not isinstance(key_id, str) or not key_id:
        raise AcmeProblem("malformed", "the EAB header needs the credential's kid")
    if fields.get("url") != signed.url:
        raise AcmeProblem("malformed", "the EAB url must be the newAccount URL")
    if "nonce" in fields or "jwk" in fields:
        raise AcmeProblem("malformed", "the EAB header carries neither nonce nor jwk")
    credential = tx.get_eab(key_id)
    if credential is None or credential.revoked:
        raise AcmeProblem("unauthorized", "unknown external account binding credential")
    if credential.used_at is not None:
        raise AcmeProblem("unauthorized", "the external account binding was used already")
    if credential.expires_at is not None and credential.expires_at <= ctx.now():
        raise AcmeProblem("unauthorized", "the external account binding credential expired")
    _, payload = jws.verify_mac(binding, credential.hmac_key)
    try:
        bound = jws.public_key(jws.json_object(payload, "the EAB payload"))
    except AcmeProblem as problem:
        raise AcmeProblem(
            "malformed", f"the EAB payload is not the account key: {problem}"
        ) from None
    if jws.thumbprint(bound) != thumbprint:
        raise AcmeProblem("unauthorized", "the EAB binds another key than the account's")
    return credential
