"""Authorizations and challenges (RFC 8555 sections 7.5, 7.5.1, 7.5.2): reading, deactivating,
answering a challenge, and the background validation that decides the authorization.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool

from iotpki.core.acme_ports import AcmeAccount, AcmeAuthorization, AcmeChallenge, AcmeTransaction
from iotpki.protocols.acme import jws, messages
from iotpki.protocols.acme.context import AcmeContext
from iotpki.protocols.acme.problems import AcmeProblem

__all__ = [
    "get_authorization",
    "record_outcome",
    "respond",
    "resume_validations",
    "schedule",
    "validate",
]


def _owned_authorization(
    tx: AcmeTransaction, account: AcmeAccount, authz_id: str
) -> AcmeAuthorization:
    authz = tx.get_authorization(authz_id)
    if authz is None:
        raise AcmeProblem("malformed", "no such authorization", status=404)
    if authz.account_id != account.account_id:
        raise AcmeProblem("unauthorized", "this authorization belongs to another account")
    return authz


def _current(authz: AcmeAuthorization, ctx: AcmeContext) -> AcmeAuthorization:
    if authz.status in ("pending", "valid") and authz.expires <= ctx.now():
        return AcmeAuthorization(
            authz.authz_id,
            authz.order_id,
            authz.account_id,
            authz.identifier,
            "expired",
            authz.expires,
        )
    return authz


def get_authorization(
    ctx: AcmeContext, signed: jws.SignedRequest, account: AcmeAccount, authz_id: str, base: str
) -> dict[str, Any]:
    """POST-as-GET an authorization, or deactivate it with ``{"status": "deactivated"}``."""
    if not signed.is_post_as_get:
        payload = signed.json_payload()
        if payload.get("status") != "deactivated":
            raise AcmeProblem("malformed", "an authorization can only become deactivated")
        with ctx.store.transaction() as tx:
            authz = _owned_authorization(tx, account, authz_id)
            if authz.status not in ("pending", "valid"):
                raise AcmeProblem("malformed", f"the authorization is {authz.status}")
            tx.update_authorization(authz_id, status="deactivated", expect=authz.status)
            # Section 7.1.6: an order with a deactivated authorization becomes invalid.
            tx.update_order(authz.order_id, status="invalid", expect="pending")
            tx.update_order(authz.order_id, status="invalid", expect="ready")
            tx.append_audit(
                ctx.now(),
                f"acme:{account.account_id}",
                "acme.authorization.deactivated",
                authz_id,
                {"identifier": f"{authz.identifier[0]}:{authz.identifier[1]}"},
            )
    with ctx.store.transaction(readonly=True) as tx:
        authz = _current(_owned_authorization(tx, account, authz_id), ctx)
        challenges = tx.authorization_challenges(authz_id)
    return messages.authorization_json(authz, challenges, base)


def respond(
    ctx: AcmeContext,
    signed: jws.SignedRequest,
    account: AcmeAccount,
    challenge_id: str,
    base: str,
    precheck: Callable[[AcmeChallenge], None] | None = None,
) -> tuple[dict[str, Any], str, AcmeChallenge | None, AcmeAuthorization]:
    """Section 7.5.1: a POST of ``{}`` asks for validation; POST-as-GET reads the challenge.

    Returns the challenge JSON, the authorization URL (``Link: rel="up"``) and, when a
    validation was started, the challenge to hand to :func:`validate` in the background.
    ``precheck`` may refuse the answer for this challenge before anything changes.
    """
    with ctx.store.transaction(readonly=True) as tx:
        challenge = tx.get_challenge(challenge_id)
        if challenge is None:
            raise AcmeProblem("malformed", "no such challenge", status=404)
        authz = _current(_owned_authorization(tx, account, challenge.authz_id), ctx)
    up = f"{base}/authz/{authz.authz_id}"
    if signed.is_post_as_get:
        return messages.challenge_json(challenge, base), up, None, authz
    signed.json_payload()  # any JSON object; RFC 8555 clients send {}
    if challenge.status != "pending" or authz.status != "pending":
        if authz.status == "expired":
            raise AcmeProblem("malformed", "the authorization expired")
        return messages.challenge_json(challenge, base), up, None, authz
    if precheck is not None:
        precheck(challenge)
    with ctx.store.transaction() as tx:
        if not tx.update_challenge(challenge_id, status="processing", expect="pending"):
            current = tx.get_challenge(challenge_id) or challenge
            return messages.challenge_json(current, base), up, None, authz
        tx.append_audit(
            ctx.now(),
            f"acme:{account.account_id}",
            "acme.challenge.processing",
            challenge_id,
            {"type": challenge.type, "identifier": f"{authz.identifier[0]}:{authz.identifier[1]}"},
        )
        started = tx.get_challenge(challenge_id)
    assert started is not None
    return messages.challenge_json(started, base), up, started, authz


def schedule(
    ctx: AcmeContext, challenge: AcmeChallenge, authz: AcmeAuthorization, key_authorization: str
) -> None:
    """Queue the background validation of a challenge that entered ``processing``."""

    async def job() -> None:
        await validate(ctx, challenge, authz, key_authorization)

    ctx.queue.submit(job)


async def validate(
    ctx: AcmeContext,
    challenge: AcmeChallenge,
    authz: AcmeAuthorization,
    key_authorization: str,
) -> None:
    """Try the challenge until it passes, the retries run out or the deadline passes."""
    queue = ctx.queue
    started = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        problem: AcmeProblem | None = None
        try:
            await ctx.validator.validate(
                challenge.type, authz.identifier, challenge.token, key_authorization
            )
        except AcmeProblem as exc:
            problem = exc
        except (OSError, ValueError) as exc:
            problem = AcmeProblem("connection", f"{challenge.type}: {exc}")
        if problem is None:
            await run_in_threadpool(_record, ctx, challenge, authz, None, attempt)
            return
        delays = queue.retry_delays
        out_of_time = attempt > len(delays) or (
            time.monotonic() - started + delays[attempt - 1] > queue.deadline
        )
        if out_of_time:
            await run_in_threadpool(_record, ctx, challenge, authz, problem, attempt)
            return
        await queue.sleep(delays[attempt - 1])


def _record(
    ctx: AcmeContext,
    challenge: AcmeChallenge,
    authz: AcmeAuthorization,
    problem: AcmeProblem | None,
    attempts: int,
    within: Callable[[AcmeTransaction], None] | None = None,
) -> None:
    """Write the outcome: challenge, authorization and, when decided, the order.

    ``within`` runs in the same transaction once the challenge has left ``processing``.
    """
    now = ctx.now()
    identifier = f"{authz.identifier[0]}:{authz.identifier[1]}"
    with ctx.store.transaction() as tx:
        if problem is None:
            if not tx.update_challenge(
                challenge.challenge_id,
                status="valid",
                expect="processing",
                validated_at=now,
                attempts=attempts,
            ):
                return
            if within is not None:
                within(tx)
            tx.update_authorization(authz.authz_id, status="valid", expect="pending")
            others = tx.order_authorizations(authz.order_id)
            ready = all(a.status == "valid" for a in others)
            if ready:
                tx.update_order(authz.order_id, status="ready", expect="pending")
            tx.append_audit(
                now,
                f"acme:{authz.account_id}",
                "acme.authorization.valid",
                authz.authz_id,
                {
                    "identifier": identifier,
                    "challenge": challenge.type,
                    "attempts": attempts,
                    "order_ready": ready,
                },
            )
            return
        error = {**problem.document(), "identifier": identifier}
        if not tx.update_challenge(
            challenge.challenge_id,
            status="invalid",
            expect="processing",
            error=error,
            attempts=attempts,
        ):
            return
        if within is not None:
            within(tx)
        tx.update_authorization(authz.authz_id, status="invalid", expect="pending")
        # Section 7.1.6: an order whose authorization failed is invalid.
        tx.update_order(authz.order_id, status="invalid", expect="pending", error=error)
        tx.append_audit(
            now,
            f"acme:{authz.account_id}",
            "acme.authorization.invalid",
            authz.authz_id,
            {
                "identifier": identifier,
                "challenge": challenge.type,
                "attempts": attempts,
                "error": problem.kind,
                "detail": problem.detail[:256],
            },
        )


def record_outcome(
    ctx: AcmeContext,
    challenge: AcmeChallenge,
    authz: AcmeAuthorization,
    problem: AcmeProblem | None,
    within: Callable[[AcmeTransaction], None] | None = None,
) -> None:
    """Write the outcome of a challenge decided in the request itself (device-attest-01)."""
    _record(ctx, challenge, authz, problem, 1, within)


def resume_validations(ctx: AcmeContext) -> int:
    """Queue again the validations a previous process started and did not finish."""
    pending: list[tuple[AcmeChallenge, AcmeAuthorization, str]] = []
    with ctx.store.transaction(readonly=True) as tx:
        for challenge in tx.processing_challenges(10_000):
            authz = tx.get_authorization(challenge.authz_id)
            account = tx.get_account(authz.account_id) if authz else None
            if authz is None or account is None:
                continue
            key = ctx.account_key(account.account_id, account.jwk)
            pending.append((challenge, authz, jws.key_authorization(challenge.token, key)))
    for challenge, authz, key_authorization in pending:
        schedule(ctx, challenge, authz, key_authorization)
    return len(pending)
