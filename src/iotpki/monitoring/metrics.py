"""Prometheus metrics fed by the authority's events and by request timing."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from iotpki.core.campaigns import Progress
from iotpki.core.models import CARecord

__all__ = ["CONTENT_TYPE_LATEST", "UNMATCHED", "Metrics", "route_label"]

UNMATCHED = "unmatched"
"""The one ``route`` label of every request that matched no route."""


def _protocol(actor: str) -> str:
    """The protocol label of an actor such as ``api:3f2a`` or ``est:dev-1``."""
    return actor.split(":", 1)[0]


def route_label(scope: Mapping[str, Any]) -> str:
    """The template of the route a request matched (``/crl/{name}``), else ``unmatched``.

    Labels come from the application's own routes, never from the request's path, so that no
    client can create new series.
    """
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else UNMATCHED


class Metrics:
    """One process's metrics, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.issued = Counter(
            "iotpki_certificates_issued_total",
            "Certificates issued (including renewals)",
            ["protocol", "profile", "ca"],
            registry=self.registry,
        )
        self.refused = Counter(
            "iotpki_requests_refused_total",
            "Requests refused by policy, authentication or validation",
            ["protocol", "action", "code"],
            registry=self.registry,
        )
        self.revoked = Counter(
            "iotpki_certificates_revoked_total",
            "Certificates revoked",
            ["protocol", "profile", "ca", "reason"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "iotpki_request_seconds",
            "HTTP request latency",
            ["listener", "route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.ca_expiry = Gauge(
            "iotpki_ca_seconds_until_expiry",
            "Seconds until each CA certificate expires",
            ["ca"],
            registry=self.registry,
        )
        self.expiring = Gauge(
            "iotpki_certificates_expiring",
            "Valid certificates expiring within the window (as of the last monitoring scan)",
            ["within"],
            registry=self.registry,
        )
        self.findings = Gauge(
            "iotpki_findings_open",
            "Open monitoring findings by check and severity",
            ["check", "severity"],
            registry=self.registry,
        )

        self.campaign_members = Gauge(
            "iotpki_campaign_members",
            "Certificates of each running rotation campaign by state",
            ["campaign", "state"],
            registry=self.registry,
        )
        self.campaign_due = Gauge(
            "iotpki_campaign_due",
            "Members of each running campaign whose window has ended (replaced by now if on time)",
            ["campaign"],
            registry=self.registry,
        )

    def on_event(self, action: str, actor: str, data: dict[str, object]) -> None:
        """Count an authority event (the authority's ``EventListener``)."""
        protocol = _protocol(actor)
        if action in ("certificate.issued", "certificate.renewed"):
            self.issued.labels(protocol, str(data.get("profile")), str(data.get("ca"))).inc()
        elif action == "certificate.revoked":
            self.revoked.labels(
                protocol, str(data.get("profile")), str(data.get("ca")), str(data.get("reason"))
            ).inc()
        elif action.endswith(".refused"):
            self.refused.labels(
                protocol, action.removesuffix(".refused"), str(data.get("code"))
            ).inc()

    def update_cas(self, cas: list[CARecord], now: datetime) -> None:
        """Refresh the CA expiry gauges."""
        for ca in cas:
            if ca.certificate_der is not None:
                remaining = ca.certificate.not_valid_after_utc - now
                self.ca_expiry.labels(ca.name).set(remaining.total_seconds())

    def set_campaigns(self, running: list[Progress]) -> None:
        """Replace the campaign gauges with the running campaigns' progress."""
        self.campaign_members.clear()
        self.campaign_due.clear()
        for progress in running:
            name = progress.campaign.name
            for state, count in progress.counts.items():
                self.campaign_members.labels(name, str(state)).set(count)
            self.campaign_due.labels(name).set(progress.expected)

    def set_findings(self, open_by_check: dict[tuple[str, str], int]) -> None:
        """Replace the open-findings gauges (checks no longer open drop to zero)."""
        self.findings.clear()
        for (check, severity), count in open_by_check.items():
            self.findings.labels(check, severity).set(count)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
