"""The monitor of one installation: scans, usage evidence, ingest, alerts and metrics.

Periodic work runs on a ``JobRunner``; the scan and the webhook sender are exclusive jobs, so
with several server processes on one PostgreSQL only the holder of the advisory lock runs them.
"""

from __future__ import annotations

import itertools
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509

from iotpki.core.audit import ChainReport, verify_chain
from iotpki.core.authority import serial_hex
from iotpki.core.campaigns import Campaigns, Progress
from iotpki.core.keyquality import KeyBlocklist
from iotpki.core.models import AuditEvent, CampaignStatus, LintFinding
from iotpki.core.monitoring import (
    Delivery,
    FindingChange,
    FindingRecord,
    InventoryFilter,
    InventoryRow,
    UsageEvent,
)
from iotpki.core.policy import operational_profiles
from iotpki.core.times import parse_time
from iotpki.errors import ConfigError, Conflict, RequestError
from iotpki.files import generated_secret
from iotpki.monitoring import checks
from iotpki.monitoring.alerts import Alerter, validate_webhook_url
from iotpki.monitoring.keyquality import key_observations, scan_keys
from iotpki.monitoring.metrics import Metrics
from iotpki.net.egress import EgressPolicy
from iotpki.services.installation import Installation
from iotpki.services.jobs import Job, JobRunner
from iotpki.store.inventory import SqlInventoryStore
from iotpki.store.monitoring import SqlMonitoringStore

__all__ = ["Monitor", "ScanResult"]

_SERIAL = re.compile(r"^[0-9a-f]{1,64}$")
_NONCE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_KINDS = frozenset({"connect", "disconnect", "publish", "tls"})
_FLUSH_AT = 1000
_STATS_SECONDS = 30.0
_ERRORS = ("ERROR", "FATAL")  # lint severities the overview counts as findings


@dataclass(frozen=True, slots=True)
class ScanResult:
    """What one scan did."""

    changes: int
    alerted: int
    keys_checked: int
    seconds: float


class Monitor:
    """Monitoring of one installation, shared by the server, the CLI and the dashboard."""

    def __init__(self, inst: Installation, metrics: Metrics | None = None) -> None:
        self.installation = inst
        self.authority = inst.authority
        self.campaigns = Campaigns(inst.authority)  # their deadlines are a monitoring job
        self.settings = inst.settings.monitoring
        self.store = SqlMonitoringStore(inst.store)
        self.inventory = SqlInventoryStore(inst.store)
        self.metrics = metrics
        self.blocklist = (
            KeyBlocklist.from_files(inst.settings.key_blocklists)
            if inst.settings.key_blocklists
            else None
        )
        self.alerter = Alerter(
            self.store,
            self.authority.clock,
            targets=self._webhook_targets(),
            secret=generated_secret(
                self.settings.webhook_secret_file or inst.home / "secrets" / "webhook",
                lambda: secrets.token_urlsafe(32).encode() + b"\n",
            ).strip(),
            max_attempts=self.settings.webhook_max_attempts,
            egress=EgressPolicy.from_text(inst.settings.egress_allow),
        )
        self._buffer: list[UsageEvent] = []
        self._buffer_lock = threading.Lock()
        self._stats: tuple[float, dict[str, Any]] | None = None
        self._chain: tuple[float, ChainReport] | None = None

    def _webhook_targets(self) -> list[str]:
        """The configured webhooks; a bad one is audited and stops the monitor from starting."""
        for target in self.settings.webhooks:
            try:
                validate_webhook_url(target)
            except ConfigError as exc:
                self.authority.record_event(
                    "monitor", "monitor.webhook.refused", target[:256], {"reason": exc.message}
                )
                raise
        return list(self.settings.webhooks)

    # -- scans ----------------------------------------------------------------------------------

    def expiry_scan(self) -> list[FindingChange]:
        """Expiry and age of device and CA certificates."""
        now = self.authority.clock.now()
        cas = self.authority.list_cas()
        observed = checks.expiry_observations(self.store, cas, now, self.settings)
        observed += checks.age_observations(self.store, cas, now, self.settings)
        return self.store.sync_findings(checks.EXPIRY_CHECKS + checks.AGE_CHECKS, observed, now)

    def anomaly_scan(self) -> list[FindingChange]:
        """Misuse in the usage evidence, renewal storms and enrollment failure spikes."""
        self.flush_usage()
        now = self.authority.clock.now()
        observed = checks.usage_observations(self.store, now, self.settings)
        observed += checks.rate_observations(self.store, now, self.settings)
        observed += checks.campaign_observations(self.running_campaigns(), now)
        watched = checks.USAGE_CHECKS + checks.RATE_CHECKS + checks.CAMPAIGN_CHECKS
        return self.store.sync_findings(watched, observed, now)

    def running_campaigns(self) -> list[Progress]:
        """The progress of every active or paused rotation campaign."""
        running = (CampaignStatus.ACTIVE, CampaignStatus.PAUSED)
        return [
            self.campaigns.progress(c.campaign_id)
            for c in self.campaigns.all()
            if c.status in running
        ]

    def key_scan(self) -> tuple[int, list[FindingChange]]:
        """Key quality of every key not checked yet, then weak and shared key findings."""
        now = self.authority.clock.now()
        checked = scan_keys(self.store, now, self.blocklist)
        changes = self.store.sync_findings(checks.KEY_CHECKS, key_observations(self.store), now)
        return checked, changes

    def scan(self) -> ScanResult:
        """Every check, then alerts for what changed, then the metrics."""
        start = time.perf_counter()
        changes = self.expiry_scan() + self.anomaly_scan()
        checked, key_changes = self.key_scan()
        changes += key_changes
        alerted = self.alerter.notify(changes)
        self.refresh_metrics()
        now = self.authority.clock.now()
        self.store.purge(
            now - timedelta(days=self.settings.usage_retention_days),
            now - timedelta(seconds=2 * self.settings.ingest_max_skew_seconds),
        )
        if alerted:
            self.authority.record_event(
                "monitor", "monitor.alerted", "findings", {"alerts": alerted}
            )
        return ScanResult(len(changes), alerted, checked, time.perf_counter() - start)

    def refresh_metrics(self) -> None:
        """Expiring-within and open-findings gauges."""
        if self.metrics is None:
            return
        now = self.authority.clock.now()
        for days in (7, 30):
            count = self.inventory.count_expiring(now, now + timedelta(days=days))
            self.metrics.expiring.labels(f"{days}d").set(count)
        self.metrics.set_findings(self.store.open_findings_by_check())
        self.metrics.set_campaigns(self.running_campaigns())

    def jobs(self) -> JobRunner:
        """The monitor's background jobs (not started)."""
        return JobRunner(
            [
                Job("monitoring.scan", self.settings.scan_interval, self.scan, exclusive=True),
                Job("monitoring.deliver", 15.0, self.alerter.deliver_due, exclusive=True),
                Job("monitoring.usage", 5.0, self.flush_usage),
                Job("audit.refusals", 30.0, self.authority.flush_refusals, exclusive=True),
                Job("campaign.deadlines", 60.0, self.campaigns.finish_due, exclusive=True),
            ],
            self.store.exclusive,
        )

    # -- usage evidence -------------------------------------------------------------------------

    def on_event(self, action: str, actor: str, data: dict[str, object]) -> None:
        """Authority listener: a re-enrollment is evidence that the old certificate is in use."""
        renewed_from = data.get("renewed_from")
        if action == "certificate.renewed" and isinstance(renewed_from, str):
            protocol = actor.split(":", 1)[0]
            self.observe(
                UsageEvent(
                    time=self.authority.clock.now(),
                    kind="enroll",
                    serial=renewed_from,
                    reporter=f"server:{protocol}",
                    ca_name=str(data.get("ca")) if data.get("ca") else None,
                )
            )

    def observe_tls(self, chain_pem: str, source: str | None) -> None:
        """A TLS session on the HTTPS listener presented this client certificate."""
        try:
            cert = x509.load_pem_x509_certificate(chain_pem.encode())
        except ValueError:
            return
        self.observe(
            UsageEvent(
                time=self.authority.clock.now(),
                kind="tls",
                serial=serial_hex(cert.serial_number),
                reporter="server:https",
                source=source,
            )
        )

    def observe(self, event: UsageEvent) -> None:
        """Buffer one usage event (written in batches)."""
        with self._buffer_lock:
            self._buffer.append(event)
            full = len(self._buffer) >= _FLUSH_AT
        if full:
            self.flush_usage()

    def flush_usage(self) -> int:
        """Write buffered usage events."""
        with self._buffer_lock:
            batch, self._buffer = self._buffer, []
        self.store.add_usage(batch)
        return len(batch)

    def ingest(self, reporter: str, body: dict[str, Any]) -> int:
        """Store a broker's or gateway's batch of connection reports; returns how many.

        Replays (a nonce seen before, or ``sent_at`` outside the allowed skew) and forgeries
        (serials this installation never issued, times in the future) are refused whole.
        """
        now = self.authority.clock.now()
        skew = timedelta(seconds=self.settings.ingest_max_skew_seconds)
        nonce = body.get("nonce")
        if not isinstance(nonce, str) or not _NONCE.match(nonce):
            raise RequestError("nonce must be 16 to 64 characters of [A-Za-z0-9_-]", field="nonce")
        sent_at = _time(body.get("sent_at"), "sent_at")
        if abs(sent_at - now) > skew:
            raise RequestError(
                "sent_at is outside the allowed clock skew (replay?)", field="sent_at"
            )
        raw = body.get("events")
        if not isinstance(raw, list) or not raw:
            raise RequestError("events must be a non-empty list", field="events")
        if len(raw) > self.settings.ingest_max_events:
            raise RequestError(
                f"at most {self.settings.ingest_max_events} events per batch", field="events"
            )
        events = [self._event(item, reporter, now, skew) for item in raw]
        unknown = {e.serial for e in events} - self.store.known_serials(e.serial for e in events)
        if unknown:
            raise RequestError(
                "events name certificates this installation did not issue",
                field="events",
                serials=sorted(unknown)[:10],
            )
        if not self.store.ingest(nonce, reporter, events, now):
            raise Conflict("this batch was delivered before (replayed nonce)", nonce=nonce)
        return len(events)

    def _event(self, item: object, reporter: str, now: datetime, skew: timedelta) -> UsageEvent:
        if not isinstance(item, dict):
            raise RequestError("each event must be an object", field="events")
        serial = item.get("serial")
        if not isinstance(serial, str) or not _SERIAL.match(serial.lower()):
            raise RequestError("event serial must be lower-case hex", field="serial")
        serial = serial.lower().lstrip("0") or "0"
        when = _time(item.get("time"), "time")
        if when > now + skew:
            raise RequestError("event time is in the future", field="time")
        if when < now - timedelta(days=self.settings.usage_retention_days):
            raise RequestError("event time is older than the retention", field="time")
        kind = item.get("kind", "connect")
        if kind not in _KINDS:
            raise RequestError(f"event kind must be one of {sorted(_KINDS)}", field="kind")
        client_id = _optional_text(item, "client_id", 256)
        source = _optional_text(item, "source", 128)
        return UsageEvent(when, str(kind), serial, reporter, None, client_id, source)

    # -- dashboard reads ------------------------------------------------------------------------

    def overview(self) -> dict[str, Any]:
        """Counts for the overview page, cached for half a minute (they scan the table)."""
        cached = self._stats
        if cached is not None and time.monotonic() - cached[0] < _STATS_SECONDS:
            return cached[1]
        now = self.authority.clock.now()
        stats: dict[str, Any] = self.inventory.counts(now)
        # The fleet's expiry figures leave out the PKI's own certificates, which the server
        # renews itself (OCSP responders live a week); they are counted apart.
        own = operational_profiles(self.installation.settings.resolved_profiles())
        stats["expiring"] = {
            days: self.inventory.count_expiring(
                now, now + timedelta(days=days), excluded_profiles=own
            )
            for days in (7, 30, 90)
        }
        weeks = [now + timedelta(weeks=i) for i in range(27)]
        stats["timeline"] = [
            (start, self.inventory.count_expiring(start, end, excluded_profiles=own))
            for start, end in itertools.pairwise(weeks)
        ]
        stats["operational"] = self.inventory.profile_expiry(own, now)
        stats["lint_errors"] = [
            (code, n) for severity, code, n in self.inventory.lint_summary() if severity in _ERRORS
        ]
        self._stats = (time.monotonic(), stats)
        return stats

    def inventory_page(
        self, flt: InventoryFilter, now: datetime, *, before_id: int | None, limit: int
    ) -> list[InventoryRow]:
        """One page of the certificate inventory, newest first, older than ``before_id``."""
        return self.inventory.search(flt, now, before_id=before_id, limit=limit)

    def device_history(self, device_id: str, now: datetime) -> list[InventoryRow]:
        """A device's certificates, newest first."""
        return self.inventory.certificates_of_device(device_id, now)

    def findings(
        self,
        *,
        status: str | None = "open",
        check: str | None = None,
        serial: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[FindingRecord]:
        """Findings, newest first, optionally of one status, check or certificate."""
        return self.store.list_findings(
            status=status, check=check, serial=serial, limit=limit, offset=offset
        )

    def open_findings_by_check(self) -> dict[tuple[str, str], int]:
        """How many findings are open, per (check, severity)."""
        return self.store.open_findings_by_check()

    def usage_of(self, serial: str) -> list[UsageEvent]:
        """The newest usage events of one certificate."""
        return self.store.usage_of(serial)

    def deliveries(self, limit: int) -> list[Delivery]:
        """The newest alert deliveries."""
        return self.store.list_deliveries(limit)

    def audit_page(self, before_seq: int | None, limit: int) -> list[AuditEvent]:
        """One page of the audit log, newest first, before ``before_seq``."""
        return self.store.audit_page(before_seq, limit)

    def lint_findings(self, ca_name: str, serial: str) -> list[LintFinding]:
        """The lint findings kept for one certificate."""
        return self.installation.store.lint_findings(ca_name, serial)

    def chain_status(self) -> ChainReport:
        """The audit chain's verification, cached for a minute."""
        cached = self._chain
        if cached is not None and time.monotonic() - cached[0] < 60.0:
            return cached[1]
        store = self.installation.store
        report = verify_chain(store.audit_events(), store.audit_head())
        self._chain = (time.monotonic(), report)
        return report


def _time(value: object, name: str) -> datetime:
    return parse_time(value, name, max_length=40)


def _optional_text(item: dict[str, Any], name: str, limit: int) -> str | None:
    value = item.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > limit or not value.isprintable():
        raise RequestError(f"{name} must be printable text of at most {limit}", field=name)
    return value
