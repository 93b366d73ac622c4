"""Admin API for SCEP: one-time challenge passwords and pending SCEP transactions.

Mounted beside :mod:`iotpki.api.routes` under ``/api/v1/scep`` with the same bearer tokens,
roles and JSON error form; the state changes are audited by :class:`ScepService`.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from iotpki.api.models import ScepChallengeRequest
from iotpki.api.openapi import SCEP
from iotpki.api.routes import AdminApi, _json_body, _lifetime
from iotpki.api.schema import bind, validate
from iotpki.core.models import ApiTokenRecord, ScepTransactionRecord, ScepTransactionStatus
from iotpki.core.scep import ScepResult, ScepService
from iotpki.errors import RequestError
from iotpki.protocols.http import blocking

__all__ = ["scep_api_routes", "transaction_json"]

_STATUSES = tuple(ScepTransactionStatus)


def transaction_json(record: ScepTransactionRecord) -> dict[str, Any]:
    """A SCEP transaction as the API shows it."""
    return {
        "ca": record.ca_name,
        "transaction_id": record.transaction_id,
        "kind": record.kind,
        "status": record.status,
        "device_id": record.device_id,
        "profile": record.profile,
        "key_fingerprint": record.key_fingerprint,
        "created_at": record.created_at.isoformat(),
        "updated_at": record.updated_at.isoformat(),
        "serial": record.serial,
        "fail_info": record.fail_info,
        "renewed_from": record.renewed_from,
        "decided_by": record.decided_by,
    }


class ScepApi:
    """Handlers bound to one SCEP service."""

    def __init__(self, service: ScepService) -> None:
        self.service = service

    async def create_challenge(self, request: Request, caller: ApiTokenRecord) -> Response:
        """POST /scep/challenges: a one-time challenge password for a device (shown once)."""
        data = validate(ScepChallengeRequest, await _json_body(request))
        lifetime = _lifetime(data.expires or "24h")
        assert lifetime is not None
        secret, record = await blocking(
            lambda: self.service.create_challenge(
                data.device_id,
                actor=f"api:{caller.token_id}",
                lifetime=lifetime,
                profile=data.profile or "device",
                ca=data.ca,
                approval=data.approval,
            )
        )
        body = {
            "challenge_id": record.challenge_id,
            "challenge_password": secret,
            "device_id": record.device_id,
            "profile": record.profile,
            "ca": record.ca_name,
            "approval": record.approval,
            "expires_at": record.expires_at.isoformat(),
        }
        return JSONResponse(body, status_code=201)

    async def list_transactions(self, request: Request, caller: ApiTokenRecord) -> Response:
        """GET /scep/transactions?status=pending: SCEP transactions, newest first."""
        status = request.query_params.get("status")
        if status is not None and status not in _STATUSES:
            raise RequestError("status must be pending, success or failure", field="status")
        records = await blocking(self.service.transactions, status)
        return JSONResponse({"items": [transaction_json(r) for r in records]})

    async def _decide(self, request: Request, caller: ApiTokenRecord, approve: bool) -> Response:
        params = request.path_params
        result: ScepResult = await blocking(
            lambda: self.service.decide(
                params["ca"],
                params["transaction_id"],
                approve=approve,
                actor=f"api:{caller.token_id}",
            )
        )
        return JSONResponse(transaction_json(result.transaction))

    async def approve(self, request: Request, caller: ApiTokenRecord) -> Response:
        """POST /scep/transactions/{ca}/{transaction_id}/approve: issue a pending request."""
        return await self._decide(request, caller, True)

    async def reject(self, request: Request, caller: ApiTokenRecord) -> Response:
        """POST /scep/transactions/{ca}/{transaction_id}/reject: refuse a pending request."""
        return await self._decide(request, caller, False)


def scep_api_routes(service: ScepService) -> list[BaseRoute]:
    """The SCEP admin routes."""
    return bind(SCEP, AdminApi(service.authority).endpoint, ScepApi(service))
