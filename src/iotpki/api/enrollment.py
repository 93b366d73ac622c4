"""Admin API for device enrollment: devices, one-time secrets, bootstrap CAs and approvals.

Mounted beside :mod:`iotpki.api.routes` under ``/api/v1`` with the same bearer tokens, roles
and JSON error form; the state changes are audited by :class:`Enrollment`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from iotpki.api.models import BootstrapCARequest, DeviceRequest, DeviceStatusRequest, SecretRequest
from iotpki.api.openapi import ENROLLMENT
from iotpki.api.routes import AdminApi, _json_body, _lifetime
from iotpki.api.schema import bind, validate
from iotpki.core.encoding import load_certificate, pem
from iotpki.core.enrollment import Enrollment
from iotpki.core.models import ApiTokenRecord, ApprovalRecord, ApprovalStatus, BootstrapCARecord
from iotpki.errors import RequestError
from iotpki.protocols.http import blocking

__all__ = ["enrollment_api_routes"]

_STATUSES = tuple(ApprovalStatus)


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _bootstrap_json(record: BootstrapCARecord) -> dict[str, Any]:
    cert = record.certificate
    return {
        "name": record.name,
        "subject": cert.subject.rfc4514_string(),
        "fingerprint": record.fingerprint,
        "policy": record.enroll_policy,
        "profile": record.profile,
        "approval": record.approval,
        "status": record.status,
        "not_after": cert.not_valid_after_utc.isoformat(),
        "certificate": pem([cert]).decode(),
    }


def _approval_json(record: ApprovalRecord) -> dict[str, Any]:
    return {
        "id": record.request_id,
        "device_id": record.device_id,
        "method": record.method,
        "profile": record.profile,
        "ca": record.ca_name,
        "status": record.status,
        "created_at": record.created_at.isoformat(),
        "decided_at": _time(record.decided_at),
        "decided_by": record.decided_by,
        "serial": record.serial,
    }


class EnrollmentApi:
    """Handlers bound to one enrollment service."""

    def __init__(self, enrollment: Enrollment) -> None:
        self.enrollment = enrollment

    async def register_device(self, request: Request, caller: ApiTokenRecord) -> Response:
        """POST /devices: add a device, optionally bound to its IDevID."""
        data = validate(DeviceRequest, await _json_body(request))
        device = await blocking(
            lambda: self.enrollment.register_device(
                data.device_id,
                bootstrap_ca=data.bootstrap_ca,
                idevid=data.idevid,
                actor=f"api:{caller.token_id}",
            )
        )
        return JSONResponse({"device_id": device.device_id, "status": device.status}, 201)

    async def device_status(self, request: Request, caller: ApiTokenRecord) -> Response:
        """POST /devices/{device_id}/status: enable or disable a device."""
        data = validate(DeviceStatusRequest, await _json_body(request))
        device = await blocking(
            lambda: self.enrollment.set_device_status(
                request.path_params["device_id"],
                data.status,
                actor=f"api:{caller.token_id}",
            )
        )
        return JSONResponse({"device_id": device.device_id, "status": device.status})

    async def create_secret(self, request: Request, caller: ApiTokenRecord) -> Response:
        """POST /devices/{device_id}/enrollment-secrets: a one-time secret, shown once."""
        data = validate(SecretRequest, await _json_body(request))
        secret, record = await blocking(
            lambda: self.enrollment.create_secret(
                request.path_params["device_id"],
                lifetime=_lifetime(data.lifetime),
                profile=data.profile,
                approval=data.approval,
                actor=f"api:{caller.token_id}",
            )
        )
        body = {
            "device_id": record.device_id,
            "secret_id": record.secret_id,
            "secret": secret,
            "expires_at": record.expires_at.isoformat(),
        }
        return JSONResponse(body, 201)

    async def list_bootstrap_cas(self, request: Request, caller: ApiTokenRecord) -> Response:
        """GET /bootstrap-cas."""
        records = await blocking(self.enrollment.list_bootstrap_cas)
        return JSONResponse({"items": [_bootstrap_json(r) for r in records]})

    async def add_bootstrap_ca(self, request: Request, caller: ApiTokenRecord) -> Response:
        """POST /bootstrap-cas: trust a manufacturer CA's IDevIDs."""
        data = validate(BootstrapCARequest, await _json_body(request))
        certificate = load_certificate(data.certificate.encode())
        record = await blocking(
            lambda: self.enrollment.add_bootstrap_ca(
                data.name,
                certificate,
                enroll_policy=data.policy or "registered",
                profile=data.profile,
                approval=data.approval,
                actor=f"api:{caller.token_id}",
            )
        )
        return JSONResponse(_bootstrap_json(record), 201)

    async def revoke_bootstrap_ca(self, request: Request, caller: ApiTokenRecord) -> Response:
        """POST /bootstrap-cas/{name}/revoke."""
        record = await blocking(
            lambda: self.enrollment.revoke_bootstrap_ca(
                request.path_params["name"], actor=f"api:{caller.token_id}"
            )
        )
        return JSONResponse(_bootstrap_json(record))

    async def list_requests(self, request: Request, caller: ApiTokenRecord) -> Response:
        """GET /enrollment-requests?status=pending."""
        status = request.query_params.get("status", "pending")
        if status not in (*_STATUSES, "all"):
            raise RequestError(f"status must be one of {', '.join(_STATUSES)} or all")
        records = await blocking(
            self.enrollment.list_approvals, None if status == "all" else status
        )
        return JSONResponse({"items": [_approval_json(r) for r in records]})

    async def approve(self, request: Request, caller: ApiTokenRecord) -> Response:
        """POST /enrollment-requests/{id}/approve."""
        return await self._decide(request, caller, approve=True)

    async def reject(self, request: Request, caller: ApiTokenRecord) -> Response:
        """POST /enrollment-requests/{id}/reject."""
        return await self._decide(request, caller, approve=False)

    async def _decide(self, request: Request, caller: ApiTokenRecord, *, approve: bool) -> Response:
        record = await blocking(
            lambda: self.enrollment.decide(
                request.path_params["request_id"], approve=approve, actor=f"api:{caller.token_id}"
            )
        )
        return JSONResponse(_approval_json(record))


def enrollment_api_routes(enrollment: Enrollment) -> list[BaseRoute]:
    """The enrollment admin routes."""
    api = EnrollmentApi(enrollment)
    return bind(ENROLLMENT, AdminApi(enrollment.authority).endpoint, api)
