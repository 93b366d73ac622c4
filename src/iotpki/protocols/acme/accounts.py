"""Accounts (RFC 8555 section 7.3): creation with external account binding, lookup, update,
deactivation and key rollover, and the authentication of every signed request (section 6.2).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Literal

from jwcrypto import jwk as jose_jwk

from iotpki.core.acme_ports import AcmeAccount, AcmeTransaction
from iotpki.protocols.acme import eab, jws
from iotpki.protocols.acme.context import AcmeContext, new_id
from iotpki.protocols.acme.problems import AcmeProblem

__all__ = [
    "account_json",
    "account_url",
    "authenticate",
    "change_key",
    "new_account",
    "update_account",
]

_EMAIL = re.compile(r"^[^@\s,;<>]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$")
_MAX_CONTACTS = 10


def account_url(base: str, account_id: str) -> str:
    """The account URL, which is also its ``kid``."""
    return f"{base}/acct/{account_id}"


def account_json(account: AcmeAccount, base: str) -> dict[str, Any]:
    """An account object (section 7.1.2)."""
    body: dict[str, Any] = {
        "status": account.status,
        "contact": list(account.contacts),
        "orders": f"{account_url(base, account.account_id)}/orders",
    }
    if account.terms_agreed:
        body["termsOfServiceAgreed"] = True
    return body


def authenticate(
    ctx: AcmeContext,
    tx: AcmeTransaction,
    signed: jws.SignedRequest,
    base: str,
    *,
    jwk: Literal["required", "allowed", "forbidden"] = "forbidden",
) -> tuple[AcmeAccount | None, jose_jwk.JWK]:
    """Find the signing key and verify the JWS (section 6.2).

    newAccount is signed with ``jwk`` (required), revokeCert with either (allowed: by the
    certificate's key), every other request with ``kid``, the account URL. The account is
    read in the request's transaction; only its parsed key is kept between requests.
    """
    if signed.jwk is not None:
        if jwk == "forbidden":
            raise AcmeProblem("malformed", "this request must be signed with kid, not jwk")
        key = jws.public_key(signed.jwk, signed.alg)
        jws.verify(signed, key)
        return None, key
    assert signed.kid is not None
    if jwk == "required":
        raise AcmeProblem("malformed", "this request must be signed with jwk, not kid")
    prefix = f"{base}/acct/"
    if not signed.kid.startswith(prefix):
        raise AcmeProblem("accountDoesNotExist", "kid is not an account URL of this server")
    account = tx.get_account(signed.kid.removeprefix(prefix))
    if account is None:
        raise AcmeProblem("accountDoesNotExist", "no such account")
    key = ctx.account_key(account.account_id, account.jwk)
    jws.verify(signed, key)
    _require_valid(account)
    return account, key


def _require_valid(account: AcmeAccount) -> None:
    """Section 7.3.6: requests signed with a deactivated account's key get 401 unauthorized."""
    if account.status != "valid":
        problem = AcmeProblem("unauthorized", f"the account is {account.status}", status=401)
        problem.data["acme_account"] = account.account_id  # audited as that account's
        raise problem


def _contacts(value: object) -> tuple[str, ...]:
    """Section 7.3: ``mailto:`` URLs only here."""
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > _MAX_CONTACTS:
        raise AcmeProblem("malformed", f"contact must be an array of at most {_MAX_CONTACTS}")
    contacts: list[str] = []
    for item in value:
        if not isinstance(item, str):
            raise AcmeProblem("malformed", "contacts are URL strings")
        scheme, _, address = item.partition(":")
        if scheme.lower() != "mailto":
            raise AcmeProblem("unsupportedContact", f"only mailto: contacts: {item[:64]!r}")
        if not _EMAIL.match(address) or "?" in address or len(address) > 254:
            raise AcmeProblem("invalidContact", f"not an e-mail address: {address[:64]!r}")
        contacts.append(f"mailto:{address}")
    return tuple(contacts)


def new_account(
    ctx: AcmeContext, tx: AcmeTransaction, signed: jws.SignedRequest, key: jose_jwk.JWK
) -> AcmeAccount | Callable[[], AcmeAccount]:
    """newAccount (section 7.3): the key's existing account, or the work that creates one
    (the unique key and the single-use EAB credential are enforced as it commits)."""
    payload = signed.json_payload()
    thumbprint = jws.thumbprint(key)
    existing = tx.account_by_thumbprint(thumbprint)
    if existing is not None:
        # Section 7.3.1: the existing account, whatever else the request says; unless it was
        # deactivated (section 7.3.6), which no request signed with its key may use again.
        _require_valid(existing)
        return existing
    if payload.get("onlyReturnExisting") is True:
        raise AcmeProblem("accountDoesNotExist", "no account exists for this key")
    contacts = _contacts(payload.get("contact"))
    terms = ctx.config.terms_of_service
    agreed = payload.get("termsOfServiceAgreed") is True
    if terms and not agreed:
        raise AcmeProblem(
            "userActionRequired",
            "agree to the terms of service (termsOfServiceAgreed)",
            headers={"Link": f'<{terms}>;rel="terms-of-service"'},
            extra={"instance": terms},
        )
    binding = payload.get("externalAccountBinding")
    credential = None
    if binding is None:
        if ctx.config.eab_required:
            raise AcmeProblem(
                "externalAccountRequired", "this server requires an external account binding"
            )
    else:
        credential = eab.check_binding(ctx, tx, binding, signed, thumbprint)
    account = AcmeAccount(
        account_id=new_id(),
        thumbprint=thumbprint,
        jwk=key.export_public(),
        status="valid",
        contacts=contacts,
        terms_agreed=agreed,
        eab_key_id=credential.key_id if credential else None,
        tenant=credential.tenant if credential else None,
        profile=credential.profile if credential else ctx.config.default_profile,
        device_profile=credential.device_profile if credential else "device",
        device_patterns=credential.device_patterns if credential else (),
        created_at=ctx.now(),
    )

    def create() -> AcmeAccount:
        with ctx.store.transaction() as wtx:
            if credential is not None and not wtx.use_eab(
                credential.key_id, account.account_id, account.created_at
            ):
                raise AcmeProblem("unauthorized", "the external account binding was used already")
            wtx.add_account(account)
            wtx.append_audit(
                account.created_at,
                f"acme:{account.account_id}",
                "acme.account.created",
                account.account_id,
                {
                    "key": thumbprint,
                    "eab": account.eab_key_id,
                    "tenant": account.tenant,
                    "profile": account.profile,
                    "contacts": len(contacts),
                },
            )
        return account

    return create


def update_account(
    ctx: AcmeContext, signed: jws.SignedRequest, account: AcmeAccount, account_id: str
) -> AcmeAccount | Callable[[], AcmeAccount]:
    """POST to the account URL: read (POST-as-GET), or the work that changes contacts or
    deactivates (sections 7.3.2, 7.3.6)."""
    if account.account_id != account_id:
        raise AcmeProblem("unauthorized", "a request for another account")
    if signed.is_post_as_get:
        return account
    payload = signed.json_payload()
    status = payload.get("status")
    contacts = _contacts(payload["contact"]) if "contact" in payload else None
    if status is not None and status != "deactivated":
        raise AcmeProblem("malformed", "an account's status can only become deactivated")
    if status is None and contacts is None:
        return account
    action = "acme.account.deactivated" if status else "acme.account.updated"

    def update() -> AcmeAccount:
        with ctx.store.transaction() as tx:
            tx.update_account(account.account_id, status=status, contacts=contacts)
            tx.append_audit(
                ctx.now(),
                f"acme:{account.account_id}",
                action,
                account.account_id,
                {"contacts": contacts},
            )
        return replace(
            account,
            status=status or account.status,
            contacts=account.contacts if contacts is None else contacts,
        )

    return update


def change_key(
    ctx: AcmeContext,
    tx: AcmeTransaction,
    signed: jws.SignedRequest,
    account: AcmeAccount,
    base: str,
) -> Callable[[], AcmeAccount]:
    """keyChange (section 7.3.5): an inner JWS by the new key names the account and old key;
    returns the work that rolls the key (a key registered meanwhile fails it as a conflict)."""
    outer = signed.json_payload()
    inner = jws.parse(outer, inner=True)
    if inner.jwk is None:
        raise AcmeProblem("malformed", "the inner JWS of a key change is signed with jwk")
    if inner.url != signed.url:
        raise AcmeProblem("malformed", "the inner JWS url differs from the outer one")
    new_key = jws.public_key(inner.jwk, inner.alg)
    jws.verify(inner, new_key)
    body = inner.json_payload()
    if body.get("account") != account_url(base, account.account_id):
        raise AcmeProblem("malformed", "the key change names another account")
    old = body.get("oldKey")
    if not isinstance(old, dict) or jws.thumbprint(jws.public_key(old)) != account.thumbprint:
        raise AcmeProblem("malformed", "oldKey is not the account's current key")
    thumbprint = jws.thumbprint(new_key)
    holder = tx.account_by_thumbprint(thumbprint)
    if holder is not None:
        raise AcmeProblem(
            "malformed",
            "the new key belongs to an account already",
            status=409,
            headers={"Location": account_url(base, holder.account_id)},
        )
    jwk_json = new_key.export_public()

    def roll() -> AcmeAccount:
        with ctx.store.transaction() as wtx:
            wtx.update_account(account.account_id, jwk=jwk_json, thumbprint=thumbprint)
            wtx.append_audit(
                ctx.now(),
                f"acme:{account.account_id}",
                "acme.account.key_changed",
                account.account_id,
                {"old_key": account.thumbprint, "new_key": thumbprint},
            )
        return replace(account, jwk=jwk_json, thumbprint=thumbprint)

    return roll
