"""OCSP over HTTP (RFC 6960 appendix A, RFC 5019 sections 5 and 6): ``/ocsp`` POST and GET.

The hot path is a dictionary lookup: the raw request (GET path or POST body) maps to the cache
key of a pre-signed response, which is sent as it is. Anything else is parsed and answered in a
worker thread. Bad input is answered with the OCSP error status RFC 6960 section 4.2.1 defines
(``malformedRequest``, ``unauthorized``) or a 4xx, and audited; it changes nothing.
"""

from __future__ import annotations

import logging
from datetime import datetime
from email.utils import format_datetime

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from iotpki.core.authority import Authority
from iotpki.core.responder import CachedResponse, CacheKey, OcspResponder, UnknownIssuer
from iotpki.core.revocation import (
    OCSP_STATUS_MALFORMED,
    OCSP_STATUS_TRY_LATER,
    OCSP_STATUS_UNAUTHORIZED,
    ocsp_error,
)
from iotpki.errors import BackendError, IotpkiError, MalformedInput
from iotpki.protocols.http import BodyTooLarge, blocking, read_body
from iotpki.protocols.ocsp.messages import decode_get_path, parse_request

__all__ = ["MEDIA_TYPE", "OcspEndpoint", "OcspFastPath", "routes"]

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/ocsp-response"
_REQUEST_TYPE = "application/ocsp-request"
_MAX_BODY = 16 * 1024
_MAX_GET = 8 * 1024
_MEMO_LIMIT = 200_000

RawHeaders = list[tuple[bytes, bytes]]


class OcspEndpoint:
    """Request bytes in, response bytes out; keeps the request-to-response-key memo."""

    def __init__(self, responder: OcspResponder, authority: Authority) -> None:
        self._responder = responder
        self._authority = authority
        self._clock = authority.clock
        self._memo: dict[bytes | str, CacheKey] = {}
        self._headers: dict[str, tuple[datetime, RawHeaders]] = {}

    def lookup(self, raw: bytes | str) -> tuple[bytes, RawHeaders] | None:
        """The pre-signed response and its headers for a request seen before, if still cached."""
        key = self._memo.get(raw)
        if key is None:
            return None
        now = self._clock.now()
        entry = self._responder.cached(key, now)
        if entry is None:
            return None
        return entry.der, self._raw_headers(key[0], entry, now)

    def fast(self, raw: bytes | str) -> Response | None:
        """``lookup`` as a Starlette response."""
        found = self.lookup(raw)
        return None if found is None else _as_response(*found)

    def slow(self, raw: bytes | str, der: bytes | None, peer: str) -> Response:
        """Parse, look up or sign, and remember the request for the fast path (worker thread)."""
        config = self._responder.config
        now = self._clock.now()
        try:
            if der is None:
                der = decode_get_path(str(raw), _MAX_GET)
            request = parse_request(
                der, max_certs=config.ocsp_max_certs, max_nonce=config.ocsp_max_nonce
            )
            if len(request.cert_ids) == 1 and request.nonce is None:
                key, entry = self._responder.answer_one(request.cert_ids[0], now)
                if len(self._memo) >= _MEMO_LIMIT:
                    self._memo.clear()
                self._memo[raw] = key
                return self._response(key[0], entry)
            # RFC 8954 section 2.1: a nonce makes the response unique, so it is signed now.
            der_out = self._responder.answer_many(list(request.cert_ids), request.nonce, now)
            return Response(der_out, media_type=MEDIA_TYPE, headers={"Cache-Control": "no-store"})
        except UnknownIssuer as exc:
            return self.refuse(exc, OCSP_STATUS_UNAUTHORIZED, peer)
        except MalformedInput as exc:
            return self.refuse(exc, OCSP_STATUS_MALFORMED, peer)
        except BackendError as exc:
            # RFC 6960 section 4.2.1: tryLater when the responder cannot answer for now.
            log.warning("OCSP answer failed: %s", exc.message)
            return Response(ocsp_error(OCSP_STATUS_TRY_LATER), media_type=MEDIA_TYPE)

    def refuse(self, exc: IotpkiError, status: int, peer: str) -> Response:
        """An OCSP error response, audited per source (RFC 6960 section 2.3)."""
        self._authority.audit_refusal(
            exc,
            source=peer,
            actor=f"ocsp:{peer}",
            action="ocsp.refused",
            target="ocsp",
            extra={"status": status},
        )
        return Response(ocsp_error(status), media_type=MEDIA_TYPE)

    def _response(self, ca_name: str, entry: CachedResponse) -> Response:
        return _as_response(entry.der, self._raw_headers(ca_name, entry, self._clock.now()))

    def _raw_headers(self, ca_name: str, entry: CachedResponse, now: datetime) -> RawHeaders:
        """RFC 5019 section 6.2: max-age, ETag, Last-Modified and Expires for caches."""
        cached = self._headers.get(entry.etag)
        # Recomputed once a second at most, so that max-age never outlives nextUpdate.
        if cached is None or cached[0] != now:
            max_age = min(self._responder.max_age(ca_name), entry.next_update - now)
            seconds = max(0, int(max_age.total_seconds()))
            headers = [
                (b"content-type", MEDIA_TYPE.encode()),
                (b"content-length", str(len(entry.der)).encode()),
                (b"etag", entry.etag.encode()),
                (b"last-modified", format_datetime(entry.this_update, usegmt=True).encode()),
                (b"expires", format_datetime(entry.next_update, usegmt=True).encode()),
                (
                    b"cache-control",
                    f"max-age={seconds}, public, no-transform, must-revalidate".encode(),
                ),
            ]
            if len(self._headers) >= _MEMO_LIMIT:
                self._headers.clear()
            cached = self._headers[entry.etag] = (now, headers)
        return cached[1]


def _as_response(der: bytes, headers: RawHeaders) -> Response:
    response = Response(der)
    response.raw_headers = list(headers)
    return response


class OcspFastPath:
    """ASGI middleware answering repeated OCSP requests from the cache before any routing.

    Everything it does not find (first requests, nonces, bad input, other paths) goes on to the
    application unchanged, with the body it read replayed.
    """

    def __init__(self, app: ASGIApp, endpoint: OcspEndpoint) -> None:
        self._app = app
        self._endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve a cache hit directly; pass everything else on."""
        path: str = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith("/ocsp"):
            await self._app(scope, receive, send)
            return
        method = scope["method"]
        if method == "GET" and path.startswith("/ocsp/"):
            found = self._endpoint.lookup(path[6:])
        elif method == "POST" and path in ("/ocsp", "/ocsp/") and _ocsp_content(scope):
            body, more, messages = await _read_small(receive)
            found = None if more else self._endpoint.lookup(body)
            if found is None:
                await self._app(scope, _replay(messages, receive), send)
                return
        else:
            found = None
        if found is None:
            await self._app(scope, receive, send)
            return
        der, headers = found
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": der})


def _ocsp_content(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return bool(value.split(b";")[0].strip().lower() == _REQUEST_TYPE.encode())
    return False


async def _read_small(receive: Receive) -> tuple[bytes, bool, list[Message]]:
    """The body if it is small (``more`` false), and every message read, for replaying."""
    messages: list[Message] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return b"", True, messages
        size += len(message.get("body", b""))
        if size > _MAX_BODY:
            return b"", True, messages
        if not message.get("more_body", False):
            break
    return b"".join(m.get("body", b"") for m in messages), False, messages


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed


def routes(endpoint: OcspEndpoint) -> list[BaseRoute]:
    """The POST and GET routes of the responder."""

    def peer(request: Request) -> str:
        return request.client.host if request.client else "unknown"

    async def post(request: Request) -> Response:
        content_type = request.headers.get("content-type", _REQUEST_TYPE).split(";")[0].strip()
        if content_type.lower() != _REQUEST_TYPE:
            return PlainTextResponse(f"content type must be {_REQUEST_TYPE}", status_code=415)
        try:
            body = await read_body(request, _MAX_BODY)
        except BodyTooLarge as exc:
            await blocking(endpoint.refuse, exc, OCSP_STATUS_MALFORMED, peer(request))
            return PlainTextResponse(exc.message, status_code=413)
        except MalformedInput as exc:
            return await blocking(endpoint.refuse, exc, OCSP_STATUS_MALFORMED, peer(request))
        hit = endpoint.fast(body)
        if hit is not None:
            return hit
        return await blocking(endpoint.slow, body, body, peer(request))

    async def get(request: Request) -> Response:
        encoded: str = request.path_params["encoded"]
        hit = endpoint.fast(encoded)
        if hit is not None:
            return hit
        return await blocking(endpoint.slow, encoded, None, peer(request))

    return [
        Route("/ocsp", post, methods=["POST"]),
        Route("/ocsp/", post, methods=["POST"]),
        Route("/ocsp/{encoded:path}", get, methods=["GET"]),
    ]
