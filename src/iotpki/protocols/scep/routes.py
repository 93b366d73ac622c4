"""``/scep`` (GET and POST, RFC 8894 section 4): thin Starlette routes over the responder."""

from __future__ import annotations

import base64
import binascii

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from iotpki.errors import IotpkiError, MalformedInput, RequestError
from iotpki.protocols.http import blocking, read_body
from iotpki.protocols.scep.responder import ScepResponder, ScepResponse

__all__ = ["BODY_LIMIT", "routes"]

BODY_LIMIT = 64 * 1024
"""The largest pkiMessage accepted (an RSA-4096 request is about 6 KiB)."""


def _actor(request: Request) -> str:
    client = request.client
    return f"scep:{client.host if client else 'unknown'}"


def _message_param(request: Request) -> bytes:
    """RFC 8894 section 4.1: a GET PKIOperation carries the base64 pkiMessage in ``message``."""
    text = request.query_params.get("message", "")
    if len(text) > BODY_LIMIT * 4 // 3 + 4:
        raise MalformedInput("the message parameter is too long")
    # Some clients do not percent-encode '+', which then arrives as a space.
    text = text.replace(" ", "+").replace("\n", "").replace("\r", "")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedInput("the message parameter is not base64") from None


def routes(responder: ScepResponder) -> list[BaseRoute]:
    """The SCEP route, to mount on the plain-HTTP listener."""

    def send(answer: ScepResponse) -> Response:
        return Response(answer.body, status_code=answer.status, media_type=answer.media_type)

    async def scep(request: Request) -> Response:
        operation = request.query_params.get("operation", "")
        actor = _actor(request)
        message = request.query_params.get("message")
        try:
            if operation == "GetCACaps":
                return send(await blocking(responder.get_ca_caps, message, actor))
            if operation == "GetCACert":
                return send(await blocking(responder.get_ca_cert, message, actor))
            if operation != "PKIOperation":
                raise RequestError(f"unknown operation {operation[:64]!r}")
            if request.method == "POST":
                der = await read_body(request, BODY_LIMIT)
            else:
                der = _message_param(request)
            return send(await blocking(responder.pki_operation, der, actor))
        except IotpkiError as exc:
            answer = await blocking(responder.refuse, exc, operation[:64], actor)
            return send(answer)

    return [Route("/scep", scep, methods=["GET", "POST"])]
