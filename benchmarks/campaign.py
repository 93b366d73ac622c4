"""A rotation campaign on a virtual clock: N devices (10,000 by default) on the P-256 issuing CA
moved to an ML-DSA-44 issuing CA within a virtual 24 hours at a set maximum rate.

Run on demand: ``.venv/bin/python benchmarks/campaign.py [--devices 10000]``. In process, on
SQLite, one core: the fleet is issued first (not measured), then the campaign is created and
each device that is switched on (90 %) renews with a new P-256 key at its first wake (every 10
virtual minutes) inside its window; at the deadline the rest are revoked as superseded.
Prints the wall time and CPU of creation, of the renewals (per renewal) and of the deadline, the
peak renewals in any virtual hour against the limit, and the ML-DSA-44 signing rate of this
machine (through cryptography: Debian's openssl 3.0 has no ML-DSA) for comparison.
"""

from __future__ import annotations

import argparse
import heapq
import random
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, mldsa
from cryptography.x509.oid import NameOID

from iotpki.core.campaigns import Campaigns
from iotpki.core.models import KeyAlgorithm, MemberState
from iotpki.errors import Busy
from iotpki.services.installation import open_installation
from iotpki.settings import Settings

WAKE = timedelta(minutes=10)


class Clock:
    """The virtual clock the authority reads."""

    def __init__(self) -> None:
        self.current = datetime.now(UTC).replace(microsecond=0)

    def now(self) -> datetime:
        return self.current


def csr(device: str, key: ec.EllipticCurvePrivateKey) -> x509.CertificateSigningRequest:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device)])
    return x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())


def mldsa_signs() -> float:
    """ML-DSA-44 signatures per second through cryptography (this openssl has no ML-DSA)."""
    key = mldsa.MLDSA44PrivateKey.generate()
    data = b"x" * 512
    start = time.perf_counter()
    for _ in range(500):
        key.sign(data)
    return 500 / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=0.25, help="max renewals per second")
    args = parser.parse_args()
    clock = Clock()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(home=Path(tmp) / "home", passphrase="bench", lint_background=False)
        inst = open_installation(settings, create=True, clock=clock, lint=False)
        inst.initialise(actor="bench")
        inst.authority.create_issuing(
            "pq", parent="root", common_name="PQ Issuing CA", algorithm=KeyAlgorithm.MLDSA44,
            lifetime=timedelta(days=365), backend="file", actor="bench",
        )  # fmt: skip
        print(f"issuing {args.devices} P-256 device certificates ...", flush=True)
        serials = {}
        for n in range(args.devices):
            device = f"dev-{n:05d}"
            key = ec.generate_private_key(ec.SECP256R1())
            issued = inst.authority.issue(csr(device, key), profile="device", actor="bench")
            serials[device] = issued.record.serial
            if n and n % 2000 == 0:
                print(f"  {n}", flush=True)
        campaigns = Campaigns(inst.authority)
        start = clock.now()
        deadline = start + timedelta(hours=24)
        wall, cpu = time.perf_counter(), time.process_time()
        campaign = campaigns.create(
            name="to-ml-dsa", select="ca=issuing profile=device", deadline=deadline,
            target_ca="pq", max_rate=args.rate, revoke_after=True, actor="bench",
        )  # fmt: skip
        create_wall, create_cpu = time.perf_counter() - wall, time.process_time() - cpu
        rng = random.Random(1)
        off = set(rng.sample(sorted(serials), args.devices // 10))
        plan = []
        for member in campaigns.members(campaign.campaign_id, limit=args.devices):
            if member.device_id in off or member.serial not in serials.values():
                continue
            wake = start + timedelta(seconds=rng.uniform(0, WAKE.total_seconds()))
            while wake < member.window_start:
                wake += WAKE
            plan.append((wake, member.device_id or "", member.serial))
        print(f"{len(plan)} renewals over the virtual day ...", flush=True)
        per_hour: Counter[int] = Counter()
        heapq.heapify(plan)
        busy = 0
        wall, cpu = time.perf_counter(), time.process_time()
        while plan:
            wake, device, serial = heapq.heappop(plan)
            clock.current = wake
            key = ec.generate_private_key(ec.SECP256R1())
            try:
                inst.authority.renew(serial, csr=csr(device, key), actor="agent")
            except Busy:  # beyond the campaign's rate: the agent asks again at its next wake
                busy += 1
                heapq.heappush(plan, (wake + WAKE, device, serial))
                continue
            per_hour[int((wake - start).total_seconds() // 3600)] += 1
        renew_wall, renew_cpu = time.perf_counter() - wall, time.process_time() - cpu
        clock.current = deadline + timedelta(seconds=1)
        wall, cpu = time.perf_counter(), time.process_time()
        campaigns.finish_due(actor="bench")
        end_wall, end_cpu = time.perf_counter() - wall, time.process_time() - cpu
        counts = campaigns.progress(campaign.campaign_id).counts
        inst.close()
    renewed = sum(per_hour.values())
    print()
    print(f"devices                      {args.devices}")
    print(f"campaign creation            {create_wall:.2f} s wall, {create_cpu:.2f} s CPU")
    print(
        f"renewals                     {renewed} in {renew_wall:.1f} s wall; "
        f"{renew_cpu / renewed * 1000:.2f} ms CPU per renewal; {busy} told to retry later"
    )
    print(f"deadline (revoke stragglers) {end_wall:.2f} s wall, {end_cpu:.2f} s CPU")
    limit = args.rate * 3600
    print(f"peak virtual hour            {max(per_hour.values())} renewals (limit {limit:.0f})")
    print(
        f"end state                    replaced {counts[MemberState.REPLACED]}, "
        f"revoked {counts[MemberState.REVOKED]}, pending {counts[MemberState.PENDING]}"
    )
    print(f"ML-DSA-44 signatures         {mldsa_signs():.0f} per second (cryptography, one core)")


if __name__ == "__main__":
    main()
