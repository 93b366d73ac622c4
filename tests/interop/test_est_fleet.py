"""A fleet of 200 agents against one real EST server, certificates lasting five minutes.

The server and the agents share one virtual clock that the test advances from one wake-up to
the next once every agent is asleep, so several renewal cycles fit in little wall time and the
outcome does not depend on how fast the machine is. Checks: no device ever goes without a valid
certificate, renewals happen inside the configured band and spread over time (measured and
printed), a revoked device cannot renew, and a used enrollment secret cannot enroll again.
"""

from __future__ import annotations

import itertools
import os
import random
import statistics
import threading
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
from virtualclock import VirtualClock

from conftest import make_installation

pytestmark = pytest.mark.interop

FLEET = int(os.environ.get("FLEET", "200"))
IDEVID_DEVICES = FLEET // 10
LIFETIME = timedelta(minutes=5)
RUN_FOR = timedelta(seconds=700)  # virtual: enrollment plus at least three renewals
JITTER = 0.15


def test_fleet_renews_without_gaps(tmp_path: Path) -> None:
    clock = VirtualClock(datetime.now(UTC))
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
                    timeout=600.0,  # a slow machine must not turn a request into a retry
                    **extra,  # type: ignore[arg-type]
                )
            )
        stop = threading.Event()
        results: dict[str, ExitCode] = {}
        agents = [Agent(c, clock=clock, rng=random.Random(i)) for i, c in enumerate(configs)]

        def run(agent: Agent) -> None:
            try:
                results[agent.config.device_id] = agent.run(stop)
            finally:
                clock.leave()

        threads = [threading.Thread(target=run, args=(a,), daemon=True) for a in agents]
        for thread in threads:
            clock.join()
            thread.start()

        # step from one wake-up to the next; once the victim has renewed, revoke its certificate
        victim = names[-1]
        revoked_at: datetime | None = None
        end = clock.start + RUN_FOR
        clock.settle()
        while clock.advance(end):
            clock.settle()
            if revoked_at is None:
                revoked_at = _revoke_once_renewed(inst, victim, clock)
        assert revoked_at is not None, f"{victim} never renewed"

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
        assert final == end
        held = {a.config.device_id: a.store.load() for a in agents}
        stop.set()
        clock.release()
        for thread in threads:
            thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in threads)

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
        identity = held[name]  # and the agent holds the newest of them
        assert identity is not None
        assert format(identity.certificate.serial_number, "x") == history[-1].serial

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
    assert max(offsets) < 0.9  # renewed at 2/3 of the lifetime or earlier
    # virtual time stands still during requests: each renewal falls inside the configured band
    # (renew_fraction plus up to JITTER of the lifetime early), give or take the whole second
    renew_fraction = configs[0].renew_fraction
    late = 1 - renew_fraction + 1 / LIFETIME.total_seconds()
    early = 1 - renew_fraction - JITTER
    assert all(early <= o <= late for o in offsets), (min(offsets), max(offsets))
    assert max(per_second.values()) < FLEET * 0.2


def _revoke_once_renewed(inst: object, victim: str, clock: VirtualClock) -> datetime | None:
    """Revoke the victim's current certificate once it has renewed; when, or None if not yet."""
    from iotpki.services.installation import Installation

    assert isinstance(inst, Installation)
    history = inst.authority.search(CertificateQuery(device_id=victim, limit=10))
    if len(history) < 2:
        return None
    current = max(history, key=lambda r: r.not_before)
    inst.authority.revoke(
        current.serial, reason=RevocationReason.CESSATION_OF_OPERATION, actor="test"
    )
    return clock.now()
