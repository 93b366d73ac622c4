"""The ACME endpoints under ``/acme`` (RFC 8555 section 7.1.1 directory and everything it links).

Every signed POST goes through one pipeline: content type, bounded body, JWS structure,
nonce (single use), ``url`` header, key lookup and signature, then the resource's handler in a
worker thread. Every refusal leaves as a problem document with a fresh ``Replay-Nonce`` and is
audited; nothing else answers a client.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from jwcrypto import jwk as jose_jwk
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from iotpki.core.acme_ports import AcmeAccount
from iotpki.errors import IotpkiError
from iotpki.protocols.acme import (
    accounts,
    authorizations,
    device_attest,
    jws,
    orders,
    renewal,
)
from iotpki.protocols.acme.context import AcmeContext
from iotpki.protocols.acme.problems import AcmeProblem, from_error
from iotpki.protocols.http import BodyTooLarge, read_body

__all__ = ["acme_routes"]

log = logging.getLogger(__name__)

_PREFIX = "/acme"
_BODY_LIMIT = 64 * 1024
_JOSE = "application/jose+json"


@dataclass
class Reply:
    """What a resource handler answers: status, JSON or bytes, and extra headers."""

    body: dict[str, Any] | bytes | None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    links: list[str] = field(default_factory=list)
    media_type: str = "application/json"
    after: Callable[[], None] | None = None


Handler = Callable[
    [jws.SignedRequest, AcmeAccount | None, jose_jwk.JWK, dict[str, str], str], Reply
]


class AcmeEndpoint:
    """Route handlers bound to one ACME context."""

    def __init__(self, ctx: AcmeContext) -> None:
        self.ctx = ctx

    # -- plumbing ------------------------------------------------------------------------------

    def base(self, request: Request) -> str:
        """The ACME base URL: configured, or the one the client used."""
        if self.ctx.config.base_url:
            return self.ctx.config.base_url.rstrip("/")
        return f"{request.url.scheme}://{request.url.netloc}{_PREFIX}"

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
            await run_in_threadpool(
                self.ctx.authority.record_event,
                actor,
                "acme.refused",
                request.url.path[:256],
                {"type": problem.kind, "detail": problem.detail[:512], "status": problem.status},
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
            await run_in_threadpool(authorizations.resume_validations, self.ctx)

    def signed(
        self, handler: Handler, *, jwk: Literal["required", "allowed", "forbidden"] = "forbidden"
    ) -> Callable[[Request], Awaitable[Response]]:
        """Wrap a resource handler in the JWS pipeline (RFC 8555 sections 6.2 to 6.5)."""

        async def endpoint(request: Request) -> Response:
            account_id: str | None = None
            try:
                await self._resume()
                if request.method != "POST":
                    raise AcmeProblem(
                        "malformed",
                        "ACME resources are read with POST-as-GET (section 6.3)",
                        status=405,
                        headers={"Allow": "POST"},
                    )
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
                if signed.nonce is None or not self.ctx.nonces.consume(signed.nonce):
                    raise AcmeProblem("badNonce", "the nonce is unknown, used or expired")
                expected = base + request.url.path.removeprefix(_PREFIX)
                if signed.url != expected:
                    raise AcmeProblem("unauthorized", f"the url header must be {expected}")
                params = {k: str(v) for k, v in request.path_params.items()}

                def run() -> tuple[Reply, str | None]:
                    account, key = accounts.authenticate(self.ctx, signed, base, jwk=jwk)
                    owner = account.account_id if account else None
                    try:
                        return handler(signed, account, key, params, base), owner
                    except IotpkiError as exc:
                        exc.data["acme_account"] = owner
                        raise

                reply, account_id = await run_in_threadpool(run)
            except AcmeProblem as problem:
                return await self._problem(request, problem, _account_of(problem, account_id))
            except IotpkiError as exc:
                return await self._problem(request, from_error(exc), _account_of(exc, account_id))
            if reply.after is not None:
                reply.after()
            return self._reply(reply, base)

        return endpoint

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
        status = 200 if request.method == "HEAD" else 204
        return Response(status_code=status, headers=self._headers(self.base(request)))

    async def renewal_info(self, request: Request) -> Response:
        """RFC 9773 section 4.2: GET renewalInfo/<CertID>, no authentication."""
        try:
            body, retry_after = await run_in_threadpool(
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

    def new_account(
        self,
        signed: jws.SignedRequest,
        account: AcmeAccount | None,
        key: jose_jwk.JWK,
        params: dict[str, str],
        base: str,
    ) -> Reply:
        """Section 7.3."""
        status, found = accounts.new_account(self.ctx, signed, key, base)
        url = accounts.account_url(base, found.account_id)
        return Reply(accounts.account_json(found, base), status, {"Location": url})

    def account(
        self,
        signed: jws.SignedRequest,
        account: AcmeAccount | None,
        key: jose_jwk.JWK,
        params: dict[str, str],
        base: str,
    ) -> Reply:
        """Sections 7.3.2 and 7.3.6."""
        assert account is not None
        updated = accounts.update_account(self.ctx, signed, account, params["account_id"])
        return Reply(accounts.account_json(updated, base))

    def account_orders(
        self,
        signed: jws.SignedRequest,
        account: AcmeAccount | None,
        key: jose_jwk.JWK,
        params: dict[str, str],
        base: str,
    ) -> Reply:
        """Section 7.1.2.1."""
        assert account is not None
        return Reply({"orders": orders.list_orders(self.ctx, account, params["account_id"], base)})

    def key_change(
        self,
        signed: jws.SignedRequest,
        account: AcmeAccount | None,
        key: jose_jwk.JWK,
        params: dict[str, str],
        base: str,
    ) -> Reply:
        """Section 7.3.5."""
        assert account is not None
        updated = accounts.change_key(self.ctx, signed, account, base)
        return Reply(accounts.account_json(updated, base))

    def new_order(
        self,
        signed: jws.SignedRequest,
        account: AcmeAccount | None,
        key: jose_jwk.JWK,
        params: dict[str, str],
        base: str,
    ) -> Reply:
        """Section 7.4."""
        assert account is not None
        order, body = orders.new_order(self.ctx, signed, account, base)
        return Reply(body, 201, {"Location": f"{base}/order/{order.order_id}"})

    def order(
        self,
        signed: jws.SignedRequest,
        account: AcmeAccount | None,
        key: jose_jwk.JWK,
        params: dict[str, str],
        base: str,
    ) -> Reply:
        """Section 7.1.3, read with POST-as-GET."""
        assert account is not None
        _, body = orders.get_order(self.ctx, account, params["order_id"], base)
        return Reply(body)

    def finalize(
        self,
        signed: jws.SignedRequest,
        account: AcmeAccount | None,
        key: jose_jwk.JWK,
        params: dict[str, str],
        base: str,
    ) -> Reply:
        """Section 7.4."""
        assert account is not None
        order, body = orders.finalize(self.ctx, signed, account, params["order_id"], base)
        return Reply(body, headers={"Location": f"{base}/order/{order.order_id}"})

    def authorization(
        self,
        signed: jws.SignedRequest,
        account: AcmeAccount | None,
        key: jose_jwk.JWK,
        params: dict[str, str],
        base: str,
    ) -> Reply:
        """Sections 7.5 and 7.5.2."""
        assert account is not None
        body = authorizations.get_authorization(self.ctx, signed, account, params["authz_id"], base)
        return Reply(body)

    def challenge(
        self,
        signed: jws.SignedRequest,
        account: AcmeAccount | None,
        key: jose_jwk.JWK,
        params: dict[str, str],
        base: str,
    ) -> Reply:
        """Section 7.5.1: validation starts in the background once the reply is ready;
        device-attest-01 is decided at once (``device_attest``)."""
        assert account is not None
        att_obj = device_attest.answer(signed)
        body, up, started, authz = authorizations.respond(
            self.ctx,
            signed,
            account,
            params["challenge_id"],
            base,
            precheck=device_attest.precheck(att_obj),
        )
        after = None
        if started is not None and started.type == device_attest.CHALLENGE_TYPE:
            assert att_obj is not None  # the precheck refused the answer otherwise
            key_authorization = jws.key_authorization(started.token, key)
            body = device_attest.validate(
                self.ctx, started, authz, key_authorization, att_obj, base
            )
        elif started is not None:
            key_authorization = jws.key_authorization(started.token, key)

            def after() -> None:
                authorizations.schedule(self.ctx, started, authz, key_authorization)

        return Reply(body, links=[f'<{up}>;rel="up"'], after=after)

    def certificate(
        self,
        signed: jws.SignedRequest,
        account: AcmeAccount | None,
        key: jose_jwk.JWK,
        params: dict[str, str],
        base: str,
    ) -> Reply:
        """Section 7.4.2."""
        assert account is not None
        alternate = params.get("alternate", "0")
        if not alternate.isdigit() or len(alternate) > 3:
            raise AcmeProblem("malformed", "no such alternate chain", status=404)
        chain, links = orders.certificate_chain(
            self.ctx, account, params["order_id"], int(alternate), base
        )
        return Reply(chain, links=links, media_type="application/pem-certificate-chain")

    def revoke(
        self,
        signed: jws.SignedRequest,
        account: AcmeAccount | None,
        key: jose_jwk.JWK,
        params: dict[str, str],
        base: str,
    ) -> Reply:
        """Section 7.6."""
        orders.revoke(self.ctx, signed, account, key)
        return Reply(b"")


def _account_of(exc: IotpkiError, fallback: str | None) -> str | None:
    value = exc.data.get("acme_account")
    return value if isinstance(value, str) else fallback


def acme_routes(ctx: AcmeContext) -> list[BaseRoute]:
    """The ACME routes, to mount at the HTTPS listener's root."""
    e = AcmeEndpoint(ctx)
    any_method = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"]

    def post(path: str, handler: Handler, **options: Any) -> Route:
        return Route(f"{_PREFIX}{path}", e.signed(handler, **options), methods=any_method)

    return [
        Route(f"{_PREFIX}/directory", e.directory, methods=["GET"]),
        Route(f"{_PREFIX}/new-nonce", e.new_nonce, methods=["GET", "HEAD"]),
        Route(f"{_PREFIX}/renewal-info/{{cert_id}}", e.renewal_info, methods=["GET"]),
        post("/new-account", e.new_account, jwk="required"),
        post("/acct/{account_id}", e.account),
        post("/acct/{account_id}/orders", e.account_orders),
        post("/key-change", e.key_change),
        post("/new-order", e.new_order),
        post("/order/{order_id}", e.order),
        post("/order/{order_id}/finalize", e.finalize),
        post("/authz/{authz_id}", e.authorization),
        post("/chall/{challenge_id}", e.challenge),
        post("/cert/{order_id}", e.certificate),
        post("/cert/{order_id}/{alternate}", e.certificate),
        post("/revoke-cert", e.revoke, jwk="allowed"),
        Route(f"{_PREFIX}/{{rest:path}}", e.unknown, methods=any_method),
    ]
