"""Admin API for SCEP: one-time challenge passwords and pending SCEP transactions.

Mounted beside :mod:`iotpki.api.routes` under ``/api/v1/scep`` with the same bearer tokens,
roles and JSON error form; the state changes are audited by :class:`ScepService`.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from iotpki.api.routes import AdminApi, _json_body, _lifetime, _str_field
from iotpki.core.models import ApiTokenRecord, ScepTransactionRecord
from iotpki.core.scep import ScepResult, ScepService
from iotpki.errors import RequestError
from iotpki.protocols.http import blocking

__all__ = ["scep_api_routes", "transaction_json"]

_STATUSES = ("pending", "success", "failure")


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
        data = await _json_body(request)
        approval = data.get("approval", False)
        if not isinstance(approval, bool):
            raise RequestError("field 'approval' must be true or false", field="approval")
        lifetime = _lifetime(_str_field(data, "expires") or "24h")
        assert lifetime is not None
        secret, record = await blocking(
            lambda: self.service.create_challenge(
                _str_field(data, "device_id", required=True) or "",
                actor=f"api:{caller.token_id}",
                lifetime=lifetime,
                profile=_str_field(data, "profile") or "device",
                ca=_str_field(data, "ca"),
                approval=approval,
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
    api = ScepApi(service)
    e = AdminApi(service.authority).endpoint
    base = "/api/v1/scep"
    one = f"{base}/transactions/{{ca}}/{{transaction_id:path}}"
    return [
        Route(f"{base}/challenges", e("secret:create", api.create_challenge), methods=["POST"]),
        Route(f"{base}/transactions", e("device:read", api.list_transactions), methods=["GET"]),
        Route(f"{one}/approve", e("cert:issue", api.approve), methods=["POST"]),
        Route(f"{one}/reject", e("cert:issue", api.reject), methods=["POST"]),
    ]
