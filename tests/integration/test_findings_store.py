"""Recording findings on both databases: batch insert, refresh, change, resolve and reopen."""

from __future__ import annotations

from datetime import timedelta

from iotpki.core.monitoring import FindingChange, Observation
from iotpki.monitoring.alerts import Alerter
from iotpki.services.installation import Installation
from iotpki.store.monitoring import SqlMonitoringStore

from conftest import ManualClock

CHECKS = ("cert_expiring", "cert_expired")


def _observation(
    serial: str, severity: str = "medium", check: str = "cert_expiring"
) -> Observation:
    return Observation(
        check=check,
        key=f"issuing/{serial}",
        severity=severity,
        summary=f"certificate {serial} of pump-{serial}\texpires\nsoon \\ 'quoted'",
        evidence={"not_after": "2026-01-04T00:00:00+00:00", "profile": "device"},
        ca_name="issuing",
        serial=serial,
        device_id=f"pump-{serial}",
    )


def _events(changes: list[FindingChange]) -> dict[str, str]:
    return {change.finding.key: change.event for change in changes}


def test_a_batch_of_findings_opens_and_reads_back_as_returned(
    any_inst: Installation, clock: ManualClock
) -> None:
    store = SqlMonitoringStore(any_inst.store)
    observed = [_observation(f"{i:04x}") for i in range(1200)]  # more than one chunk
    opened = store.sync_findings(CHECKS, observed, clock.now())
    assert {c.event for c in opened} == {"opened"} and len(opened) == 1200
    assert len({c.finding.id for c in opened}) == 1200
    for change in (opened[0], opened[-1]):
        assert store.get_finding(change.finding.id) == change.finding
    assert opened[0].finding.first_seen == clock.now()
    assert opened[0].finding.evidence == {
        "not_after": "2026-01-04T00:00:00+00:00",
        "profile": "device",
    }
    assert "\texpires\nsoon \\ 'quoted'" in opened[0].finding.summary
    assert opened[0].finding.alerted_state is None and opened[0].finding.resolved_at is None


def test_refresh_change_resolve_and_reopen(any_inst: Installation, clock: ManualClock) -> None:
    store = SqlMonitoringStore(any_inst.store)
    first = store.sync_findings(CHECKS, [_observation("a1"), _observation("a2")], clock.now())
    ids = {c.finding.key: c.finding.id for c in first}
    clock.advance(timedelta(hours=1))
    # a1 unchanged (refreshed, no change), a2 more severe (changed), a3 new (opened)
    second = store.sync_findings(
        CHECKS,
        [_observation("a1"), _observation("a2", "high"), _observation("a3")],
        clock.now(),
    )
    assert _events(second) == {"issuing/a2": "changed", "issuing/a3": "opened"}
    a1 = store.get_finding(ids["issuing/a1"])
    assert a1 is not None and a1.last_seen == clock.now() and a1.status == "open"
    assert a1.first_seen == clock.now() - timedelta(hours=1)
    clock.advance(timedelta(hours=1))
    third = store.sync_findings(CHECKS, [_observation("a3")], clock.now())
    assert _events(third) == {"issuing/a1": "resolved", "issuing/a2": "resolved"}
    resolved = store.get_finding(ids["issuing/a1"])
    assert resolved is not None and resolved.status == "resolved"
    assert resolved.resolved_at == clock.now() and resolved.last_seen < clock.now()
    clock.advance(timedelta(hours=1))
    fourth = store.sync_findings(CHECKS, [_observation("a1"), _observation("a3")], clock.now())
    assert _events(fourth) == {"issuing/a1": "opened"}  # the same finding, reopened
    reopened = store.get_finding(ids["issuing/a1"])
    assert reopened is not None and reopened.status == "open" and reopened.resolved_at is None
    open_keys = sorted(f.key for f in store.list_findings(check="cert_expiring"))
    assert open_keys == ["issuing/a1", "issuing/a3"]


def test_other_checks_are_left_alone(any_inst: Installation, clock: ManualClock) -> None:
    store = SqlMonitoringStore(any_inst.store)
    store.sync_findings(["weak_key"], [_observation("k1", check="weak_key")], clock.now())
    stamp = clock.now()
    clock.advance(timedelta(hours=1))
    store.sync_findings(CHECKS, [_observation("b1")], clock.now())
    (weak,) = store.list_findings(check="weak_key")
    assert weak.status == "open" and weak.last_seen == stamp


def test_alerted_states_are_marked_in_one_batch(any_inst: Installation, clock: ManualClock) -> None:
    store = SqlMonitoringStore(any_inst.store)
    alerter = Alerter(store, clock, targets=[], secret=b"secret", max_attempts=3)
    observed = [_observation(f"c{i}") for i in range(600)]
    assert alerter.notify(store.sync_findings(CHECKS, observed, clock.now())) == 600
    assert all(f.alerted_state == f.state for f in store.list_findings(limit=1000))
    clock.advance(timedelta(hours=1))
    assert alerter.notify(store.sync_findings(CHECKS, observed, clock.now())) == 0
    escalated = [_observation("c7", "high") if o.serial == "c7" else o for o in observed]
    (change,) = store.sync_findings(CHECKS, escalated, clock.now())
    assert change.event == "changed" and alerter.notify([change]) == 1
