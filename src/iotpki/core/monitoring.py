"""Plain records of monitoring: observations, findings, usage events, deliveries, inventory."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = [
    "SEVERITIES",
    "Delivery",
    "FindingChange",
    "FindingRecord",
    "InventoryFilter",
    "InventoryRow",
    "Observation",
    "UsageEvent",
]

SEVERITIES = ("low", "medium", "high", "critical")


@dataclass(frozen=True, slots=True)
class Observation:
    """What one check saw about one subject in one run; becomes or refreshes a finding."""

    check: str
    key: str  # the subject the finding is about, unique within the check
    severity: str
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)
    ca_name: str | None = None
    serial: str | None = None
    device_id: str | None = None

    @property
    def state(self) -> str:
        """What an alert is about: an open finding alerts again only when its severity moves."""
        text = json.dumps([self.check, self.key, self.severity], separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class FindingRecord:
    """A finding as stored: open while its check still observes it, then resolved."""

    id: int
    check: str
    key: str
    severity: str
    status: str
    summary: str
    ca_name: str | None
    serial: str | None
    device_id: str | None
    evidence: dict[str, Any]
    state: str
    alerted_state: str | None
    first_seen: datetime
    last_seen: datetime
    resolved_at: datetime | None


@dataclass(frozen=True, slots=True)
class FindingChange:
    """A finding that opened, changed or resolved in a run: what alerts are sent for."""

    event: str  # "opened", "changed", "resolved"
    finding: FindingRecord


@dataclass(frozen=True, slots=True)
class UsageEvent:
    """Evidence that a certificate was used: by whom it was seen, from where, when."""

    time: datetime
    kind: str  # "tls", "ocsp", "enroll", "connect"
    serial: str
    reporter: str
    ca_name: str | None = None
    client_id: str | None = None
    source: str | None = None


@dataclass(frozen=True, slots=True)
class Delivery:
    """One alert to one webhook, with its attempts."""

    id: int
    finding_id: int
    target: str
    event: str
    payload: str
    status: str
    attempts: int
    http_status: int | None
    last_error: str | None
    created_at: datetime
    next_attempt_at: datetime
    delivered_at: datetime | None


@dataclass(frozen=True, slots=True)
class InventoryFilter:
    """Inventory search filters; each is optional and validated by the caller's adapter."""

    device: str | None = None  # device ID prefix
    subject: str | None = None  # substring of the subject or SANs
    serial: str | None = None  # serial prefix
    profile: str | None = None
    ca: str | None = None
    status: str | None = None  # "valid", "revoked", "expired"
    expires_after: datetime | None = None
    expires_before: datetime | None = None


@dataclass(frozen=True, slots=True)
class InventoryRow:
    """One line of the inventory: what a search page shows, without the DER."""

    id: int
    serial: str
    ca_name: str
    profile: str
    device_id: str | None
    subject: str
    not_before: datetime
    not_after: datetime
    status: str
    revocation_reason: str | None
    key_algorithm: str
    lint_status: str | None
