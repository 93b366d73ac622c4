"""Authorizations and challenges (RFC 8555 sections 7.5, 7.5.1, 7.5.2): reading, deactivating,
answering a challenge, and the background validation that decides the authorization.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from iotpki.core.acme_ports import AcmeAccount, AcmeAuthorization, AcmeChallenge, AcmeTransaction
from iotpki.protocols.acme import jws, messages
from iotpki.protocols.acme.challenges import CONNECTION_FAILED
from iotpki.protocols.acme.context import AcmeContext
from iotpki.protocols.acme.problems import AcmeProblem

__all__ = [
    "answer",
    "current",
    "get_authorization",
    "record_outcome",
    "respond",
    "resume_validations",
    "schedule",
    "start",
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
    ctx: AcmeContext,
    tx: AcmeTransaction,
    signed: jws.SignedRequest,
    account: AcmeAccount,
    authz_id: str,
    base: str,
) -> dict[str, Any] | Callable[[], dict[str, Any]]:
    """POST-as-GET an authorization, or the work that deactivates it (a POST of
    ``{"status": "deactivated"}``, section 7.5.2)."""
    authz = _owned_authorization(tx, account, authz_id)
    challenges = tx.authorization_challenges(authz_id)
    if signed.is_post_as_get:
        return messages.authorization_json(_current(authz, ctx), challenges, base)
    payload = signed.json_payload()
    if payload.get("status") != "deactivated":
        raise AcmeProblem("malformed", "an authorization can only become deactivated")
    if authz.status not in ("pending", "valid"):
        raise AcmeProblem("malformed", f"the authorization is {authz.status}")

    def deactivate() -> dict[str, Any]:
        with ctx.store.transaction() as wtx:
            if not wtx.update_authorization(authz_id, status="deactivated", expect=authz.status):
                raise AcmeProblem("malformed", "the authorization changed meanwhile: read it again")
            # Section 7.1.6: an order with a deactivated authorization becomes invalid.
            wtx.update_order(authz.order_id, status="invalid", expect="pending")
            wtx.update_order(authz.order_id, status="invalid", expect="ready")
            wtx.append_audit(
                ctx.now(),
                f"acme:{account.account_id}",
                "acme.authorization.deactivated",
                authz_id,
                {"identifier": f"{authz.identifier[0]}:{authz.identifier[1]}"},
            )
        done = replace(authz, status="deactivated")
        return messages.authorization_json(done, challenges, base)

    return deactivate


def respond(
    ctx: AcmeContext,
    tx: AcmeTransaction,
    signed: jws.SignedRequest,
    account: AcmeAccount,
    challenge_id: str,
    precheck: Callable[[AcmeChallenge], None] | None = None,
) -> tuple[AcmeChallenge, AcmeAuthorization, bool]:
    """Section 7.5.1: a POST of ``{}`` asks for validation; POST-as-GET reads the challenge.

    Returns the challenge, its authorization and whether the answer starts a validation
    (:func:`answer`, or :func:`start` then a decision in the request). ``precheck`` may
    refuse the answer before anything changes.
    """
    challenge = tx.get_challenge(challenge_id)
    if challenge is None:
        raise AcmeProblem("malformed", "no such challenge", status=404)
    authz = _current(_owned_authorization(tx, account, challenge.authz_id), ctx)
    if signed.is_post_as_get:
        return challenge, authz, False
    signed.json_payload()  # any JSON object; RFC 8555 clients send {}
    if challenge.status != "pending" or authz.status != "pending":
        if authz.status == "expired":
            raise AcmeProblem("malformed", "the authorization expired")
        return challenge, authz, False
    if precheck is not None:
        precheck(challenge)
    return challenge, authz, True


def start(
    ctx: AcmeContext, challenge: AcmeChallenge, authz: AcmeAuthorization
) -> AcmeChallenge | None:
    """Move a pending challenge to ``processing``; None when another request moved it."""
    with ctx.store.transaction() as tx:
        if not tx.update_challenge(challenge.challenge_id, status="processing", expect="pending"):
            return None
        tx.append_audit(
            ctx.now(),
            f"acme:{authz.account_id}",
            "acme.challenge.processing",
            challenge.challenge_id,
            {"type": challenge.type, "identifier": f"{authz.identifier[0]}:{authz.identifier[1]}"},
        )
    return replace(challenge, status="processing")


def current(ctx: AcmeContext, challenge: AcmeChallenge) -> AcmeChallenge:
    """A challenge as stored now."""
    with ctx.store.transaction(readonly=True) as tx:
        return tx.get_challenge(challenge.challenge_id) or challenge


async def answer(
    ctx: AcmeContext, challenge: AcmeChallenge, authz: AcmeAuthorization, key_authorization: str
) -> AcmeChallenge:
    """Section 7.5.1: validate a challenge the client answered; returns it as it then is.

    The first attempt runs at once, for at most ``validation_wait`` seconds: when it passes,
    the challenge becomes ``valid`` in one transaction and the client need not poll.
    Otherwise the challenge becomes ``processing`` and the attempts go on in the background
    (retries and deadline, :func:`validate`).
    """
    began = time.monotonic()
    tried, problem = 0, None
    wait = ctx.config.validation_wait
    if wait > 0 and not ctx.queue.manual:
        try:
            problem = await asyncio.wait_for(
                _attempt(ctx, challenge, authz, key_authorization), wait
            )
            tried = 1
        except TimeoutError:
            pass  # the background validation starts over with its full timeout
        if tried and problem is None:
            recorded = await ctx.run(_record, ctx, challenge, authz, None, 1, expect="pending")
            if recorded is not None:
                return recorded
            return await ctx.run(current, ctx, challenge)
    started = await ctx.run(start, ctx, challenge, authz)
    if started is None:
        return await ctx.run(current, ctx, challenge)

    async def job() -> AcmeChallenge | None:
        return await validate(
            ctx, started, authz, key_authorization, tried=tried, problem=problem, began=began
        )

    ctx.queue.submit(job)
    return started


def schedule(
    ctx: AcmeContext, challenge: AcmeChallenge, authz: AcmeAuthorization, key_authorization: str
) -> None:
    """Queue the background validation of a challenge that is ``processing``."""

    async def job() -> AcmeChallenge | None:
        return await validate(ctx, challenge, authz, key_authorization)

    ctx.queue.submit(job)


async def _attempt(
    ctx: AcmeContext, challenge: AcmeChallenge, authz: AcmeAuthorization, key_authorization: str
) -> AcmeProblem | None:
    """One validation attempt: None when it passed, else why it failed."""
    try:
        await ctx.validator.validate(
            challenge.type, authz.identifier, challenge.token, key_authorization
        )
    except AcmeProblem as exc:
        return exc
    except (OSError, EOFError, ValueError):
        # Nothing of what the target did or sent is echoed (it may be an internal service).
        return AcmeProblem("connection", f"{challenge.type}: {CONNECTION_FAILED}")
    return None


async def validate(
    ctx: AcmeContext,
    challenge: AcmeChallenge,
    authz: AcmeAuthorization,
    key_authorization: str,
    *,
    tried: int = 0,
    problem: AcmeProblem | None = None,
    began: float | None = None,
) -> AcmeChallenge | None:
    """Try the challenge until it passes, the retries run out or the deadline passes; returns
    the challenge as recorded (None when another process decided it first).

    ``tried`` attempts were made already since ``began`` (monotonic), the last failing with
    ``problem``.
    """
    queue = ctx.queue
    started = time.monotonic() if began is None else began
    attempt = tried
    while True:
        if attempt:
            delays = queue.retry_delays
            out_of_time = attempt > len(delays) or (
                time.monotonic() - started + delays[attempt - 1] > queue.deadline
            )
            if out_of_time:
                return await ctx.run(_record, ctx, challenge, authz, problem, attempt)
            await queue.sleep(delays[attempt - 1])
        attempt += 1
        problem = await _attempt(ctx, challenge, authz, key_authorization)
        if problem is None:
            return await ctx.run(_record, ctx, challenge, authz, None, attempt)


def _record(
    ctx: AcmeContext,
    challenge: AcmeChallenge,
    authz: AcmeAuthorization,
    problem: AcmeProblem | None,
    attempts: int,
    within: Callable[[AcmeTransaction], None] | None = None,
    *,
    expect: str = "processing",
) -> AcmeChallenge | None:
    """Write the outcome: challenge, authorization and, when decided, the order; returns the
    challenge as recorded, or None when it had left ``expect`` already.

    ``within`` runs in the same transaction once the challenge has left ``expect``.
    """
    now = ctx.now()
    identifier = f"{authz.identifier[0]}:{authz.identifier[1]}"
    with ctx.store.transaction() as tx:
        if problem is None:
            if not tx.update_challenge(
                challenge.challenge_id,
                status="valid",
                expect=expect,
                validated_at=now,
                attempts=attempts,
            ):
                return None
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
            return replace(challenge, status="valid", validated_at=now, attempts=attempts)
        error = {**problem.document(), "identifier": identifier}
        if not tx.update_challenge(
            challenge.challenge_id,
            status="invalid",
            expect=expect,
            error=error,
            attempts=attempts,
        ):
            return None
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
    return replace(challenge, status="invalid", error=error, attempts=attempts)


def record_outcome(
    ctx: AcmeContext,
    challenge: AcmeChallenge,
    authz: AcmeAuthorization,
    problem: AcmeProblem | None,
    within: Callable[[AcmeTransaction], None] | None = None,
) -> AcmeChallenge | None:
    """Write the outcome of a challenge decided in the request itself (device-attest-01)."""
    return _record(ctx, challenge, authz, problem, 1, within)


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
