"""The dashboard: server-rendered pages at ``/`` and under ``/ui/`` on the HTTPS listener.

Sign-in takes an API token or a dashboard user's password and sets a cookie naming a
server-side session (throttled per account and source address, see ``core.signin``); each page
requires a permission of ``core.access``; a page view is an access-log line, a form submission
(``ui.<page>``) and a refusal (``ui.denied``, ``ui.refused``) are audited. Forms carry the
session's CSRF token. Responses carry a strict Content-Security-Policy: the pages load nothing
but themselves.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from iotpki.core import access
from iotpki.core.encoding import pem
from iotpki.core.models import RevocationReason
from iotpki.core.monitoring import InventoryFilter
from iotpki.core.signin import SignIn, Throttle
from iotpki.errors import AuthError, Forbidden, IotpkiError, RateLimited, RequestError
from iotpki.monitoring.charts import bar_chart, burndown_chart, hbar_chart
from iotpki.monitoring.report import build_report, render_html
from iotpki.monitoring.service import Monitor
from iotpki.protocols.access import client_address, log_access
from iotpki.protocols.http import blocking, read_body
from iotpki.web.extensions import describe_extension
from iotpki.web.session import COOKIE, Session

__all__ = ["web_routes"]

_HEADERS = {
    "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}
_FORM_LIMIT = 8 * 1024
_FIELD_LIMIT = 128
_PAGE_SIZES = (25, 50, 100, 200)
_STATUSES = ("", "valid", "expired", "revoked")

Page = Callable[[Request, Session], Awaitable[Response]]
PublicationStatus = Callable[[str, datetime], dict[str, object]]
"""A CA's CRL publication status (``CrlPublisher.status``)."""


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("iotpki.web", "templates"),
        autoescape=select_autoescape(["html"]),
    )
    env.filters["dt"] = lambda v: v.strftime("%Y-%m-%d %H:%M") if v else ""
    return env


def _date(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise RequestError(f"{name} must be a date (YYYY-MM-DD)", field=name) from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _text(params: Any, name: str) -> str | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if len(value) > _FIELD_LIMIT or not value.isprintable():
        raise RequestError(f"{name} must be printable text of at most {_FIELD_LIMIT}", field=name)
    return str(value)


class Dashboard:
    """Page handlers bound to one monitor."""

    def __init__(
        self,
        monitor: Monitor,
        publication: PublicationStatus | None = None,
        throttle: Throttle | None = None,
    ) -> None:
        self.monitor = monitor
        self.publication = publication
        self.authority = monitor.authority
        self.lifetime = timedelta(hours=monitor.settings.session_hours)
        self.signin = SignIn(
            self.authority.store, self.authority.clock, lifetime=self.lifetime, throttle=throttle
        )
        self.env = _environment()

    # -- plumbing -------------------------------------------------------------------------------

    def _render(
        self, name: str, session: Session | None, code: int = 200, **context: Any
    ) -> Response:
        html = self.env.get_template(name).render(session=session, **context)
        return HTMLResponse(html, status_code=code, headers=_HEADERS)

    async def _session(self, request: Request) -> Session | None:
        value = request.cookies.get(COOKIE)
        return await blocking(self.signin.resume, value) if value else None

    async def _audit(self, actor: str, action: str, target: str, data: dict[str, object]) -> None:
        await blocking(self.authority.record_event, actor, action, target[:256], data)

    async def _refused(
        self,
        request: Request,
        exc: IotpkiError,
        action: str,
        target: str = "",
        extra: dict[str, object] | None = None,
    ) -> None:
        """Audit the refusal of an anonymous request, folded per source."""
        await blocking(
            self.authority.audit_refusal,
            exc,
            source=client_address(request),
            actor="ui:anonymous",
            action=action,
            target=target,
            extra=extra,
        )

    def page(self, permission: str | None, name: str, handler: Page) -> Callable[[Request], Any]:
        """Wrap a page with sign-in, the role check, CSRF on POST, auditing and errors."""

        async def wrapped(request: Request) -> Response:
            session = await self._session(request)
            if session is None:
                if request.method == "GET":
                    target = request.url.path
                    return RedirectResponse(
                        "/ui/login?" + urlencode({"next": target}), 303, headers=_HEADERS
                    )
                denied = AuthError("sign in first")
                await self._refused(request, denied, "ui.denied", request.url.path, {"page": name})
                return self._render("error.html", None, 401, message="Sign in first.")
            actor = f"ui:{session.subject}"
            try:
                if permission is not None:
                    access.authorize(session.role, permission)
                if request.method == "POST":
                    form = await self._form(request)
                    if not _same(form.get("csrf", ""), session.csrf):
                        raise Forbidden("the form's CSRF token does not match the session")
                    request.state.form = form
                response = await handler(request, session)
            except IotpkiError as exc:
                action = "ui.denied" if isinstance(exc, AuthError) else "ui.refused"
                await self._audit(
                    actor, action, request.url.path, {"reason": exc.message, "page": name}
                )
                return self._render("error.html", session, exc.status, message=exc.message)
            if request.method == "GET":
                log_access(request, f"ui.{name}", actor)
            else:
                await self._audit(actor, f"ui.{name}", request.url.path, {})
            return response

        return wrapped

    async def _form(self, request: Request) -> dict[str, str]:
        ctype = request.headers.get("content-type", "").split(";")[0].strip()
        if ctype != "application/x-www-form-urlencoded":
            raise RequestError("expected a form submission")
        body = await read_body(request, _FORM_LIMIT)
        try:
            pairs = parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=20)
        except (UnicodeDecodeError, ValueError) as exc:
            raise RequestError("malformed form") from exc
        return dict(pairs)

    # -- sign-in --------------------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        """GET /ui/login."""
        return self._render("login.html", None, next=_safe_next(request.query_params.get("next")))

    async def login(self, request: Request) -> Response:
        """POST /ui/login: an API token, or a user name and password."""
        try:
            form = await self._form(request)
        except IotpkiError as exc:
            await self._refused(request, exc, "ui.login.refused")
            return self._render("login.html", None, 400, error=exc.message, next="/")
        target = _safe_next(form.get("next"))
        source = client_address(request)
        try:
            session_id, _ = await blocking(self._credentials, form, source)
        except RateLimited as exc:
            message = "Too many failed sign-ins; try again later."
            response = self._render("login.html", None, 429, error=message, next=target)
            response.headers["retry-after"] = str(exc.data.get("retry_after", 1))
            return response
        except IotpkiError as exc:
            if not isinstance(exc, AuthError):  # wrong credentials are audited by the throttle
                await self._refused(request, exc, "ui.login.refused")
            return self._render("login.html", None, 401, error="Sign-in failed.", next=target)
        response = RedirectResponse(target, 303, headers=_HEADERS)
        response.set_cookie(
            COOKIE,
            session_id,
            max_age=int(self.lifetime.total_seconds()),
            httponly=True,
            secure=True,
            samesite="strict",
            path="/",
        )
        return response

    def _credentials(self, form: dict[str, str], source: str) -> tuple[str, Session]:
        token = form.get("token", "").strip()
        if token:
            return self.signin.token(token, source)
        username, password = form.get("username", ""), form.get("password", "")
        if not username or not password or len(username) > 64 or len(password) > 1024:
            raise RequestError("give an API token, or a user name and password")
        return self.signin.password(username, password, source)

    async def logout(self, request: Request, session: Session) -> Response:
        """POST /ui/logout: the server-side session ends at once."""
        value = request.cookies.get(COOKIE, "")
        await blocking(self.signin.end, value, f"ui:{session.subject}")
        response = RedirectResponse("/ui/login", 303, headers=_HEADERS)
        response.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="strict")
        return response

    # -- pages ----------------------------------------------------------------------------------

    async def overview(self, request: Request, session: Session) -> Response:
        """GET /: counts, expiry timeline, CA health, revocation publication, findings."""
        stats = await blocking(self.monitor.overview)
        now = self.authority.clock.now()
        cas = await blocking(self.authority.list_cas)
        ca_rows = []
        for ca in cas:
            row: dict[str, Any] = {"name": ca.name, "kind": ca.kind, "status": ca.status}
            if ca.certificate_der is not None:
                not_after = ca.certificate.not_valid_after_utc
                row |= {"not_after": not_after, "days": (not_after - now).days}
            ca_rows.append(row)
        publication = await blocking(
            self._publication, [ca.name for ca in cas if ca.key_ref is not None]
        )
        findings = await blocking(self.monitor.open_findings_by_check)
        timeline = bar_chart(
            [(start.strftime("%m-%d"), n) for start, n in stats["timeline"]],
            title="Certificates expiring per week, next 26 weeks (the PKI's own not counted)",
            width=1200,
        )
        expiring = [
            (days, n, (now + timedelta(days=days)).date().isoformat())
            for days, n in stats["expiring"].items()
        ]
        return self._render(
            "overview.html",
            session,
            stats=stats,
            expiring=expiring,
            cas=ca_rows,
            publication=publication,
            findings=sorted(findings.items()),
            lint_errors=stats["lint_errors"],
            operational=stats["operational"],
            timeline=Markup(timeline),
            profiles=Markup(
                hbar_chart(
                    sorted(stats["profile"].items(), key=lambda kv: -kv[1]),
                    title="By profile",
                )
            ),
        )

    def _publication(self, cas: list[str]) -> list[dict[str, Any]]:
        """Each CA's latest full and delta CRL and what is waiting to be published."""
        if self.publication is None:
            return []
        now = self.authority.clock.now()
        rows = []
        for name in cas:
            status = self.publication(name, now)
            rows.append({"ca": name, **status})
        return rows

    async def inventory(self, request: Request, session: Session) -> Response:
        """GET /ui/certificates: filtered, keyset-paged inventory."""
        params = request.query_params
        status = params.get("status", "")
        if status not in _STATUSES:
            raise RequestError("status must be valid, expired or revoked", field="status")
        size_text = params.get("size", "50")
        if not size_text.isdigit() or int(size_text) not in _PAGE_SIZES:
            raise RequestError(f"size must be one of {_PAGE_SIZES}", field="size")
        before_text = params.get("before")
        if before_text is not None and (not before_text.isdigit() or len(before_text) > 18):
            raise RequestError("before must be a row number", field="before")
        flt = InventoryFilter(
            device=_text(params, "device"),
            subject=_text(params, "q"),
            serial=_text(params, "serial"),
            profile=_text(params, "profile"),
            ca=_text(params, "ca"),
            status=status or None,
            expires_after=_date(params.get("expires_after"), "expires_after"),
            expires_before=_date(params.get("expires_before"), "expires_before"),
        )
        size = int(size_text)
        now = self.authority.clock.now()
        rows = await blocking(
            lambda: self.monitor.inventory_page(
                flt, now, before_id=int(before_text) if before_text else None, limit=size + 1
            )
        )
        more = len(rows) > size
        rows = rows[:size]
        query = {k: v for k, v in params.items() if k != "before" and v}
        next_url = None
        if more:
            next_url = "/ui/certificates?" + urlencode({**query, "before": rows[-1].id})
        return self._render(
            "inventory.html",
            session,
            rows=rows,
            params=params,
            next_url=next_url,
            statuses=_STATUSES,
            sizes=_PAGE_SIZES,
        )

    async def certificate(self, request: Request, session: Session) -> Response:
        """GET /ui/certificates/{ca}/{serial}: detail, chain, lint, usage, device history."""
        ca, serial = request.path_params["ca"], request.path_params["serial"]
        record = await blocking(lambda: self.authority.get(serial, ca=ca))
        cert = record.certificate
        now = self.authority.clock.now()
        chain = await blocking(self.authority.chain, record.ca_name)
        lint = await blocking(self.monitor.lint_findings, record.ca_name, record.serial)
        history = (
            await blocking(self.monitor.device_history, record.device_id, now)
            if record.device_id
            else []
        )
        usage = await blocking(self.monitor.usage_of, record.serial)
        findings = await blocking(
            lambda: self.monitor.findings(status=None, serial=record.serial, limit=50)
        )
        extensions = [
            {
                "name": getattr(ext.oid, "_name", ext.oid.dotted_string),
                "critical": ext.critical,
                "value": describe_extension(ext.value),
            }
            for ext in cert.extensions
        ]
        status = str(record.status)
        if status == "valid" and record.not_after < now:
            status = "expired"
        return self._render(
            "certificate.html",
            session,
            record=record,
            status=status,
            extensions=extensions,
            chain=[c.subject.rfc4514_string() for c in chain],
            pem=pem([cert, *chain]).decode(),
            lint=lint,
            history=history,
            usage=usage,
            findings=findings,
            reasons=[r.value for r in RevocationReason],
            can_revoke="cert:revoke" in access.PERMISSIONS[session.role]
            or "*" in access.PERMISSIONS[session.role],
        )

    async def revoke(self, request: Request, session: Session) -> Response:
        """POST /ui/certificates/{ca}/{serial}/revoke with a reason."""
        form: dict[str, str] = request.state.form
        ca, serial = request.path_params["ca"], request.path_params["serial"]
        try:
            reason = RevocationReason(form.get("reason", ""))
        except ValueError as exc:
            raise RequestError("unknown revocation reason", field="reason") from exc
        record = await blocking(
            lambda: self.authority.revoke(
                serial, reason=reason, ca=ca, actor=f"ui:{session.subject}"
            )
        )
        return RedirectResponse(
            f"/ui/certificates/{record.ca_name}/{record.serial}", 303, headers=_HEADERS
        )

    async def audit(self, request: Request, session: Session) -> Response:
        """GET /ui/audit: the log, newest first, and the chain's verification status."""
        before_text = request.query_params.get("before")
        if before_text is not None and (not before_text.isdigit() or len(before_text) > 18):
            raise RequestError("before must be a sequence number", field="before")
        before = int(before_text) if before_text else None
        events = await blocking(self.monitor.audit_page, before, 100)
        chain = await blocking(self.monitor.chain_status)
        next_url = f"/ui/audit?before={events[-1].seq}" if len(events) == 100 else None
        return self._render("audit.html", session, events=events, chain=chain, next_url=next_url)

    async def findings(self, request: Request, session: Session) -> Response:
        """GET /ui/findings: open (or resolved) findings."""
        status = request.query_params.get("status", "open")
        if status not in ("open", "resolved"):
            raise RequestError("status must be open or resolved", field="status")
        rows = await blocking(lambda: self.monitor.findings(status=status, limit=500))
        deliveries = await blocking(self.monitor.deliveries, 20)
        return self._render(
            "findings.html", session, findings=rows, status=status, deliveries=deliveries
        )

    async def campaigns(self, request: Request, session: Session) -> Response:
        """GET /ui/campaigns: every rotation campaign and its progress."""
        rows = await blocking(
            lambda: [
                self.monitor.campaigns.progress(c.campaign_id) for c in self.monitor.campaigns.all()
            ]
        )
        return self._render("campaigns.html", session, rows=rows)

    async def campaign(self, request: Request, session: Session) -> Response:
        """GET /ui/campaigns/<id>: the burn-down against the deadline, rate, silent devices."""
        campaign_id = request.path_params["campaign_id"]
        if len(campaign_id) > 32 or not campaign_id.isalnum():
            raise RequestError("not a campaign ID", field="campaign_id")

        def load() -> dict[str, Any]:
            progress = self.monitor.campaigns.progress(campaign_id)
            remaining, planned = self.monitor.campaigns.burndown(campaign_id)
            chart = burndown_chart(
                [(f"{end:%d %H:%M}", count) for end, count in remaining],
                planned,
                title="remaining to replace (bars) and planned (line), to the deadline",
            )
            return {
                "p": progress,
                "chart": Markup(chart),
                "silent": self.monitor.campaigns.silent(campaign_id),
            }

        return self._render("campaign.html", session, **await blocking(load))

    async def report(self, request: Request, session: Session) -> Response:
        """GET /ui/report (HTML) and /ui/report.json."""
        data = await blocking(build_report, self.monitor)
        if request.url.path.endswith(".json"):
            return JSONResponse(data, headers=_HEADERS)
        return HTMLResponse(render_html(data), headers=_HEADERS)


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def _safe_next(value: str | None) -> str:
    """Only same-site paths are followed after sign-in (no open redirect)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value[:512]


def web_routes(monitor: Monitor, publication: PublicationStatus | None = None) -> list[BaseRoute]:
    """The dashboard's routes; none of them overlaps /api, /.well-known or /acme."""
    d = Dashboard(monitor, publication)
    p = d.page
    return [
        Route("/", p("cert:read", "overview", d.overview), methods=["GET"]),
        Route("/ui/login", d.login_form, methods=["GET"]),
        Route("/ui/login", d.login, methods=["POST"]),
        Route("/ui/logout", p(None, "logout", d.logout), methods=["POST"]),
        Route("/ui/certificates", p("cert:read", "inventory", d.inventory), methods=["GET"]),
        Route(
            "/ui/certificates/{ca}/{serial}",
            p("cert:read", "certificate", d.certificate),
            methods=["GET"],
        ),
        Route(
            "/ui/certificates/{ca}/{serial}/revoke",
            p("cert:revoke", "revoke", d.revoke),
            methods=["POST"],
        ),
        Route("/ui/audit", p("audit:read", "audit", d.audit), methods=["GET"]),
        Route("/ui/findings", p("finding:read", "findings", d.findings), methods=["GET"]),
        Route("/ui/campaigns", p("cert:read", "campaigns", d.campaigns), methods=["GET"]),
        Route(
            "/ui/campaigns/{campaign_id}",
            p("cert:read", "campaign", d.campaign),
            methods=["GET"],
        ),
        Route("/ui/report", p("report:read", "report", d.report), methods=["GET"]),
        Route("/ui/report.json", p("report:read", "report", d.report), methods=["GET"]),
    ]
