"""Admin API for ACME under ``/api/v1/acme``: EAB credentials and renewal-window overrides.

Authentication, roles and the error form are the admin API's own (``iotpki.api.routes``), as for
the SCEP and EST admin resources beside it; the ACME codecs come from ``iotpki.protocols.acme``.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from iotpki.api.models import AdvanceRenewalRequest, EabRequest
from iotpki.api.openapi import ACME
from iotpki.api.routes import AdminApi, _json_body
from iotpki.api.schema import bind, validate
from iotpki.core.acme_ports import AcmeStore
from iotpki.core.authority import Authority
from iotpki.core.models import ApiTokenRecord
from iotpki.core.policy import parse_duration
from iotpki.core.times import parse_time
from iotpki.errors import ConfigError, RequestError
from iotpki.protocols.acme import eab, renewal
from iotpki.protocols.http import blocking

__all__ = ["acme_admin_routes"]

_BODY_LIMIT = 16 * 1024


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
        data = validate(EabRequest, await _json_body(request, _BODY_LIMIT))
        credential, key = await blocking(
            lambda: eab.create(
                self.store,
                now=self.authority.clock.now(),
                actor=f"api:{caller.token_id}",
                profiles=self.profiles,
                tenant=data.tenant or "",
                profile=data.profile or "server",
                device_profile=data.device_profile or "device",
                device_patterns=tuple(data.device_patterns),
                description=data.description or "",
                lifetime=_duration(data.lifetime, "lifetime"),
            )
        )
        return JSONResponse({**eab.credential_json(credential), "hmac_key": key}, status_code=201)

    async def list_eab(self, request: Request, caller: ApiTokenRecord) -> Response:
        """GET /acme/eab: every credential, without keys."""

        def load() -> list[dict[str, object]]:
            with self.store.transaction(readonly=True) as tx:
                return [eab.credential_json(c) for c in tx.list_eab()]

        items = await blocking(load)
        await blocking(
            self.authority.record_event, f"api:{caller.token_id}", "api.acme.eab.list", "", {}
        )
        return JSONResponse({"items": items})

    async def revoke_eab(self, request: Request, caller: ApiTokenRecord) -> Response:
        """POST /acme/eab/{key_id}/revoke: withdraw an unused credential."""
        key_id = request.path_params["key_id"]
        await blocking(
            lambda: eab.revoke(
                self.store, key_id, now=self.authority.clock.now(), actor=f"api:{caller.token_id}"
            )
        )
        return JSONResponse({"key_id": key_id, "revoked": True})

    async def advance_renewal(self, request: Request, caller: ApiTokenRecord) -> Response:
        """POST /acme/renewal-info/advance: pull renewal windows forward (RFC 9773)."""
        data = validate(AdvanceRenewalRequest, await _json_body(request, _BODY_LIMIT))
        override = await blocking(
            lambda: renewal.advance(
                self.store,
                now=self.authority.clock.now(),
                actor=f"api:{caller.token_id}",
                serial=data.serial,
                ca_name=data.ca,
                profile=data.profile,
                issued_before=_time(data.issued_before, "issued_before"),
                within=_duration(data.within, "within") or timedelta(hours=6),
                explanation_url=data.explanation_url,
            )
        )
        return JSONResponse(renewal.override_json(override), status_code=201)


def acme_admin_routes(
    authority: Authority, store: AcmeStore, profiles: Collection[str]
) -> list[BaseRoute]:
    """The ACME admin routes; EAB credentials are secrets, overrides a revocation-like act."""
    return bind(ACME, AdminApi(authority).endpoint, AcmeAdmin(authority, store, profiles))
