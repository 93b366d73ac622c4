"""Partitioned CRLs at fleet scale: 1M revoked certificates spread over partitions.

Figures: building every partition (wall time, peak RSS of a fresh process), the largest
partition, one revocation at 1M revoked republished (its partition and delta), the delay until
the real background jobs show a revocation, and, in the same run, cryptography's plain builder
making one CRL of the same 1M entries.

Run on demand: ``nice .venv/bin/python benchmarks/revocation_partitions.py [--revoked N]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509

from iotpki.core.models import RevocationReason
from iotpki.core.partitions import PartitionScheme, partition_of
from iotpki.services.installation import Installation, open_installation
from iotpki.services.revocation import RevocationService
from revocation import PASSPHRASE, _csr, _settings, _table, builder_figures

_STAMP = "%Y-%m-%d %H:%M:%S.%f"  # as the store keeps times in SQLite


def fill_partitioned(inst: Installation, count: int, scheme: PartitionScheme) -> None:
    """``count`` revoked rows of the issuing CA, expiring over a year, each in its partition."""
    now = datetime.now(UTC).replace(tzinfo=None)
    reasons = ["keyCompromise", "superseded", "cessationOfOperation", None]

    def rows() -> object:
        for i in range(count):
            serial = (0x5A << 152) + i * 104729
            not_after = now + timedelta(days=1 + (i * 365) // count)
            yield (
                "issuing", format(serial, "x"), "device", f"CN=bulk-{i}", "[]",
                (now - timedelta(days=30)).strftime(_STAMP), not_after.strftime(_STAMP),
                format(i, "064x"), "p256", b"\x00", "revoked",
                (now - timedelta(seconds=i % 86400)).strftime(_STAMP), reasons[i % 4],
                (now - timedelta(days=30)).strftime(_STAMP),
                partition_of(scheme, serial, not_after.replace(tzinfo=UTC)),
            )  # fmt: skip

    columns = (
        "ca_name, serial, profile, subject, sans, not_before, not_after, key_fingerprint, "
        "key_algorithm, der, status, revoked_at, revocation_reason, issued_at, crl_partition"
    )
    db = sqlite3.connect(inst.settings.effective_database_url.removeprefix("sqlite:///"))
    with db:
        db.executemany(
            f"INSERT INTO certificates ({columns}) VALUES ({', '.join('?' * 15)})", rows()
        )
        db.execute("ANALYZE")
    db.close()


def build_all(home: Path) -> None:
    """In a fresh process: generate every partition's complete and delta CRL; print figures."""
    inst = open_installation(_settings(home))
    service = RevocationService(inst)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    made = service.partitions.publish_due("issuing", inst.authority.clock.now(), actor="bench")
    took = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fulls = [r for r in made if r.kind == "full"]
    largest = max(fulls, key=lambda r: len(r.der or b""))
    print(
        took, peak, base, len(fulls), sum(r.entries for r in fulls),
        len(largest.der or b""), largest.entries, largest.partition,
    )  # fmt: skip
    inst.close()


def one_revocation(inst: Installation) -> list[tuple[str, str]]:
    """Revoke one certificate at 1M revoked: republish its partition, then via the real jobs."""
    service = RevocationService(inst)
    auth = inst.authority
    issued = auth.issue(_csr("bench-one"), profile="device", actor="bench")
    service.publish_partitions()
    time.sleep(1.1)  # the next revocation is after every partition's thisUpdate
    auth.revoke(issued.record.serial, reason=RevocationReason.KEY_COMPROMISE, actor="bench")
    time.sleep(1.1)  # past partition_delay: the partition is due
    start = time.perf_counter()
    made = service.partitions.publish_due("issuing", auth.clock.now(), actor="bench")
    generate = time.perf_counter() - start
    start = time.perf_counter()
    service.reload_partitions()
    publish = time.perf_counter() - start
    kinds = sorted((r.partition or "", r.kind) for r in made)
    # End to end with the server's job runner: revoke, wait until the partition lists it.
    second = auth.issue(_csr("bench-two"), profile="device", actor="bench")
    service.publish_partitions()
    service.start()
    time.sleep(1.1)
    start = time.perf_counter()
    auth.revoke(second.record.serial, reason=RevocationReason.KEY_COMPROMISE, actor="bench")
    seen = None
    while time.perf_counter() - start < 60:
        held = service.partition_crl("issuing", second.record.crl_partition or "", "full")
        if held is not None and held.der is not None:
            crl = x509.load_der_x509_crl(held.der)
            if crl.get_revoked_certificate_by_serial_number(second.certificate.serial_number):
                seen = time.perf_counter() - start
                break
        time.sleep(0.05)
    service.stop()
    return [
        ("remade", ", ".join(f"{p} {k}" for p, k in kinds)),
        ("generate partition + delta (query, encode, sign, store)", f"{generate * 1000:.0f} ms"),
        ("write files + index, publish command", f"{publish * 1000:.0f} ms"),
        (
            "revoke -> listed in its partition, real jobs (partition_delay 1s)",
            f"{seen:.2f} s" if seen is not None else "not within 60 s",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--revoked", type=int, default=1_000_000)
    parser.add_argument("--child-build", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_build is not None:
        build_all(args.child_build)
        return
    scheme = PartitionScheme()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        inst = open_installation(_settings(home), create=True)
        inst.initialise(actor="bench")
        start = time.perf_counter()
        fill_partitioned(inst, args.revoked, scheme)
        print(f"filled {args.revoked:,} revoked rows in {time.perf_counter() - start:.0f} s")
        done = subprocess.run(
            [sys.executable, __file__, "--child-build", str(home)],
            capture_output=True, text=True, check=True,
            env={**os.environ, "IOTPKI_PASSPHRASE": PASSPHRASE},
        )  # fmt: skip
        took, peak, base, parts, entries, size, largest, name = done.stdout.split()
        _table(
            f"build every partition ({scheme.window_days}-day windows x {scheme.buckets} buckets)",
            [
                ("partitions (complete CRL + delta each)", parts),
                ("entries over all partitions", f"{int(entries):,}"),
                ("wall time, every partition and its delta", f"{float(took):.2f} s"),
                ("peak RSS of the building process", f"{int(peak) / 1024:.0f} MiB"),
                ("RSS before building", f"{int(base) / 1024:.0f} MiB"),
                ("largest partition", f"{int(size) / 1e3:.0f} kB, {int(largest):,} ({name})"),
            ],
            ("figure", "value"),
        )
        _table("one revocation at 1M revoked", one_revocation(inst), ("figure", "value"))
        inst.close()
    plain = builder_figures(args.revoked)
    _table(
        "cryptography's plain builder, one CRL of the same entries",
        list(plain.items()),
        ("figure", "value"),
    )


if __name__ == "__main__":
    main()
