"""EST (RFC 7030) routes under ``/.well-known/est/`` and ``/.well-known/est/<label>/``.

Thin: each handler parses the request, turns its credentials into
:data:`iotpki.core.authenticators.Credentials` for the authenticators, calls
:class:`iotpki.core.enrollment.Enrollment` and encodes the answer. Errors take the form
RFC 7030 section 4.2.3 gives them: an HTTP 4xx status with a short ``text/plain`` reason;
each refusal is audited once (credentials by the authenticators, the rest here).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from iotpki.core.authenticators import (
    Authorization,
    BootstrapCertificate,
    Context,
    Credentials,
    CurrentCertificate,
    OneTimeSecret,
)
from iotpki.core.authority import Issued
from iotpki.core.campaigns import Campaigns
from iotpki.core.enrollment import Enrollment, Pending
from iotpki.core.models import KeyType
from iotpki.errors import AuthError, Busy, IotpkiError, RateLimited
from iotpki.protocols.access import client_address, log_access
from iotpki.protocols.client_cert import ClientCertSource
from iotpki.protocols.est import messages
from iotpki.protocols.http import blocking, read_body

__all__ = ["EstEndpoints", "est_routes"]

_PREFIX = "/.well-known/est"
_BODY_LIMIT = 32 * 1024
_REALM = 'Basic realm="est", charset="UTF-8"'
_B64 = {"Content-Transfer-Encoding": "base64"}

Handler = Callable[[Request, str | None], Awaitable[Response]]


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    """RFC 7617 Basic credentials (user ID, password), or None when absent."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        raise AuthError("only HTTP Basic authentication is accepted here")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError) as exc:
        raise AuthError("malformed Basic credentials") from exc
    user, sep, password = decoded.partition(":")
    if not sep or not user or not password:
        raise AuthError("malformed Basic credentials")
    return user, password


class EstEndpoints:
    """The EST operations bound to one enrollment service."""

    def __init__(self, enrollment: Enrollment, peers: ClientCertSource) -> None:
        self.enrollment = enrollment
        self.authority = enrollment.authority
        self.peers = peers

    def endpoint(
        self, operation: str, handler: Handler
    ) -> Callable[[Request], Awaitable[Response]]:
        """Wrap a handler with the EST error form and the audit of refusals."""

        async def wrapped(request: Request) -> Response:
            label = request.path_params.get("label")
            try:
                return await handler(request, label)
            except IotpkiError as exc:
                await blocking(
                    self.authority.audit_refusal,
                    exc,
                    source=client_address(request),
                    actor="est:client",
                    action=f"est.{operation}.refused",
                    target=request.url.path,
                )
                headers: dict[str, str] = {}
                if isinstance(exc, RateLimited | Busy):
                    headers["Retry-After"] = str(exc.data.get("retry_after", 60))
                elif exc.status == 401:
                    headers["WWW-Authenticate"] = _REALM
                return PlainTextResponse(exc.message + "\n", exc.status, headers=headers)

        return wrapped

    def _target(self, label: str | None) -> tuple[str | None, str | None]:
        """(profile, CA) the path label picks: a profile name first, then a CA name."""
        return self.authority.label_target(label, "EST")

    async def cacerts(self, request: Request, label: str | None) -> Response:
        """RFC 7030 section 4.1: the CA chain, root last, and any rollover CA certificates."""
        log_access(request, "est.cacerts")
        certs = await blocking(self._cacerts, label)
        return Response(
            messages.b64_body(messages.certs_only(certs)),
            media_type=messages.CERTS_ONLY,
            headers=_B64,
        )

    def _cacerts(self, label: str | None) -> list[x509.Certificate]:
        _, ca = self._target(label)
        return self.authority.ca_certificates(ca or self.authority.default_issuing_ca())

    async def csrattrs(self, request: Request, label: str | None) -> Response:
        """RFC 7030 section 4.5: the key algorithms the label's profile accepts, or for a
        client certificate that a rotation campaign replaces, the key type it asks for."""
        log_access(request, "est.csrattrs")
        profile, _ = self._target(label)
        accepted = self.authority.profile(profile or "device").key_types
        cert = self.peers.certificate(request)
        if cert is not None:
            asked = await blocking(self._campaign_key_type, cert)
            accepted = accepted if asked is None else (asked,)
        return Response(
            messages.b64_body(messages.csr_attributes(accepted)),
            media_type=messages.CSRATTRS,
            headers=_B64,
        )

    def _campaign_key_type(self, cert: x509.Certificate) -> KeyType | None:
        record = self.enrollment.authenticators.current.stored(cert)
        return None if record is None else Campaigns(self.authority).key_type_for(record)

    async def _read_csr(self, request: Request) -> x509.CertificateSigningRequest:
        body = await read_body(request, _BODY_LIMIT)
        return messages.parse_csr(body, request.headers.get("content-type"))

    def _authorize(self, request: Request, credentials: Credentials) -> Authorization:
        context = Context("est", source=client_address(request))
        return self.enrollment.authenticators.authorize(credentials, context)

    def _enrollee(self, request: Request) -> Authorization:
        """RFC 7030 section 3.3.2 / 3.2.3: an IDevID client certificate, else HTTP Basic."""
        cert = self.peers.certificate(request)
        if cert is not None:
            return self._authorize(request, BootstrapCertificate(cert))
        credentials = _basic_credentials(request)
        if credentials is None:
            raise AuthError("authenticate with an IDevID client certificate or HTTP Basic")
        return self._authorize(request, OneTimeSecret(*credentials))

    async def simpleenroll(self, request: Request, label: str | None) -> Response:
        """RFC 7030 section 4.2.1: initial enrollment."""
        return await self._enroll(request, label, server_key=False)

    async def serverkeygen(self, request: Request, label: str | None) -> Response:
        """RFC 7030 section 4.4: enrollment with a key made by the server."""
        return await self._enroll(request, label, server_key=True)

    async def _enroll(self, request: Request, label: str | None, *, server_key: bool) -> Response:
        profile, ca = await blocking(self._target, label)
        csr = await self._read_csr(request)

        def run() -> Issued | Pending | tuple[Issued, CertificateIssuerPrivateKeyTypes]:
            enrollee = self._enrollee(request)
            return self.enrollment.enroll(
                enrollee, csr, profile=profile, ca=ca, server_key=server_key
            )

        result = await blocking(run)
        if isinstance(result, Pending):
            # RFC 7030 section 4.2.3: 202 with Retry-After until the request is decided.
            return PlainTextResponse(
                f"enrollment {result.request_id} waits for approval\n",
                202,
                headers={"Retry-After": str(result.retry_after)},
            )
        if isinstance(result, Issued):
            return _issued_response(result)
        issued, key = result
        key_der = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        content_type, body = messages.encode_serverkeygen(key_der, issued.certificate)
        return Response(body, headers={"Content-Type": content_type})

    async def simplereenroll(self, request: Request, label: str | None) -> Response:
        """RFC 7030 section 4.2.2: renew or rekey with the current certificate over TLS."""
        csr = await self._read_csr(request)

        def run() -> Issued:
            cert = self.peers.certificate(request)
            if cert is None:
                raise AuthError("re-enrollment needs the current certificate as TLS client cert")
            current = self._authorize(request, CurrentCertificate(cert))
            return self.enrollment.reenroll(current, csr)

        return _issued_response(await blocking(run))


def _issued_response(issued: Issued) -> Response:
    """RFC 7030 section 4.2.3: the new certificate alone, as base64 certs-only CMS."""
    return Response(
        messages.b64_body(messages.certs_only([issued.certificate])),
        media_type=messages.CERTS_ONLY,
        headers=_B64,
    )


def est_routes(enrollment: Enrollment, peers: ClientCertSource) -> list[BaseRoute]:
    """The EST routes, with and without a label."""
    est = EstEndpoints(enrollment, peers)
    operations: list[tuple[str, Handler, str]] = [
        ("cacerts", est.cacerts, "GET"),
        ("csrattrs", est.csrattrs, "GET"),
        ("simpleenroll", est.simpleenroll, "POST"),
        ("simplereenroll", est.simplereenroll, "POST"),
        ("serverkeygen", est.serverkeygen, "POST"),
    ]
    routes: list[BaseRoute] = []
    for name, handler, method in operations:
        wrapped = est.endpoint(name, handler)
        routes.append(Route(f"{_PREFIX}/{name}", wrapped, methods=[method]))
        routes.append(Route(f"{_PREFIX}/{{label}}/{name}", wrapped, methods=[method]))
    return routes
