"""CA certificates for AIA caIssuers (RFC 5280 section 4.2.2.1): ``/ca/<name>.crt``, DER."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from iotpki.core.authority import Authority
from iotpki.core.policy import is_valid_name
from iotpki.errors import NotFound
from iotpki.protocols.access import log_access
from iotpki.protocols.http import blocking

__all__ = ["routes"]


def routes(authority: Authority) -> list[BaseRoute]:
    """The caIssuers route."""

    async def ca_certificate(request: Request) -> Response:
        name = request.path_params["name"]
        if not is_valid_name(name):  # CA names are short slugs: anything else is not looked up
            return PlainTextResponse("no such CA", status_code=404)
        log_access(request, "ca.certificate")
        try:
            ca = await blocking(authority.get_ca, name)
        except NotFound:
            return PlainTextResponse("no such CA", status_code=404)
        if ca.certificate_der is None:
            return PlainTextResponse("CA not active", status_code=404)
        return Response(
            ca.certificate.public_bytes(serialization.Encoding.DER),
            media_type="application/pkix-cert",
            headers={"Cache-Control": "public, max-age=3600"},
        )

    return [Route("/ca/{name}.crt", ca_certificate, methods=["GET"])]
