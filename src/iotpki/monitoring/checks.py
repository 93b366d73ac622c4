"""The checks: each turns the store's state into observations of one kind.

Modelled on AWS IoT Device Defender's certificate audit checks (expiring and expired device and
CA certificates, certificate age, shared device certificates, revoked certificates and CAs still
in use, conflicting client IDs, key quality) and going further: renewal storms and enrollment
failure spikes read from the audit log.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from iotpki.core.campaigns import Progress
from iotpki.core.models import CAKind, CARecord, CAStatus, MemberState
from iotpki.core.monitoring import Observation
from iotpki.settings import ExpiryThresholds, MonitoringSettings
from iotpki.store.monitoring import SqlMonitoringStore

__all__ = [
    "CAMPAIGN_CHECKS",
    "ENROLLMENT_FAILURE_ACTIONS",
    "EXPIRY_CHECKS",
    "KEY_CHECKS",
    "RATE_CHECKS",
    "USAGE_CHECKS",
    "age_observations",
    "campaign_observations",
    "expiry_observations",
    "rate_observations",
    "usage_observations",
]

EXPIRY_CHECKS = ("cert_expiring", "cert_expired", "ca_expiring", "ca_expired")
AGE_CHECKS = ("cert_age", "ca_age")
USAGE_CHECKS = ("cert_shared", "revoked_in_use", "ca_revoked_in_use", "client_id_conflict")
RATE_CHECKS = ("renewal_storm", "enrollment_failures")
KEY_CHECKS = ("weak_key", "shared_key")
CAMPAIGN_CHECKS = ("campaign_behind",)

# Audit actions that mean an enrollment attempt failed (EST, SCEP, ACME, the API).
ENROLLMENT_FAILURE_ACTIONS = (
    "est.%refused",
    "scep.rejected",
    "scep.%refused",
    "acme.%refused",
    "certificate.issue.refused",
)


def _severity(
    remaining: timedelta, thresholds: ExpiryThresholds, lifetime: timedelta | None = None
) -> str | None:
    """Severity of a certificate's remaining life, or None while it is healthy.

    For a short-lived certificate the day thresholds shrink to a quarter (warning) and a tenth
    (high) of its lifetime: a 30-day device certificate that its agent renews with a third of
    its life left is not "expiring" from the day it is issued, nor a 7-day OCSP responder
    certificate that the server renews itself.
    """
    warning = timedelta(days=thresholds.warning_days)
    critical = timedelta(days=thresholds.critical_days)
    if lifetime is not None:
        warning, critical = min(warning, lifetime / 4), min(critical, lifetime / 10)
    if remaining <= timedelta(0):
        return "critical"
    if remaining <= critical:
        return "high"
    if remaining <= warning:
        return "medium"
    return None


def expiry_observations(
    store: SqlMonitoringStore,
    cas: Sequence[CARecord],
    now: datetime,
    settings: MonitoringSettings,
) -> list[Observation]:
    """Device and CA certificates approaching or past expiry, by per-profile thresholds."""
    found: list[Observation] = []
    horizon_days = max(
        [settings.expiry.warning_days] + [t.warning_days for t in settings.expiry_profiles.values()]
    )
    rows = store.expiring(
        now,
        now + timedelta(days=horizon_days),
        now - timedelta(days=settings.expired_lookback_days),
    )
    for serial, ca_name, profile, device_id, subject, not_after, not_before in rows:
        thresholds = settings.expiry_profiles.get(profile, settings.expiry)
        remaining = not_after - now
        severity = _severity(remaining, thresholds, not_after - not_before)
        if severity is None:
            continue
        expired = remaining <= timedelta(0)
        days = int(abs(remaining.total_seconds()) // 86400)
        found.append(
            Observation(
                check="cert_expired" if expired else "cert_expiring",
                key=f"{ca_name}/{serial}",
                severity=severity,
                summary=(
                    f"certificate {serial} of {device_id or subject} "
                    + (f"expired {days} days ago" if expired else f"expires in {days} days")
                ),
                evidence={"not_after": not_after.isoformat(), "profile": profile},
                ca_name=ca_name,
                serial=serial,
                device_id=device_id,
            )
        )
    for ca in cas:
        if ca.certificate_der is None or ca.status is not CAStatus.ACTIVE:
            continue
        not_after = ca.certificate.not_valid_after_utc
        remaining = not_after - now
        severity = _severity(remaining, settings.ca_expiry)
        if severity is None:
            continue
        expired = remaining <= timedelta(0)
        days = int(abs(remaining.total_seconds()) // 86400)
        found.append(
            Observation(
                check="ca_expired" if expired else "ca_expiring",
                key=ca.name,
                severity="critical" if expired else severity,
                summary=(
                    f"CA {ca.name} "
                    + (f"expired {days} days ago" if expired else f"expires in {days} days")
                ),
                evidence={"not_after": not_after.isoformat(), "kind": str(ca.kind)},
                ca_name=ca.name,
            )
        )
    return found


def age_observations(
    store: SqlMonitoringStore,
    cas: Sequence[CARecord],
    now: datetime,
    settings: MonitoringSettings,
) -> list[Observation]:
    """Device certificates older than their profile's age limit; CAs older than theirs."""
    found: list[Observation] = []
    for profile, days in settings.max_age_days.items():
        for serial, ca_name, device_id, not_before in store.older_than(
            profile, now - timedelta(days=days), now
        ):
            age = (now - not_before).days
            found.append(
                Observation(
                    check="cert_age",
                    key=f"{ca_name}/{serial}",
                    severity="low",
                    summary=f"certificate {serial} is {age} days old (limit {days})",
                    evidence={"not_before": not_before.isoformat(), "profile": profile},
                    ca_name=ca_name,
                    serial=serial,
                    device_id=device_id,
                )
            )
    limit = settings.ca_max_age_days
    if limit is not None:
        for ca in cas:
            if ca.certificate_der is None or ca.status is not CAStatus.ACTIVE:
                continue
            age = (now - ca.certificate.not_valid_before_utc).days
            if age > limit:
                found.append(
                    Observation(
                        check="ca_age",
                        key=ca.name,
                        severity="low" if ca.kind is CAKind.ROOT else "medium",
                        summary=f"CA {ca.name} is {age} days old (limit {limit})",
                        evidence={"age_days": age},
                        ca_name=ca.name,
                    )
                )
    return found


def usage_observations(
    store: SqlMonitoringStore, now: datetime, settings: MonitoringSettings
) -> list[Observation]:
    """Misuse seen in the usage evidence of the last window."""
    since = now - timedelta(minutes=settings.usage_window_minutes)
    found: list[Observation] = []
    for serial, sources in store.shared_certificates(since):
        found.append(
            Observation(
                check="cert_shared",
                key=serial,
                severity="high",
                summary=f"certificate {serial} used from {len(sources)} places at once",
                evidence={"sources": sources, "since": since.isoformat()},
                serial=serial,
            )
        )
    for serial, ca_name, last, device_id in store.revoked_in_use(since):
        found.append(
            Observation(
                check="revoked_in_use",
                key=f"{ca_name}/{serial}",
                severity="critical",
                summary=f"revoked certificate {serial} is still in use",
                evidence={"last_seen": last.isoformat()},
                ca_name=ca_name,
                serial=serial,
                device_id=device_id,
            )
        )
    for serial, ca_name, last, device_id in store.revoked_ca_in_use(since):
        found.append(
            Observation(
                check="ca_revoked_in_use",
                key=f"{ca_name}/{serial}",
                severity="critical",
                summary=f"certificate {serial} is in use but its CA {ca_name} is revoked",
                evidence={"last_seen": last.isoformat()},
                ca_name=ca_name,
                serial=serial,
                device_id=device_id,
            )
        )
    for client_id, serials in store.conflicting_client_ids(since):
        found.append(
            Observation(
                check="client_id_conflict",
                key=client_id,
                severity="high",
                summary=f"client ID {client_id!r} presented by {len(serials)} certificates",
                evidence={"serials": serials},
            )
        )
    return found


def rate_observations(
    store: SqlMonitoringStore, now: datetime, settings: MonitoringSettings
) -> list[Observation]:
    """Renewal storms and enrollment-failure spikes in the last rate window."""
    since = now - timedelta(minutes=settings.rate_window_minutes)
    found: list[Observation] = []
    renewals = sum(store.audit_counts(since, ("certificate.renewed",)).values())
    if renewals >= settings.renewal_storm_threshold:
        found.append(
            Observation(
                check="renewal_storm",
                key="fleet",
                severity="critical"
                if renewals >= 10 * settings.renewal_storm_threshold
                else "high",
                summary=(
                    f"renewal storm: {renewals} renewals in {settings.rate_window_minutes} "
                    f"minutes (threshold {settings.renewal_storm_threshold})"
                ),
                evidence={"renewals": renewals, "since": since.isoformat()},
            )
        )
    failures = store.audit_counts(since, ENROLLMENT_FAILURE_ACTIONS)
    total = sum(failures.values())
    if total >= settings.enrollment_failure_threshold:
        top = store.audit_top_targets(since, ENROLLMENT_FAILURE_ACTIONS)
        found.append(
            Observation(
                check="enrollment_failures",
                key="fleet",
                severity="critical"
                if total >= 10 * settings.enrollment_failure_threshold
                else "high",
                summary=(
                    f"{total} failed enrollments in {settings.rate_window_minutes} minutes "
                    "(possible brute force on enrollment secrets)"
                ),
                evidence={"by_action": failures, "top_targets": dict(top)},
            )
        )
    return found


def campaign_observations(running: Sequence[Progress], now: datetime) -> list[Observation]:
    """A running rotation campaign behind its schedule: fewer replaced than windows ended
    (high; critical in the last tenth of its time)."""
    found = []
    for progress in running:
        if not progress.behind:
            continue
        c = progress.campaign
        replaced = progress.counts[MemberState.REPLACED]
        late = now >= c.deadline - (c.deadline - c.created_at) / 10
        found.append(
            Observation(
                check="campaign_behind",
                key=c.campaign_id,
                severity="critical" if late else "high",
                summary=(
                    f"campaign {c.name} is behind: {replaced} of {c.members} replaced, "
                    f"{progress.expected} due by now, deadline {c.deadline.isoformat()}"
                ),
                evidence={
                    "replaced": replaced,
                    "due": progress.expected,
                    "pending": progress.counts[MemberState.PENDING],
                    "deadline": c.deadline.isoformat(),
                },
            )
        )
    return found
