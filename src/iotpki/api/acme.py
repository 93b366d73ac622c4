"""Admin API for ACME under ``/api/v1/acme``: EAB credentials and renewal-window overrides.

Authentication, roles and the error form are the admin API's own (``iotpki.api.routes``), as for
the SCEP and EST admin resources beside it; the ACME codecs come from ``iotpki.protocols.acme``.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from iotpki.api.routes import AdminApi
from iotpki.core.acme_ports import AcmeStore
from iotpki.core.authority import Authority
from iotpki.core.models import ApiTokenRecord
from iotpki.core.policy import parse_duration
from iotpki.core.times import parse_time
from iotpki.errors import ConfigError, MalformedInput, RequestError
from iotpki.protocols.acme import eab, renewal
from iotpki.protocols.http import read_body

__all__ = ["acme_admin_routes"]


async def json_body(request: Request) -> dict[str, Any]:
    """A bounded JSON object body."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise RequestError("expected Content-Type: application/json")
    try:
        data = json.loads(await read_body(request, 16 * 1024))
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedInput(f"body is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise MalformedInput("body must be a JSON object")
    return data


def _text(data: dict[str, object], name: str, default: str | None = None) -> str | None:
    value = data.get(name, default)
    if value is not None and (not isinstance(value, str) or len(value) > 512):
        raise RequestError(f"field {name!r} must be a string", field=name)
    return value


def _duration(value: str | None, name: str) -> timedelta | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ConfigError as exc:
        raise RequestError(exc.message, field=name) from exc


def _time(value: str | None, name: str) -> datetime | None:
    return None if value is None else parse_time(value, name)


class AcmeAdmin:
    """Handlers for the ACME admin resources."""

    def __init__(self, authority: Authority, store: AcmeStore, profiles: Collection[str]) -> None:
        self.authority = authority
        self.store = store
        self.profiles = frozenset(profiles)

    async def create_eab(self, request: Request, caller: ApiTokenRecord) -> Response:
        """POST /acme/eab: a single-use EAB credential (its HMAC key is shown only here)."""
        data = await json_body(request)
        patterns = data.get("device_patterns", [])
        if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
            raise RequestError("device_patterns must be a list of strings")
        credential, key = await run_in_threadpool(
            lambda: eab.create(
                self.store,
                now=self.authority.clock.now(),
                actor=f"api:{caller.token_id}",
                profiles=self.profiles,
                tenant=_text(data, "tenant") or "",
                profile=_text(data, "profile", "server") or "server",
                device_profile=_text(data, "device_profile", "device") or "device",
                device_patterns=tuple(patterns),
                description=_text(data, "description", "") or "",
                lifetime=_duration(_text(data, "lifetime"), "lifetime"),
            )
        )
        return JSONResponse({**eab.credential_json(credential), "hmac_key": key}, status_code=201)

    async def list_eab(self, request: Request, caller: ApiTokenRecord) -> Response:
        """GET /acme/eab: every credential, without keys."""

        def load() -> list[dict[str, object]]:
            with self.store.transaction(readonly=True) as tx:
                return [eab.credential_json(c) for c in tx.list_eab()]

        items = await run_in_threadpool(load)
        await run_in_threadpool(
            self.authority.record_event, f"api:{caller.token_id}", "api.acme.eab.list", "", {}
        )
        return JSONResponse({"items": items})

    async def revoke_eab(self, request: Request, caller: ApiTokenRecord) -> Response:
        """POST /acme/eab/{key_id}/revoke: withdraw an unused credential."""
        key_id = request.path_params["key_id"]
        await run_in_threadpool(
            lambda: eab.revoke(
                self.store, key_id, now=self.authority.clock.now(), actor=f"api:{caller.token_id}"
            )
        )
        return JSONResponse({"key_id": key_id, "revoked": True})

    async def advance_renewal(self, request: Request, caller: ApiTokenRecord) -> Response:
        """POST /acme/renewal-info/advance: pull renewal windows forward (RFC 9773)."""
        data = await json_body(request)
        override = await run_in_threadpool(
            lambda: renewal.advance(
                self.store,
                now=self.authority.clock.now(),
                actor=f"api:{caller.token_id}",
                serial=_text(data, "serial"),
                ca_name=_text(data, "ca"),
                profile=_text(data, "profile"),
                issued_before=_time(_text(data, "issued_before"), "issued_before"),
                within=_duration(_text(data, "within"), "within") or timedelta(hours=6),
                explanation_url=_text(data, "explanation_url"),
            )
        )
        return JSONResponse(renewal.override_json(override), status_code=201)


def acme_admin_routes(
    authority: Authority, store: AcmeStore, profiles: Collection[str]
) -> list[BaseRoute]:
    """The ACME admin routes; EAB credentials are secrets, overrides a revocation-like act."""
    api = AdminApi(authority)
    admin = AcmeAdmin(authority, store, profiles)
    e = api.endpoint
    return [
        Route("/api/v1/acme/eab", e("secret:create", admin.create_eab), methods=["POST"]),
        Route("/api/v1/acme/eab", e("secret:create", admin.list_eab), methods=["GET"]),
        Route(
            "/api/v1/acme/eab/{key_id}/revoke",
            e("secret:create", admin.revoke_eab),
            methods=["POST"],
        ),
        Route(
            "/api/v1/acme/renewal-info/advance",
            e("cert:revoke", admin.advance_renewal),
            methods=["POST"],
        ),
    ]
