"""``/.well-known/cmp`` and ``/.well-known/cmp/p/<label>`` (RFC 6712 as updated by RFC 9480
section 3): POST a DER PKIMessage, get one back, on both listeners (messages protect
themselves)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from iotpki.errors import IotpkiError
from iotpki.protocols.access import client_address, log_access
from iotpki.protocols.cmp.responder import CmpResponder
from iotpki.protocols.http import blocking, read_body

__all__ = ["BODY_LIMIT", "MEDIA_TYPE", "routes"]

MEDIA_TYPE = "application/pkixcmp"
BODY_LIMIT = 64 * 1024
"""The largest PKIMessage accepted (a request with an RSA-4096 key and a chain is ~8 KiB)."""


def routes(responder: CmpResponder) -> list[BaseRoute]:
    """The CMP routes, with and without a label."""

    async def cmp(request: Request) -> Response:
        try:
            der = await read_body(request, BODY_LIMIT)
        except IotpkiError as exc:  # too large or cut short: no PKIMessage to answer
            await blocking(responder.refuse_transport, exc, client_address(request))
            return PlainTextResponse(exc.message + "\n", exc.status)
        log_access(request, "cmp")
        label = request.path_params.get("label")
        answer = await blocking(responder.handle, der, label, client_address(request))
        return Response(answer, media_type=MEDIA_TYPE)

    return [
        Route("/.well-known/cmp", cmp, methods=["POST"]),
        Route("/.well-known/cmp/p/{label}", cmp, methods=["POST"]),
    ]
