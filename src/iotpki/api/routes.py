"""The admin REST API under ``/api/v1``: bearer-token authentication, roles, JSON in and out.

Every call is authorised by role; state changes are audited by the authority with the caller
as actor, reads and refusals by this module.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from iotpki.api.jsonbody import load_object
from iotpki.api.models import IssueRequest, RenewRequest, RevokeRequest, TokenRequest
from iotpki.api.openapi import CORE, openapi_document
from iotpki.api.schema import bind, validate
from iotpki.core import access
from iotpki.core.authority import Authority
from iotpki.core.csr import load_csr
from iotpki.core.encoding import pem
from iotpki.core.models import (
    ApiTokenRecord,
    CARecord,
    CertificateQuery,
    CertificateRecord,
    CertStatus,
    RevocationReason,
)
from iotpki.core.policy import parse_duration
from iotpki.core.times import parse_time
from iotpki.errors import AuthError, ConfigError, IotpkiError, RequestError
from iotpki.protocols.access import client_address
from iotpki.protocols.http import blocking, read_body

__all__ = ["api_routes", "certificate_json"]

_BODY_LIMIT = 64 * 1024
_MAX_PAGE = 500

Handler = Callable[[Request, ApiTokenRecord], Awaitable[Response]]


def certificate_json(
    record: CertificateRecord, now: datetime, *, attested: bool = False
) -> dict[str, Any]:
    """A certificate record as the API shows it; ``attested``: its key was TPM-attested."""
    return {
        "serial": record.serial,
        "ca": record.ca_name,
        "profile": record.profile,
        "device_id": record.device_id,
        "subject": record.subject,
        "sans": list(record.sans),
        "not_before": record.not_before.isoformat(),
        "not_after": record.not_after.isoformat(),
        "status": "expired"
        if record.status is CertStatus.VALID and record.not_after < now
        else str(record.status),
        "revoked_at": record.revoked_at.isoformat() if record.revoked_at else None,
        "revocation_reason": str(record.revocation_reason) if record.revocation_reason else None,
        "key_algorithm": record.key_algorithm,
        "key_fingerprint": record.key_fingerprint,
        "lint_status": record.lint_status,
        "attested": attested,
    }


def _ca_json(record: CARecord, now: datetime) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": record.name,
        "kind": str(record.kind),
        "status": str(record.status),
        "parent": record.parent,
        "key_backend": record.key_backend,
        "has_key": record.key_ref is not None,
    }
    if record.certificate_der is not None:
        cert = record.certificate
        body |= {
            "subject": cert.subject.rfc4514_string(),
            "not_before": cert.not_valid_before_utc.isoformat(),
            "not_after": cert.not_valid_after_utc.isoformat(),
            "seconds_until_expiry": int((cert.not_valid_after_utc - now).total_seconds()),
            "certificate": pem([cert]).decode(),
        }
    return body


def _token_json(record: ApiTokenRecord) -> dict[str, Any]:
    return {
        "token_id": record.token_id,
        "description": record.description,
        "role": str(record.role),
        "created_at": record.created_at.isoformat(),
        "expires_at": record.expires_at.isoformat() if record.expires_at else None,
        "revoked": record.revoked,
    }


async def _json_body(request: Request, limit: int = _BODY_LIMIT) -> dict[str, Any]:
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise RequestError("expected Content-Type: application/json")
    return load_object(await read_body(request, limit))


def _lifetime(value: str | None) -> timedelta | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ConfigError as exc:
        raise RequestError(exc.message, field="lifetime") from exc


def _datetime_param(value: str | None, name: str) -> datetime | None:
    return None if value is None else parse_time(value, name)


def _int_param(value: str | None, name: str, default: int, maximum: int) -> int:
    if value is None:
        return default
    if not value.isdigit() or int(value) > maximum:
        raise RequestError(f"{name} must be an integer from 0 to {maximum}", field=name)
    return int(value)


class AdminApi:
    """Route handlers bound to one authority."""

    def __init__(self, authority: Authority) -> None:
        self.authority = authority

    def _now(self) -> datetime:
        return self.authority.clock.now()

    def _audit_read(self, caller: ApiTokenRecord, action: str, target: str) -> None:
        self.authority.record_event(f"api:{caller.token_id}", f"api.{action}", target, {})

    def endpoint(self, action: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """Wrap a handler with authentication, authorisation and the error form."""

        async def wrapped(request: Request) -> Response:
            actor = "api:anonymous"
            try:
                caller = await blocking(self._authenticate, request)
                actor = f"api:{caller.token_id}"
                access.authorize(caller.role, action)
                return await handler(request, caller)
            except IotpkiError as exc:
                await blocking(
                    self.authority.audit_refusal,
                    exc,
                    source=client_address(request),
                    actor=actor,
                    action="api.denied" if isinstance(exc, AuthError) else "api.refused",
                    target=request.url.path,
                    extra={"action": action},
                )
                return JSONResponse(exc.as_dict(), status_code=exc.status)

        return wrapped

    def _authenticate(self, request: Request) -> ApiTokenRecord:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise AuthError("missing bearer token")
        return access.authenticate(self.authority.store, self.authority.clock, token.strip())

    async def issue(self, request: Request, caller: ApiTokenRecord) -> Response:
        """POST /certificates: issue from a PEM CSR."""
        data = validate(IssueRequest, await _json_body(request))
        csr = load_csr(data.csr.encode())
        issued = await blocking(
            lambda: self.authority.issue(
                csr,
                profile=data.profile or "device",
                ca=data.ca,
                device_id=data.device_id,
                lifetime=_lifetime(data.lifetime),
                actor=f"api:{caller.token_id}",
            )
        )
        body = certificate_json(issued.record, self._now())
        body["certificate"] = pem([issued.certificate]).decode()
        body["chain"] = pem(issued.chain).decode()
        return JSONResponse(body, status_code=201)

    async def list_certificates(self, request: Request, caller: ApiTokenRecord) -> Response:
        """GET /certificates: search with filters, one page."""
        params = request.query_params
        status = params.get("status")
        if status is not None and status not in {s.value for s in CertStatus}:
            raise RequestError("status must be valid or revoked", field="status")
        query = CertificateQuery(
            status=CertStatus(status) if status else None,
            ca_name=params.get("ca"),
            profile=params.get("profile"),
            device_id=params.get("device_id"),
            subject_contains=params.get("q"),
            expiring_before=_datetime_param(params.get("expiring_before"), "expiring_before"),
            limit=_int_param(params.get("limit"), "limit", 100, _MAX_PAGE),
            offset=_int_param(params.get("offset"), "offset", 0, 10_000_000),
        )
        records = await blocking(self.authority.search, query)
        await blocking(self._audit_read, caller, "certificates.list", "")
        now = self._now()
        attested = await blocking(self.authority.attested, records)
        return JSONResponse(
            {
                "items": [
                    certificate_json(r, now, attested=(r.ca_name, r.serial) in attested)
                    for r in records
                ]
            }
        )

    async def show_certificate(self, request: Request, caller: ApiTokenRecord) -> Response:
        """GET /certificates/{serial}."""
        serial = request.path_params["serial"]
        record = await blocking(
            lambda: self.authority.get(serial, ca=request.query_params.get("ca"))
        )
        await blocking(self._audit_read, caller, "certificates.show", record.serial)
        attested = await blocking(self.authority.attested, [record])
        body = certificate_json(record, self._now(), attested=bool(attested))
        body["certificate"] = pem([record.certificate]).decode()
        return JSONResponse(body)

    async def revoke(self, request: Request, caller: ApiTokenRecord) -> Response:
        """POST /certificates/{serial}/revoke with an RFC 5280 reason name."""
        data = validate(RevokeRequest, await _json_body(request))
        record = await blocking(
            lambda: self.authority.revoke(
                request.path_params["serial"],
                reason=data.reason or RevocationReason.UNSPECIFIED,
                ca=data.ca,
                invalidity_date=_datetime_param(data.invalidity_date, "invalidity_date"),
                actor=f"api:{caller.token_id}",
            )
        )
        attested = await blocking(self.authority.attested, [record])
        return JSONResponse(certificate_json(record, self._now(), attested=bool(attested)))

    async def renew(self, request: Request, caller: ApiTokenRecord) -> Response:
        """POST /certificates/{serial}/renew, optionally with a new CSR (rekey)."""
        data = validate(RenewRequest, await _json_body(request))
        csr = load_csr(data.csr.encode()) if data.csr else None
        issued = await blocking(
            lambda: self.authority.renew(
                request.path_params["serial"],
                csr=csr,
                ca=data.ca,
                lifetime=_lifetime(data.lifetime),
                actor=f"api:{caller.token_id}",
            )
        )
        attested = await blocking(self.authority.attested, [issued.record])
        body = certificate_json(issued.record, self._now(), attested=bool(attested))
        body["certificate"] = pem([issued.certificate]).decode()
        body["chain"] = pem(issued.chain).decode()
        return JSONResponse(body, status_code=201)

    async def list_cas(self, request: Request, caller: ApiTokenRecord) -> Response:
        """GET /cas, with each CA's expiry."""
        cas = await blocking(self.authority.list_cas)
        await blocking(self._audit_read, caller, "cas.list", "")
        now = self._now()
        return JSONResponse({"items": [_ca_json(ca, now) for ca in cas]})

    async def show_ca(self, request: Request, caller: ApiTokenRecord) -> Response:
        """GET /cas/{name}."""
        ca = await blocking(self.authority.get_ca, request.path_params["name"])
        await blocking(self._audit_read, caller, "cas.show", ca.name)
        return JSONResponse(_ca_json(ca, self._now()))

    async def create_token(self, request: Request, caller: ApiTokenRecord) -> Response:
        """POST /tokens: a new API token for a role (admin only)."""
        data = validate(TokenRequest, await _json_body(request))
        role = data.role
        token, record = await blocking(
            lambda: access.create_token(
                self.authority.store,
                self.authority.clock,
                role=role,
                description=data.description or "",
                actor=f"api:{caller.token_id}",
            )
        )
        return JSONResponse(
            {"token": token, "token_id": record.token_id, "role": str(role)}, status_code=201
        )

    async def list_tokens(self, request: Request, caller: ApiTokenRecord) -> Response:
        """GET /tokens: every token, revoked ones included (admin only); never a secret."""
        records = await blocking(access.list_tokens, self.authority.store)
        await blocking(self._audit_read, caller, "tokens.list", "")
        return JSONResponse({"items": [_token_json(r) for r in records]})

    async def revoke_token(self, request: Request, caller: ApiTokenRecord) -> Response:
        """DELETE /tokens/{token_id}: revoke at once, with its dashboard sessions (admin only)."""
        record = await blocking(
            lambda: access.revoke_token(
                self.authority.store,
                self.authority.clock,
                request.path_params["token_id"],
                actor=f"api:{caller.token_id}",
            )
        )
        return JSONResponse(_token_json(record))

    async def verify_audit(self, request: Request, caller: ApiTokenRecord) -> Response:
        """GET /audit/verify: walk the hash chain."""
        from iotpki.core.audit import verify_chain

        store = self.authority.store
        report = await blocking(lambda: verify_chain(store.audit_events(), store.audit_head()))
        await blocking(self._audit_read, caller, "audit.verify", "")
        return JSONResponse(
            {
                "ok": report.ok,
                "events": report.events,
                "first_bad_seq": report.first_bad_seq,
                "problem": report.problem,
            }
        )


async def _openapi(_: Request) -> Response:
    return JSONResponse(openapi_document())


def api_routes(authority: Authority) -> list[BaseRoute]:
    """The admin API's routes, to mount at the HTTPS listener's root."""
    api = AdminApi(authority)
    return [Route("/api/openapi.json", _openapi, methods=["GET"]), *bind(CORE, api.endpoint, api)]
