"""A fleet of 200 agents against one real EST server, certificates lasting five minutes.

Time runs twenty times faster for the server and the agents alike (one shared scaled clock),
so several renewal cycles fit in well under a minute of wall time. Checks: no device ever
goes without a valid certificate, renewals spread over time (measured and printed), a revoked
device cannot renew, and a used enrollment secret cannot enroll again.
"""

from __future__ import annotations

import itertools
import os
import random
import statistics
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from estkit import Manufacturer, write_identity
from estserver import https_server
from iotpki.agent import Agent, AgentConfig, ExitCode
from iotpki.agent.cli import execute
from iotpki.core.enrollment import Enrollment
from iotpki.core.models import CertificateQuery, RevocationReason

from conftest import make_installation

pytestmark = pytest.mark.interop

FLEET = int(os.environ.get("FLEET", "200"))
IDEVID_DEVICES = FLEET // 10
SCALE = 20.0
LIFETIME = timedelta(minutes=5)
RUN_FOR = timedelta(seconds=700)  # virtual: enrollment plus at least three renewals
JITTER = 0.15


class ScaledClock:
    """Virtual time running ``SCALE`` times faster than the wall clock, shared by all."""

    def __init__(self) -> None:
        self.start = datetime.now(UTC).replace(microsecond=0)
        self.t0 = time.monotonic()

    def now(self) -> datetime:
        elapsed = (time.monotonic() - self.t0) * SCALE
        return (self.start + timedelta(seconds=elapsed)).replace(microsecond=0)

    def sleep(self, seconds: float, stop: threading.Event) -> bool:
        return stop.wait(max(0.0, seconds) / SCALE)


def test_fleet_renews_without_gaps(tmp_path: Path) -> None:
    clock = ScaledClock()
    inst = make_installation(
        tmp_path / "home",
        clock=clock,  # type: ignore[arg-type]
        lint_background=False,
        profiles={"device": {"default_lifetime": "5m", "backdate": "0s", "lint": "off"}},
    )
    enrollment = Enrollment(inst.authority)
    maker = Manufacturer.create()
    enrollment.add_bootstrap_ca("acme", maker.cert, enroll_policy="any", actor="test")
    names = [f"fleet-{i:03d}" for i in range(FLEET)]
    secrets: dict[str, str] = {}
    configs: list[AgentConfig] = []
    with https_server(inst) as server:
        for i, name in enumerate(names):
            extra: dict[str, object] = {}
            if i < IDEVID_DEVICES:
                key, idevid = maker.idevid(name)
                cert, key_file = write_identity(tmp_path / "factory", name, key, idevid)
                extra = {"idevid_cert": cert, "idevid_key": key_file}
            else:
                secrets[name], _ = enrollment.create_secret(name, actor="test")
                extra = {"enrollment_secret": secrets[name]}
            configs.append(
                AgentConfig(
                    server=server.url,
                    device_id=name,
                    state_dir=tmp_path / "agents" / name,
                    trust_bundle=server.ca_file,
                    jitter_fraction=JITTER,
                    backoff_initial=5.0,
                    backoff_max=40.0,
                    check_interval=1e9,
                    **extra,  # type: ignore[arg-type]
                )
            )
        stop = threading.Event()
        results: dict[str, ExitCode] = {}
        agents = [Agent(c, clock=clock, rng=random.Random(i)) for i, c in enumerate(configs)]

        def run(agent: Agent) -> None:
            results[agent.config.device_id] = agent.run(stop)

        threads = [threading.Thread(target=run, args=(a,), daemon=True) for a in agents]
        for thread in threads:
            thread.start()

        # once the fleet has renewed once, revoke one device's certificate
        victim = names[-1]
        revoked_at = _revoke_after_first_renewal(inst, victim, clock)
        end = clock.start + RUN_FOR
        while clock.now() < end:
            time.sleep(0.2)

        # a used secret cannot enroll a fresh agent
        reused = AgentConfig(
            server=server.url,
            device_id=names[-2],
            state_dir=tmp_path / "again",
            trust_bundle=server.ca_file,
            enrollment_secret=secrets[names[-2]],
        )
        assert execute("enroll", Agent(reused)) is ExitCode.REFUSED

        final = clock.now()
        stop.set()
        for thread in threads:
            thread.join(timeout=30)

    histories = {
        name: sorted(
            inst.authority.search(CertificateQuery(device_id=name, limit=50)),
            key=lambda r: r.not_before,
        )
        for name in names
    }
    inst.close()

    # no device is ever without a valid certificate once enrolled
    for name, history in histories.items():
        if name == victim:
            continue
        assert len(history) >= 4, f"{name} renewed only {len(history) - 1} times"
        for old, new in itertools.pairwise(history):
            assert new.not_before <= old.not_after, f"{name} had a gap"
        assert history[-1].not_after > final, f"{name} ended expired"
        assert results.get(name, ExitCode.OK) is ExitCode.OK

    # the revoked device got nothing after its revocation and its agent gave up
    assert all(r.issued_at is None or r.issued_at <= revoked_at for r in histories[victim])
    assert results[victim] in (ExitCode.REFUSED, ExitCode.EXPIRED)

    # renewals spread over time: where in its certificate's life each renewal happened
    offsets = []
    for history in histories.values():
        for old, new in itertools.pairwise(history):
            life = (old.not_after - old.not_before).total_seconds()
            offsets.append((new.not_before - old.not_before).total_seconds() / life)
    per_second = Counter(
        int((r.not_before - clock.start).total_seconds())
        for history in histories.values()
        for r in history[1:]
    )
    spread = max(offsets) - min(offsets)
    print(
        f"\nfleet: {FLEET} agents, {len(offsets)} renewals; renewal point as a fraction of "
        f"lifetime: min {min(offsets):.3f} max {max(offsets):.3f} "
        f"mean {statistics.mean(offsets):.3f} stdev {statistics.stdev(offsets):.3f}; "
        f"busiest virtual second {max(per_second.values())} renewals"
    )
    assert spread > JITTER * 0.6
    assert statistics.stdev(offsets) > 0.02
    assert max(offsets) < 0.9  # renewed at 2/3 of the lifetime or earlier, plus load delays
    assert max(per_second.values()) < FLEET * 0.2


def _revoke_after_first_renewal(inst: object, victim: str, clock: ScaledClock) -> datetime:
    from iotpki.services.installation import Installation

    assert isinstance(inst, Installation)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        history = inst.authority.search(CertificateQuery(device_id=victim, limit=10))
        if len(history) >= 2:
            current = max(history, key=lambda r: r.not_before)
            inst.authority.revoke(
                current.serial, reason=RevocationReason.CESSATION_OF_OPERATION, actor="test"
            )
            return clock.now()
        time.sleep(0.1)
    raise AssertionError(f"{victim} never renewed")
