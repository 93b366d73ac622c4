"""The ACME endpoints under ``/acme`` (RFC 8555 section 7.1.1 directory and everything it links).

Every signed POST goes through one pipeline: content type, bounded body, JWS structure,
nonce (single use), ``url`` header, then one read-only store transaction in which the account
is read, the signature verified and the resource's handler checks the request. A handler that
changes state returns that change as work done after the read, in a write transaction of its
own (or through the authority, which commits its own): a write never waits on, nor holds, the
database's write lock while a request is checked. Every refusal leaves as a problem document
with a fresh ``Replay-Nonce`` and is audited; nothing else answers a client.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from jwcrypto import jwk as jose_jwk
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, request_response
from starlette.types import Receive, Scope, Send

from iotpki.core.acme_ports import (
    AcmeAccount,
    AcmeAuthorization,
    AcmeChallenge,
    AcmeTransaction,
)
from iotpki.errors import IotpkiError
from iotpki.protocols.access import client_address
from iotpki.protocols.acme import (
    accounts,
    authorizations,
    device_attest,
    jws,
    messages,
    orders,
    renewal,
)
from iotpki.protocols.acme.context import AcmeContext
from iotpki.protocols.acme.problems import AcmeProblem, from_error
from iotpki.protocols.http import BodyTooLarge, read_body

__all__ = ["acme_routes"]

log = logging.getLogger(__name__)

_PREFIX = "/acme"
# Large enough that an oversized field (a 100 KB nonce) gets its own problem (section 6.5).
_BODY_LIMIT = 256 * 1024
_JOSE = "application/jose+json"
_DEFAULT_PORTS = {"http": 80, "https": 443}
_READ = ("GET", "HEAD")


@dataclass
class Reply:
    """What a resource handler answers: status, JSON or bytes, and extra headers.

    ``validation`` is a challenge the client answered (with its authorization and key
    authorization), validated once the request's transaction closed; the reply then shows
    the challenge as the validation left it.
    """

    body: dict[str, Any] | bytes | None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    links: list[str] = field(default_factory=list)
    media_type: str = "application/json"
    validation: tuple[AcmeChallenge, AcmeAuthorization, str] | None = None


@dataclass(frozen=True, slots=True)
class Call:
    """An authenticated request: the JWS, its account (None when signed with ``jwk``), the
    verifying key, the path parameters and the ACME base URL."""

    signed: jws.SignedRequest
    account: AcmeAccount | None
    key: jose_jwk.JWK
    params: dict[str, str]
    base: str

    @property
    def owner(self) -> AcmeAccount:
        """The account of a request that must be signed with ``kid``."""
        assert self.account is not None
        return self.account


Handler = Callable[[Call, AcmeTransaction], "Reply | Callable[[], Reply]"]
"""Runs in the request's read transaction; returns the reply, or the work (writes) that
makes it, run once that transaction closed."""


class AcmeEndpoint:
    """Route handlers bound to one ACME context."""

    def __init__(self, ctx: AcmeContext) -> None:
        self.ctx = ctx

    # -- plumbing ------------------------------------------------------------------------------

    def base(self, request: Request) -> str:
        """The ACME base URL: configured, or the one the client used (as Starlette's
        ``request.url`` reads it: the Host header, else the server address)."""
        if self.ctx.config.base_url:
            return self.ctx.config.base_url.rstrip("/")
        scope = request.scope
        scheme = scope.get("scheme", "http")
        for name, value in scope["headers"]:
            if name == b"host":
                return f"{scheme}://{value.decode('latin-1')}{_PREFIX}"
        host, port = scope.get("server") or ("", None)
        if port is None or port == _DEFAULT_PORTS.get(scheme):
            return f"{scheme}://{host}{_PREFIX}"
        return f"{scheme}://{host}:{port}{_PREFIX}"

    def _headers(self, base: str) -> dict[str, str]:
        return {
            "Replay-Nonce": self.ctx.nonces.issue(),
            "Cache-Control": "no-store",
            "Link": f'<{base}/directory>;rel="index"',
        }

    async def _problem(
        self, request: Request, problem: AcmeProblem, account_id: str | None
    ) -> Response:
        base = self.base(request)
        actor = f"acme:{account_id}" if account_id else "acme:anonymous"
        try:
            await self.ctx.run(
                self.ctx.authority.audit_refusal,
                problem,
                source=client_address(request),
                actor=actor,
                action="acme.refused",
                target=request.url.path,
                extra={
                    "type": problem.kind,
                    "detail": problem.detail[:512],
                    "status": problem.status,
                },
            )
        except IotpkiError:
            log.exception("could not audit an ACME refusal")
        headers = self._headers(base)
        for name, value in problem.headers.items():
            headers[name] = f"{headers[name]}, {value}" if name == "Link" else value
        return JSONResponse(
            problem.document(),
            status_code=problem.status,
            headers=headers,
            media_type="application/problem+json",
        )

    async def _resume(self) -> None:
        if not self.ctx.resumed:
            self.ctx.resumed = True
            await self.ctx.run(authorizations.resume_validations, self.ctx)

    def signed(
        self,
        handler: Handler,
        *,
        jwk: Literal["required", "allowed", "forbidden"] = "forbidden",
    ) -> Callable[[Request], Awaitable[Response]]:
        """Wrap a resource handler in the JWS pipeline (RFC 8555 sections 6.2 to 6.5)."""

        async def endpoint(request: Request) -> Response:
            owner: list[str] = []
            try:
                await self._resume()
                if request.method != "POST":
                    raise _not_allowed(request, ("POST",), "read with POST-as-GET (section 6.3)")
                content_type = request.headers.get("content-type", "").split(";")[0].strip()
                if content_type != _JOSE:
                    raise AcmeProblem("malformed", f"Content-Type must be {_JOSE}", status=415)
                try:
                    body = await read_body(request, _BODY_LIMIT)
                except BodyTooLarge as exc:
                    raise AcmeProblem("malformed", exc.message, status=413) from exc
                signed = jws.parse(body)
                base = self.base(request)
                # Section 6.5: each nonce once; section 6.4: the url is this request's URL.
                spent = signed.nonce is not None and await self.ctx.run(
                    self.ctx.nonces.consume, signed.nonce
                )  # a write to the store, off the event loop
                if not spent:
                    raise AcmeProblem("badNonce", "the nonce is unknown, used or expired")
                expected = base + request.scope["path"].removeprefix(_PREFIX)
                if signed.url != expected:
                    raise AcmeProblem("unauthorized", f"the url header must be {expected}")
                params = {k: str(v) for k, v in request.path_params.items()}
                reply = await self.ctx.run(self._handle, handler, signed, params, base, jwk, owner)
                if reply.validation is not None:
                    await self._validate(reply, base)
            except AcmeProblem as problem:
                return await self._problem(request, problem, _account_of(problem, owner))
            except IotpkiError as exc:
                return await self._problem(request, from_error(exc), _account_of(exc, owner))
            return self._reply(reply, base)

        return endpoint

    def _handle(
        self,
        handler: Handler,
        signed: jws.SignedRequest,
        params: dict[str, str],
        base: str,
        jwk: Literal["required", "allowed", "forbidden"],
        owner: list[str],
    ) -> Reply:
        """Authenticate and run the handler in one transaction, then any work it left."""
        with self.ctx.store.transaction(readonly=True) as tx:
            account, key = accounts.authenticate(self.ctx, tx, signed, base, jwk=jwk)
            if account is not None:
                owner.append(account.account_id)
            result = handler(Call(signed, account, key, params, base), tx)
        return result if isinstance(result, Reply) else result()

    async def _validate(self, reply: Reply, base: str) -> None:
        """Section 7.5.1: validate the answered challenge; the reply shows it as it then is."""
        assert reply.validation is not None
        outcome = await authorizations.answer(self.ctx, *reply.validation)
        reply.body = messages.challenge_json(outcome, base)

    def _reply(self, reply: Reply, base: str) -> Response:
        headers = self._headers(base)
        headers.update(reply.headers)
        if reply.links:
            headers["Link"] = ", ".join([headers["Link"], *reply.links])
        if isinstance(reply.body, dict):
            return JSONResponse(reply.body, status_code=reply.status, headers=headers)
        return Response(
            reply.body, status_code=reply.status, headers=headers, media_type=reply.media_type
        )

    # -- unsigned resources --------------------------------------------------------------------

    async def directory(self, request: Request) -> Response:
        """Section 7.1.1 (and RFC 9773 section 3: renewalInfo)."""
        if request.method not in _READ:
            return await self._problem(request, _not_allowed(request, _READ), None)
        await self._resume()
        base = self.base(request)
        meta: dict[str, Any] = {"externalAccountRequired": self.ctx.config.eab_required}
        if self.ctx.config.terms_of_service:
            meta["termsOfService"] = self.ctx.config.terms_of_service
        if self.ctx.config.website:
            meta["website"] = self.ctx.config.website
        return JSONResponse(
            {
                "newNonce": f"{base}/new-nonce",
                "newAccount": f"{base}/new-account",
                "newOrder": f"{base}/new-order",
                "revokeCert": f"{base}/revoke-cert",
                "keyChange": f"{base}/key-change",
                "renewalInfo": f"{base}/renewal-info",
                "meta": meta,
            },
            headers={"Cache-Control": "public, max-age=3600"},
        )

    async def new_nonce(self, request: Request) -> Response:
        """Section 7.2: HEAD answers 200, GET 204, both with a fresh nonce."""
        if request.method not in _READ:
            return await self._problem(request, _not_allowed(request, _READ), None)
        status = 200 if request.method == "HEAD" else 204
        return Response(status_code=status, headers=self._headers(self.base(request)))

    async def renewal_info(self, request: Request) -> Response:
        """RFC 9773 section 4.2: GET renewalInfo/<CertID>, no authentication."""
        try:
            if request.method not in _READ:
                raise _not_allowed(request, _READ)
            body, retry_after = await self.ctx.run(
                renewal.renewal_info, self.ctx, request.path_params["cert_id"]
            )
        except AcmeProblem as problem:
            return await self._problem(request, problem, None)
        except IotpkiError as exc:
            return await self._problem(request, from_error(exc), None)
        return JSONResponse(body, headers={"Retry-After": str(retry_after)})

    async def unknown(self, request: Request) -> Response:
        """Any other path under /acme."""
        return await self._problem(
            request, AcmeProblem("malformed", "no such ACME resource", status=404), None
        )

    # -- signed resources ----------------------------------------------------------------------

    def new_account(self, call: Call, tx: AcmeTransaction) -> Reply | Callable[[], Reply]:
        """Section 7.3: 201 for a new account, 200 for the key's existing one."""
        found = accounts.new_account(self.ctx, tx, call.signed, call.key)

        def reply(account: AcmeAccount, status: int) -> Reply:
            url = accounts.account_url(call.base, account.account_id)
            return Reply(accounts.account_json(account, call.base), status, {"Location": url})

        if isinstance(found, AcmeAccount):
            return reply(found, 200)
        return lambda: reply(found(), 201)

    def account(self, call: Call, tx: AcmeTransaction) -> Reply | Callable[[], Reply]:
        """Sections 7.3.2 and 7.3.6."""
        found = accounts.update_account(
            self.ctx, call.signed, call.owner, call.params["account_id"]
        )
        if isinstance(found, AcmeAccount):
            return Reply(accounts.account_json(found, call.base))
        return lambda: Reply(accounts.account_json(found(), call.base))

    def account_orders(self, call: Call, tx: AcmeTransaction) -> Reply:
        """Section 7.1.2.1."""
        urls = orders.list_orders(tx, call.owner, call.params["account_id"], call.base)
        return Reply({"orders": urls})

    def key_change(self, call: Call, tx: AcmeTransaction) -> Callable[[], Reply]:
        """Section 7.3.5."""
        roll = accounts.change_key(self.ctx, tx, call.signed, call.owner, call.base)
        return lambda: Reply(accounts.account_json(roll(), call.base))

    def new_order(self, call: Call, tx: AcmeTransaction) -> Callable[[], Reply]:
        """Section 7.4."""
        order, store = orders.new_order(self.ctx, tx, call.signed, call.owner, call.base)
        location = {"Location": f"{call.base}/order/{order.order_id}"}
        return lambda: Reply(store(), 201, location)

    def order(self, call: Call, tx: AcmeTransaction) -> Reply:
        """Section 7.1.3, read with POST-as-GET."""
        _, body = orders.get_order(self.ctx, tx, call.owner, call.params["order_id"], call.base)
        return Reply(body)

    def finalize(self, call: Call, tx: AcmeTransaction) -> Callable[[], Reply]:
        """Section 7.4: checks here, issuance once the transaction closed."""
        order_id = call.params["order_id"]
        issue = orders.finalize(self.ctx, tx, call.signed, call.owner, order_id, call.base)
        location = {"Location": f"{call.base}/order/{order_id}"}
        return lambda: Reply(issue(), headers=location)

    def authorization(self, call: Call, tx: AcmeTransaction) -> Reply | Callable[[], Reply]:
        """Sections 7.5 and 7.5.2."""
        body = authorizations.get_authorization(
            self.ctx, tx, call.signed, call.owner, call.params["authz_id"], call.base
        )
        if isinstance(body, dict):
            return Reply(body)
        return lambda: Reply(body())

    def challenge(self, call: Call, tx: AcmeTransaction) -> Reply | Callable[[], Reply]:
        """Section 7.5.1: an answer is validated once the read transaction closed
        (``validation``); device-attest-01 is decided in the request (``device_attest``)."""
        att_obj = device_attest.answer(call.signed)
        challenge, authz, answered = authorizations.respond(
            self.ctx,
            tx,
            call.signed,
            call.owner,
            call.params["challenge_id"],
            precheck=device_attest.precheck(att_obj),
        )
        links = [f'<{call.base}/authz/{authz.authz_id}>;rel="up"']
        body = messages.challenge_json(challenge, call.base)
        if not answered:
            return Reply(body, links=links)
        # Section 8.1: token '.' the account key's thumbprint, stored with the account.
        key_authorization = f"{challenge.token}.{call.owner.thumbprint}"
        if challenge.type != device_attest.CHALLENGE_TYPE:
            return Reply(body, links=links, validation=(challenge, authz, key_authorization))
        assert att_obj is not None  # the precheck refused the answer otherwise

        def attest() -> Reply:
            started = authorizations.start(self.ctx, challenge, authz)
            if started is None:  # another request started it: show it as it is now
                now = authorizations.current(self.ctx, challenge)
                return Reply(messages.challenge_json(now, call.base), links=links)
            decided = device_attest.validate(
                self.ctx, started, authz, key_authorization, att_obj, call.base
            )
            return Reply(decided, links=links)

        return attest

    def certificate(self, call: Call, tx: AcmeTransaction) -> Reply:
        """Section 7.4.2."""
        alternate = call.params.get("alternate", "0")
        if not alternate.isdigit() or len(alternate) > 3:
            raise AcmeProblem("malformed", "no such alternate chain", status=404)
        chain, links = orders.certificate_chain(
            self.ctx, tx, call.owner, call.params["order_id"], int(alternate), call.base
        )
        return Reply(chain, links=links, media_type="application/pem-certificate-chain")

    def revoke(self, call: Call, tx: AcmeTransaction) -> Callable[[], Reply]:
        """Section 7.6: checks here, the revocation once the transaction closed."""
        revoke_now = orders.revoke(self.ctx, tx, call.signed, call.account, call.key)

        def run() -> Reply:
            revoke_now()
            return Reply(b"")

        return run


def _not_allowed(request: Request, allowed: tuple[str, ...], why: str = "") -> AcmeProblem:
    """RFC 9110 section 15.5.6: 405 with ``Allow``, here as a problem document."""
    detail = f"{request.method[:16]!r} is not allowed here; use {', '.join(allowed)}"
    return AcmeProblem(
        "malformed",
        f"{detail}: {why}" if why else detail,
        status=405,
        headers={"Allow": ", ".join(allowed)},
    )


def _account_of(exc: IotpkiError, owner: list[str]) -> str | None:
    value = exc.data.get("acme_account")
    return value if isinstance(value, str) else (owner[0] if owner else None)


class _EveryMethod:
    """An endpoint as an ASGI app, so that the router hands it every method."""

    def __init__(self, endpoint: Callable[[Request], Awaitable[Response]]) -> None:
        self._app = request_response(endpoint)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)


def _route(path: str, endpoint: Callable[[Request], Awaitable[Response]]) -> Route:
    return Route(f"{_PREFIX}{path}", _EveryMethod(endpoint))


def acme_routes(ctx: AcmeContext) -> list[BaseRoute]:
    """The ACME routes, to mount at the HTTPS listener's root."""
    e = AcmeEndpoint(ctx)
    # Every method reaches the endpoints, which answer the ones they do not take with a
    # problem document (TRACE and unknown methods too), never the router's text/plain 405.

    def post(path: str, handler: Handler, **options: Any) -> Route:
        return _route(path, e.signed(handler, **options))

    return [
        # The resources of every order first: routes are tried in this order.
        post("/authz/{authz_id}", e.authorization),
        post("/new-order", e.new_order),
        post("/chall/{challenge_id}", e.challenge),
        post("/order/{order_id}/finalize", e.finalize),
        post("/cert/{order_id}", e.certificate),
        post("/order/{order_id}", e.order),
        _route("/new-nonce", e.new_nonce),
        _route("/directory", e.directory),
        _route("/renewal-info/{cert_id}", e.renewal_info),
        post("/new-account", e.new_account, jwk="required"),
        post("/acct/{account_id}", e.account),
        post("/acct/{account_id}/orders", e.account_orders),
        post("/key-change", e.key_change),
        post("/cert/{order_id}/{alternate}", e.certificate),
        post("/revoke-cert", e.revoke, jwk="allowed"),
        _route("/{rest:path}", e.unknown),
    ]
