"""The compliance report: inventory, key mix, lifetimes, lint and anomaly findings, audit chain.

``build_report`` gathers the figures as JSON-ready data; ``render_html`` turns them into one
self-contained HTML page (inline CSS and SVG charts, nothing fetched).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from iotpki import __version__
from iotpki.monitoring.charts import bar_chart, hbar_chart
from iotpki.monitoring.service import Monitor

__all__ = ["build_report", "render_html"]

_LIFETIME_BUCKETS = (
    (1, "≤1 d"),
    (7, "≤7 d"),
    (30, "≤30 d"),
    (90, "≤90 d"),
    (397, "≤397 d"),
    (825, "≤825 d"),
    (3650, "≤10 y"),
    (float("inf"), ">10 y"),
)


def _lifetime_histogram(days: list[float]) -> list[tuple[str, int]]:
    counts = {label: 0 for _, label in _LIFETIME_BUCKETS}
    for value in days:
        for limit, label in _LIFETIME_BUCKETS:
            if value <= limit:
                counts[label] += 1
                break
    return list(counts.items())


def build_report(monitor: Monitor) -> dict[str, Any]:
    """Every figure of the report, as JSON-ready data."""
    store = monitor.store
    now = monitor.authority.clock.now()
    overview = monitor.overview()
    chain = monitor.chain_status()
    findings = store.list_findings(status="open", limit=1000)
    cas = []
    for ca in monitor.authority.list_cas():
        entry: dict[str, Any] = {"name": ca.name, "kind": str(ca.kind), "status": str(ca.status)}
        if ca.certificate_der is not None:
            cert = ca.certificate
            entry["subject"] = cert.subject.rfc4514_string()
            entry["not_after"] = cert.not_valid_after_utc.isoformat()
            entry["days_left"] = (cert.not_valid_after_utc - now).days
        cas.append(entry)
    return {
        "generated_at": now.isoformat(),
        "version": __version__,
        "inventory": {
            "by_status": overview["status"],
            "by_profile": overview["profile"],
            "expiring": {f"{d}d": n for d, n in overview["expiring"].items()},
        },
        "key_algorithms": overview["algorithm"],
        "lifetimes_days": dict(_lifetime_histogram(monitor.inventory.lifetimes())),
        "cas": cas,
        "lint": {
            "by_status": monitor.inventory.lint_status_counts(),
            "findings": [
                {"severity": sev, "code": code, "count": n}
                for sev, code, n in monitor.inventory.lint_summary()
            ],
        },
        "findings": {
            "open_by_check": {
                f"{check}/{severity}": n
                for (check, severity), n in sorted(store.open_findings_by_check().items())
            },
            "open": [
                {
                    "check": f.check,
                    "severity": f.severity,
                    "summary": f.summary,
                    "serial": f.serial,
                    "device_id": f.device_id,
                    "first_seen": f.first_seen.isoformat(),
                    "last_seen": f.last_seen.isoformat(),
                }
                for f in findings
            ],
        },
        "audit_chain": {
            "ok": chain.ok,
            "events": chain.events,
            "first_bad_seq": chain.first_bad_seq,
            "problem": chain.problem,
        },
    }


def _environment() -> Environment:
    return Environment(
        loader=PackageLoader("iotpki.monitoring", "templates"),
        autoescape=select_autoescape(["html"]),
    )


def render_html(report: dict[str, Any]) -> str:
    """The report as one self-contained HTML page."""
    inventory = report["inventory"]
    charts = {
        "status": hbar_chart(list(inventory["by_status"].items()), title="Certificates by status"),
        "profile": hbar_chart(
            sorted(inventory["by_profile"].items(), key=lambda kv: -kv[1]),
            title="Certificates by profile",
        ),
        "algorithm": hbar_chart(
            sorted(report["key_algorithms"].items(), key=lambda kv: -kv[1]),
            title="Key algorithms and sizes",
        ),
        "lifetime": bar_chart(
            list(report["lifetimes_days"].items()), title="Lifetime distribution", width=520
        ),
    }
    template = _environment().get_template("report.html")
    return template.render(
        report=report,
        charts={k: Markup(v) for k, v in charts.items()},  # SVG built here, labels escaped
        generated=datetime.fromisoformat(report["generated_at"]),
    )
