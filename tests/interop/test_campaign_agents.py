"""A rotation campaign carried out by real agents over real TLS: each asks for its renewal
information on every wake (RFC 9773, whatever protocol issued its certificate), renews inside
its campaign window, and ends on the campaign's ML-DSA-44 issuing CA; the switched-off ones are
revoked after the deadline. The server is real, the clock virtual."""

from __future__ import annotations

import itertools
import threading
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from estserver import https_server
from iotpki.agent import Agent, AgentConfig
from iotpki.agent.client import EstUnreachable
from iotpki.core.campaigns import Campaigns
from iotpki.core.enrollment import Enrollment
from iotpki.core.models import CertStatus, KeyAlgorithm, MemberState
from iotpki.core.x509util import issued_by

from conftest import ManualClock, make_installation

pytestmark = pytest.mark.interop

FLEET, OFF = 24, 4
WAKE = timedelta(minutes=30)


class _Clock:
    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock

    def now(self) -> datetime:
        return self.clock.now()

    def sleep(self, seconds: float, stop: threading.Event) -> bool:
        return stop.is_set()


def test_agents_renew_inside_their_campaign_windows(tmp_path: Path, clock: ManualClock) -> None:
    inst = make_installation(tmp_path / "home", clock=clock, lint_background=False)
    enrollment = Enrollment(inst.authority)
    inst.authority.create_issuing(
        "pq", parent="root", common_name="PQ Issuing CA", algorithm=KeyAlgorithm.MLDSA44,
        lifetime=timedelta(days=365), backend="file", actor="test",
    )  # fmt: skip
    try:
        with https_server(inst) as server:
            agents = []
            for n in range(FLEET):
                device = f"dev-{n:02d}"
                secret, _ = enrollment.create_secret(device, actor="test")
                config = AgentConfig(
                    server=server.url,
                    device_id=device,
                    state_dir=tmp_path / "agents" / device,
                    ca_fingerprint=server.root_fingerprint,
                    enrollment_secret=secret,
                    timeout=30.0,
                )
                agent = Agent(config, clock=_Clock(clock))
                agent.enroll()
                agents.append(agent)
            campaigns = Campaigns(inst.authority)
            start = clock.now()
            campaign = campaigns.create(
                name="pq", select="ca=issuing profile=device", deadline=start + timedelta(hours=12),
                target_ca="pq", max_rate=1 / 600, revoke_after=True, actor="test",
            )  # fmt: skip
            running, switched_off = agents[OFF:], agents[:OFF]
            while clock.now() < start + timedelta(hours=11):
                clock.advance(WAKE)
                for agent in running:
                    before = agent.store.load()
                    assert (
                        before is not None and before.certificate.not_valid_after_utc > clock.now()
                    )
                    try:
                        agent.step()  # asks for its renewal information; renews if it is time
                    except EstUnreachable as exc:  # 503: the campaign is at its rate
                        assert "503" in exc.message  # it asks again at its next wake
            pq = inst.authority.get_ca("pq").certificate
            for agent in running:
                identity = agent.store.load()
                assert identity is not None
                assert issued_by(identity.certificate, pq), agent.config.device_id
            progress = campaigns.progress(campaign.campaign_id)
            assert progress.counts[MemberState.REPLACED] == FLEET - OFF
            replaced = campaigns.members(campaign.campaign_id, MemberState.REPLACED)
            times = sorted(m.replaced_at for m in replaced if m.replaced_at is not None)
            for a, b in itertools.pairwise(times):  # the campaign's rate held: one per 600 s
                assert b - a >= timedelta(seconds=WAKE.total_seconds() / 3)
            clock.advance(timedelta(hours=2))  # past the deadline
            campaigns.finish_due()
            for agent in switched_off:
                identity = agent.store.load()
                assert identity is not None
                serial = format(identity.certificate.serial_number, "x")
                assert inst.authority.get(serial).status is CertStatus.REVOKED
    finally:
        inst.close()


def test_agents_take_the_key_type_the_campaign_asks_for(tmp_path: Path, clock: ManualClock) -> None:
    """A campaign moving P-256 devices to P-384: the agents, configured for P-256, read the key
    type from csrattrs (asked with their certificate) and renew with P-384 keys."""
    inst = make_installation(tmp_path / "home", clock=clock, lint_background=False)
    enrollment = Enrollment(inst.authority)
    try:
        with https_server(inst) as server:
            agents = []
            for n in range(6):
                device = f"kt-{n}"
                secret, _ = enrollment.create_secret(device, actor="test")
                config = AgentConfig(
                    server=server.url, device_id=device, state_dir=tmp_path / device,
                    ca_fingerprint=server.root_fingerprint, enrollment_secret=secret,
                    key_algorithm="p256", timeout=30.0,
                )  # fmt: skip
                agent = Agent(config, clock=_Clock(clock))
                agent.enroll()
                agents.append(agent)
            campaigns = Campaigns(inst.authority)
            start = clock.now()
            campaigns.create(
                name="p384", select="profile=device", deadline=start + timedelta(hours=6),
                key_type="p384", max_rate=1.0, actor="test",
            )  # fmt: skip
            while clock.now() < start + timedelta(hours=6):
                clock.advance(WAKE)
                for agent in agents:
                    agent.step()
            for agent in agents:
                identity = agent.store.load()
                assert identity is not None
                key = identity.certificate.public_key()
                assert isinstance(key, ec.EllipticCurvePublicKey)
                assert key.curve.name == "secp384r1", agent.config.device_id
    finally:
        inst.close()
