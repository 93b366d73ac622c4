"""Admin API for operations: usage ingest from brokers and gateways, findings, the report.

Mounted beside :mod:`iotpki.api.routes` under ``/api/v1`` with the same bearer tokens and error
form. Ingest needs the ``reporter`` role (``usage:ingest``); a batch carries a one-time nonce
and its send time, so a replayed or stale batch is refused whole, as is one naming certificates
this installation never issued.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from iotpki.api.openapi import OPERATIONS
from iotpki.api.routes import AdminApi, _int_param, _json_body
from iotpki.api.schema import bind
from iotpki.core.models import ApiTokenRecord
from iotpki.core.monitoring import FindingRecord
from iotpki.errors import RequestError
from iotpki.monitoring.report import build_report
from iotpki.monitoring.service import Monitor
from iotpki.protocols.http import blocking

__all__ = ["monitoring_api_routes"]

_CHECK_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz_")
_EVENT_BYTES = 768  # the most one event's JSON takes: serial 64, client ID 256, source 128 ...


def _finding_json(f: FindingRecord) -> dict[str, object]:
    return {
        "id": f.id,
        "check": f.check,
        "severity": f.severity,
        "status": f.status,
        "summary": f.summary,
        "ca": f.ca_name,
        "serial": f.serial,
        "device_id": f.device_id,
        "evidence": f.evidence,
        "first_seen": f.first_seen.isoformat(),
        "last_seen": f.last_seen.isoformat(),
        "resolved_at": f.resolved_at.isoformat() if f.resolved_at else None,
    }


class MonitoringApi:
    """Handlers bound to one monitor."""

    def __init__(self, api: AdminApi, monitor: Monitor) -> None:
        self.api = api
        self.monitor = monitor

    async def ingest(self, request: Request, caller: ApiTokenRecord) -> Response:
        """POST /usage/events: a batch of connection reports."""
        limit = _EVENT_BYTES * self.monitor.settings.ingest_max_events + 1024
        body = await _json_body(request, limit)
        count = await blocking(self.monitor.ingest, f"reporter:{caller.token_id}", body)
        return JSONResponse({"accepted": count}, status_code=202)

    async def findings(self, request: Request, caller: ApiTokenRecord) -> Response:
        """GET /findings: findings by status and check."""
        params = request.query_params
        status = params.get("status", "open")
        if status not in ("open", "resolved"):
            raise RequestError("status must be open or resolved", field="status")
        check = params.get("check")
        if check is not None and (len(check) > 64 or not set(check) <= _CHECK_CHARS):
            raise RequestError("check must be a check name", field="check")
        limit = _int_param(params.get("limit"), "limit", 100, 500)
        offset = _int_param(params.get("offset"), "offset", 0, 10_000_000)
        rows = await blocking(
            lambda: self.monitor.findings(
                status=status, check=check, limit=max(limit, 1), offset=offset
            )
        )
        await blocking(self.api._audit_read, caller, "findings.list", "")
        return JSONResponse({"items": [_finding_json(f) for f in rows]})

    async def report(self, request: Request, caller: ApiTokenRecord) -> Response:
        """GET /report: the compliance report as JSON."""
        data = await blocking(build_report, self.monitor)
        await blocking(self.api._audit_read, caller, "report.read", "")
        return JSONResponse(data)


def monitoring_api_routes(api: AdminApi, monitor: Monitor) -> list[BaseRoute]:
    """The operations routes of the admin API."""
    return bind(OPERATIONS, api.endpoint, MonitoringApi(api, monitor))
