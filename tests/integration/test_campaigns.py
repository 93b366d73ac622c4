"""Rotation campaigns on a virtual clock: a fleet on a P-256 issuing CA moved to an ML-DSA-44
issuing CA within a day at a set rate, stragglers revoked after the deadline; the rules a
campaign puts on a renewal; steering and refusals."""

from __future__ import annotations

import heapq
import itertools
import random
from collections import Counter
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from iotpki.core.campaigns import Campaigns, parse_selection
from iotpki.core.models import (
    CampaignStatus,
    CertStatus,
    KeyAlgorithm,
    MemberState,
)
from iotpki.core.x509util import issued_by
from iotpki.errors import Busy, Conflict, NotFound, PolicyViolation, RequestError
from iotpki.monitoring.metrics import Metrics
from iotpki.monitoring.service import Monitor
from iotpki.services.installation import Installation

from conftest import ManualClock, device_csr

FLEET = 300
OFF = 30  # devices switched off: they never renew
WAKE = timedelta(minutes=10)  # each agent looks at its renewal information this often


def _fleet(inst: Installation, count: int, prefix: str = "dev") -> dict[str, str]:
    """``count`` device certificates from the default issuing CA: device ID -> serial."""
    serials = {}
    for n in range(count):
        device = f"{prefix}-{n:04d}"
        issued = inst.authority.issue(
            device_csr(device), profile="device", device_id=device, actor="test"
        )
        serials[device] = issued.record.serial
    return serials


def _pq_ca(inst: Installation) -> None:
    inst.authority.create_issuing(
        "pq",
        parent="root",
        common_name="Post-Quantum Issuing CA",
        algorithm=KeyAlgorithm.MLDSA44,
        lifetime=timedelta(days=365),
        backend="file",
        actor="test",
    )


def test_a_fleet_moves_to_an_ml_dsa_ca_within_a_day_at_the_set_rate(
    inst: Installation, clock: ManualClock
) -> None:
    serials = _fleet(inst, FLEET)
    _pq_ca(inst)
    campaigns = Campaigns(inst.authority)
    start = clock.now()
    deadline = start + timedelta(hours=24)
    max_rate = 0.01  # 36 per hour
    campaign = campaigns.create(
        name="to-ml-dsa",
        select="ca=issuing profile=device",
        deadline=deadline,
        target_ca="pq",
        max_rate=max_rate,
        revoke_after=True,
        actor="test",
    )
    assert campaign.members == FLEET
    rng = random.Random(7)
    off = set(rng.sample(sorted(serials), OFF))
    # Each agent asks for its window once, then renews at its first wake inside it.
    plan = []
    for device, serial in serials.items():
        if device in off:
            continue
        window = campaigns.window(inst.authority.get(serial))
        assert window is not None
        phase = timedelta(seconds=rng.uniform(0, WAKE.total_seconds()))
        wake = start + phase
        while wake < window[0]:
            wake += WAKE
        assert wake <= window[1]  # a window is never shorter than the agents' wake interval
        plan.append((wake, device, serial))
    renewals: Counter[int] = Counter()
    heapq.heapify(plan)
    while plan:
        wake, device, serial = heapq.heappop(plan)
        clock.current = wake
        old = inst.authority.get(serial)
        assert old.status is CertStatus.VALID and old.not_after > wake  # never without one
        key = ec.generate_private_key(ec.SECP256R1())
        try:
            issued = inst.authority.renew(serial, csr=device_csr(device, key), actor="agent")
        except Busy:  # faster than the campaign's rate: the agent asks again at its next wake
            heapq.heappush(plan, (wake + WAKE, device, serial))
            continue
        assert issued.record.ca_name == "pq"
        assert issued.certificate.not_valid_before_utc <= wake
        assert issued_by(issued.certificate, inst.authority.get_ca("pq").certificate)
        assert wake < deadline
        renewals[int((wake - start).total_seconds() // 3600)] += 1
    assert max(renewals.values()) <= max_rate * 3600  # the peak hour within the limit
    progress = campaigns.progress(campaign.campaign_id)
    assert progress.counts[MemberState.REPLACED] == FLEET - OFF
    assert progress.counts[MemberState.PENDING] == OFF
    clock.current = deadline + timedelta(seconds=1)
    assert campaigns.progress(campaign.campaign_id).behind  # the stragglers are overdue
    finished = campaigns.finish_due()
    assert [c.campaign_id for c in finished] == [campaign.campaign_id]
    counts = campaigns.progress(campaign.campaign_id).counts
    assert counts[MemberState.REVOKED] == OFF and counts[MemberState.PENDING] == 0
    for device in off:
        record = inst.authority.get(serials[device])
        assert record.status is CertStatus.REVOKED
        assert str(record.revocation_reason) == "superseded"
    actions = [e.action for e in inst.store.audit_events()]
    assert actions.count("campaign.created") == 1 and actions.count("campaign.finished") == 1
    assert campaigns.finish_due() == []  # finished once


def test_renewals_faster_than_the_rate_are_told_to_retry(
    inst: Installation, clock: ManualClock
) -> None:
    serials = _fleet(inst, 3)
    campaigns = Campaigns(inst.authority)
    campaigns.create(
        name="slow", select="ca=issuing", deadline=clock.now() + timedelta(days=1),
        max_rate=1 / 600, actor="test",
    )  # fmt: skip
    first, second = list(serials.items())[:2]
    inst.authority.renew(first[1], csr=device_csr(first[0]), actor="agent")
    with pytest.raises(Busy) as refused:
        inst.authority.renew(second[1], csr=device_csr(second[0]), actor="agent")
    assert 0 < int(str(refused.value.data["retry_after"])) <= 1200
    assert inst.authority.get(second[1]).status is CertStatus.VALID  # nothing changed
    clock.advance(timedelta(minutes=20))
    inst.authority.renew(second[1], csr=device_csr(second[0]), actor="agent")


def test_a_campaign_sets_the_key_type_and_leaves_others_alone(
    inst: Installation, clock: ManualClock
) -> None:
    serials = _fleet(inst, 4)
    other = _fleet(inst, 2, prefix="other")
    campaigns = Campaigns(inst.authority)
    campaign = campaigns.create(
        name="to-p384",
        select="device_prefix=dev-",
        deadline=clock.now() + timedelta(days=2),
        key_type="p384",
        actor="test",
    )
    assert campaign.members == 4
    serial = serials["dev-0000"]
    with pytest.raises(PolicyViolation, match="p384"):
        inst.authority.renew(serial, csr=device_csr("dev-0000"), actor="agent")
    with pytest.raises(PolicyViolation, match="p384"):
        inst.authority.renew(serial, actor="agent")  # the same key: also the wrong type
    key = ec.generate_private_key(ec.SECP384R1())
    renewed = inst.authority.renew(serial, csr=device_csr("dev-0000", key), actor="agent")
    assert isinstance(renewed.certificate.public_key(), ec.EllipticCurvePublicKey)
    assert campaigns.window(inst.authority.get(serial)) is None  # replaced: no window now
    # a certificate outside the campaign renews as before
    inst.authority.renew(other["other-0000"], csr=device_csr("other-0000"), actor="agent")
    # paused: its members renew as they would without it
    campaigns.set_status(campaign.campaign_id, CampaignStatus.PAUSED, actor="test")
    inst.authority.renew(serials["dev-0001"], csr=device_csr("dev-0001"), actor="agent")
    campaigns.set_status(campaign.campaign_id, CampaignStatus.ACTIVE, actor="test")
    campaigns.set_status(campaign.campaign_id, CampaignStatus.CANCELLED, actor="test")
    with pytest.raises(Conflict):
        campaigns.set_status(campaign.campaign_id, CampaignStatus.ACTIVE, actor="test")
    assert campaigns.window(inst.authority.get(serials["dev-0002"])) is None


def test_creation_refuses_what_cannot_be_done(inst: Installation, clock: ManualClock) -> None:
    _fleet(inst, 20)
    campaigns = Campaigns(inst.authority)
    soon = clock.now() + timedelta(minutes=1)
    with pytest.raises(PolicyViolation, match="raise max_rate"):
        campaigns.create(name="x", select="ca=issuing", deadline=soon, max_rate=0.01, actor="t")
    with pytest.raises(RequestError):
        campaigns.create(name="x", select="ca=issuing", deadline=clock.now(), actor="t")
    with pytest.raises(NotFound):
        campaigns.create(
            name="x", select="device_id=nobody", deadline=soon + timedelta(days=1), actor="t"
        )
    with pytest.raises(PolicyViolation, match="not an active issuing CA"):
        campaigns.create(
            name="x", select="ca=issuing", deadline=soon + timedelta(days=1), target_ca="root",
            actor="t",
        )  # fmt: skip
    for bad in ("", "ca", "colour=red", "ca=a ca=b", "issued_before=yesterday", "key_type=dsa"):
        with pytest.raises(RequestError):
            parse_selection(bad)
    assert parse_selection("issued_before=2026-12-01 key_type=P-256").key_type == "p256"


def test_windows_are_spread_over_the_fleet(inst: Installation, clock: ManualClock) -> None:
    serials = _fleet(inst, 50)
    campaigns = Campaigns(inst.authority)
    campaign = campaigns.create(
        name="spread", select="ca=issuing", deadline=clock.now() + timedelta(hours=10),
        max_rate=1.0, actor="t",
    )  # fmt: skip
    windows = []
    for serial in serials.values():
        window = campaigns.window(inst.authority.get(serial))
        assert window is not None
        windows.append(window[0])
    windows.sort()
    gaps = {b - a for a, b in itertools.pairwise(windows)}
    assert gaps == {timedelta(hours=9) / 50}  # even spacing over 90 % of the time
    order = [m.serial for m in campaigns.members(campaign.campaign_id)]
    assert order != sorted(order, key=lambda s: int(s, 16))  # not in issuance order


def test_a_campaign_behind_schedule_is_a_finding_and_a_metric(
    inst: Installation, clock: ManualClock
) -> None:
    _fleet(inst, 10)
    campaigns = Campaigns(inst.authority)
    campaign = campaigns.create(
        name="late", select="ca=issuing", deadline=clock.now() + timedelta(hours=10),
        actor="test",
    )  # fmt: skip
    monitor = Monitor(inst, Metrics())
    clock.advance(timedelta(hours=5))  # half the windows have ended, nothing replaced
    changes = monitor.anomaly_scan()
    [finding] = [c for c in changes if c.finding.check == "campaign_behind"]
    assert finding.finding.key == campaign.campaign_id
    assert finding.finding.severity == "high"
    monitor.refresh_metrics()
    assert monitor.metrics is not None
    text = monitor.metrics.render().decode()
    assert 'iotpki_campaign_members{campaign="late",state="pending"} 10.0' in text
    assert 'iotpki_campaign_due{campaign="late"} 5.0' in text


def test_ordinary_renewals_count_in_a_campaigns_rate(
    inst: Installation, clock: ManualClock
) -> None:
    members = _fleet(inst, 2)
    others = _fleet(inst, 1, prefix="other")
    Campaigns(inst.authority).create(
        name="slow", select="device_prefix=dev-", deadline=clock.now() + timedelta(days=1),
        max_rate=1 / 600, actor="test",
    )  # fmt: skip
    # an ordinary renewal is never refused, but it takes the campaign's one renewal per 600 s
    inst.authority.renew(others["other-0000"], csr=device_csr("other-0000"), actor="agent")
    with pytest.raises(Busy):
        inst.authority.renew(members["dev-0000"], csr=device_csr("dev-0000"), actor="agent")
    clock.advance(timedelta(minutes=20))
    inst.authority.renew(members["dev-0000"], csr=device_csr("dev-0000"), actor="agent")
