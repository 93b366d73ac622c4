"""The AK CA's endpoints: a device proves its EK and gets its attestation key certified.

Devices have no API token when they enroll their AK, so these endpoints are unauthenticated:
what authenticates the device is TPM 2.0 credential activation (Part 1 section 24) against the
registered EK manufacturer roots. Each client address is rate-limited, every refusal and every
certificate is audited.

``POST /api/v1/akca/challenge`` ``{"ek_chain": [b64 DER, ...], "ak_public": b64 TPMT_PUBLIC}``
answers ``{"nonce", "issued_at", "credential_blob", "encrypted_secret"}`` (base64): the inputs of
TPM2_ActivateCredential. ``POST /api/v1/akca/activate`` sends the same fields with ``nonce``,
``issued_at`` and the released ``credential`` and answers 201 with the AK certificate and its
chain (PEM, the ``x5c`` of a device-attest-01 statement) and the device's permanent identifier.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from iotpki.api.jsonbody import load_object
from iotpki.api.openapi import AKCA
from iotpki.api.schema import bind
from iotpki.core.attestation import ek_permanent_identifier
from iotpki.core.authority import Authority
from iotpki.core.encoding import pem
from iotpki.core.ports.shared import RateCounters
from iotpki.core.ratelimit import SharedWindow
from iotpki.errors import IotpkiError, MalformedInput, RateLimited, RequestError
from iotpki.protocols.http import BodyTooLarge, blocking, read_body
from iotpki.services.attestation import AkcaService

__all__ = ["akca_routes"]

_BODY_LIMIT = 32 * 1024
_MAX_CHAIN = 4
_MAX_FIELD = 8192


def _b64(value: object, name: str, *, limit: int = _MAX_FIELD) -> bytes:
    """A base64 (standard alphabet) field, decoded."""
    if not isinstance(value, str) or not value or len(value) > limit:
        raise MalformedInput(f"{name} must be a base64 string", field=name)
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MalformedInput(f"{name} is not base64", field=name) from exc


def _ek_chain(data: dict[str, Any]) -> list[x509.Certificate]:
    """The EK certificate, then the manufacturer intermediates (DER, base64)."""
    value = data.get("ek_chain")
    if not isinstance(value, list) or not 1 <= len(value) <= _MAX_CHAIN:
        raise MalformedInput(f"ek_chain must hold 1 to {_MAX_CHAIN} certificates", field="ek_chain")
    try:
        return [x509.load_der_x509_certificate(_b64(v, "ek_chain")) for v in value]
    except ValueError as exc:
        raise MalformedInput(f"ek_chain holds a certificate that does not parse: {exc}") from exc


def _time(value: object) -> datetime:
    if not isinstance(value, str) or len(value) > 64:
        raise MalformedInput("issued_at must be the time the challenge gave", field="issued_at")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise MalformedInput("issued_at is not an ISO 8601 time", field="issued_at") from exc
    if parsed.tzinfo is None:
        raise MalformedInput("issued_at needs a time zone", field="issued_at")
    return parsed


def _status(exc: RequestError, status: int) -> RequestError:
    exc.status = status
    return exc


async def _json(request: Request) -> dict[str, Any]:
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise _status(RequestError("expected Content-Type: application/json"), 415)
    try:
        body = await read_body(request, _BODY_LIMIT)
    except BodyTooLarge as exc:
        raise _status(RequestError(exc.message), 413) from exc
    return load_object(body)


class AkcaEndpoint:
    """Route handlers bound to one AK CA service."""

    def __init__(
        self, service: AkcaService, authority: Authority, counters: RateCounters, per_minute: int
    ) -> None:
        self.service = service
        self.authority = authority
        minute = timedelta(minutes=1)
        self.limit = SharedWindow(counters, "akca", per_minute, minute, authority.clock)

    def endpoint(
        self, action: str, handler: Callable[[Request, str], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """Rate limit per client address; refusals audited and answered as JSON errors."""

        async def wrapped(request: Request) -> Response:
            address = request.client.host if request.client else "unknown"
            actor = f"akca:{address}"
            try:
                wait = await blocking(self.limit.retry_after, [address])
                if wait is not None:
                    raise RateLimited(
                        f"too many AK CA requests: retry after {wait} s", retry_after=wait
                    )
                return await handler(request, actor)
            except IotpkiError as exc:
                await blocking(
                    self.authority.audit_refusal,
                    exc,
                    source=address,
                    actor=actor,
                    action=f"akca.{action}.refused",
                    target=request.url.path,
                    extra={"check": exc.data["check"]} if "check" in exc.data else None,
                )
                headers = (
                    {"Retry-After": str(exc.data["retry_after"])}
                    if "retry_after" in exc.data
                    else None
                )
                return JSONResponse(exc.as_dict(), status_code=exc.status, headers=headers)

        return wrapped

    async def challenge(self, request: Request, actor: str) -> Response:
        """Step 1: check the EK certificate and AK, seal a credential to them."""
        data = await _json(request)
        ek_chain = _ek_chain(data)
        ak_public = _b64(data.get("ak_public"), "ak_public")
        sealed = await blocking(self.service.challenge, ek_chain, ak_public)
        await blocking(
            self.authority.record_event,
            actor,
            "akca.challenge",
            ek_permanent_identifier(ek_chain[0].public_key()),
            {"ak_name": hashlib.sha256(ak_public).hexdigest()},
        )
        encode = base64.b64encode
        return JSONResponse(
            {
                "nonce": encode(sealed.nonce).decode(),
                "issued_at": sealed.issued_at.isoformat(),
                "credential_blob": encode(sealed.credential_blob).decode(),
                "encrypted_secret": encode(sealed.encrypted_secret).decode(),
            }
        )

    async def activate(self, request: Request, actor: str) -> Response:
        """Step 2: the released credential proves EK and AK; issue the AK certificate."""
        data = await _json(request)
        ek_chain = _ek_chain(data)
        ak_public = _b64(data.get("ak_public"), "ak_public")
        nonce = _b64(data.get("nonce"), "nonce", limit=64)
        credential = _b64(data.get("credential"), "credential", limit=128)
        issued_at = _time(data.get("issued_at"))
        issued = await blocking(
            lambda: self.service.activate(
                ek_chain, ak_public, nonce, issued_at, credential, actor=actor
            )
        )
        return JSONResponse(
            {
                "serial": issued.record.serial,
                "permanent_identifier": ek_permanent_identifier(ek_chain[0].public_key()),
                "certificate": pem([issued.certificate]).decode(),
                "chain": pem(issued.chain).decode(),
            },
            status_code=201,
        )


def akca_routes(
    service: AkcaService, authority: Authority, counters: RateCounters, *, per_minute: int
) -> list[BaseRoute]:
    """The AK CA routes, to mount at the HTTPS listener's root (rates shared by replicas)."""
    e = AkcaEndpoint(service, authority, counters, per_minute)
    return bind(AKCA, e.endpoint, e)
