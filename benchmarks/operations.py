"""Operations at fleet scale: inventory search, expiry scan, key-quality scan, usage ingest.

Run on demand: ``.venv/bin/python benchmarks/operations.py [--count N] [--databases ...]``.
Fills the store with ``--count`` synthetic certificates (default 1,000,000) by bulk insert
(executemany, not through the authority: a real certificate DER from a pool of genuine P-256
and RSA-2048 certificates, but a unique key fingerprint, serial, device and validity per row),
then times what an operator's dashboard and the monitor do. PostgreSQL is the server named by
``IOTPKI_TEST_DATABASE_URL`` (a fresh database is made and dropped); start one with
``scripts/postgres start DIR`` if none runs.

No peer offers these operations to compare with: Vault's ``LIST pki/certs`` answers serial
numbers only (no subject, expiry or search), step-ca has no inventory or expiry scan in its
open-source release, and AWS IoT Device Defender is a managed service. So each figure is set
beside the naive way the same question is asked of the same database in the same run: a
substring ``LIKE '%term%'`` scan instead of the trigram index.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from sqlalchemy import create_engine, insert, text

from iotpki.core.access import create_token
from iotpki.core.models import Role
from iotpki.core.monitoring import InventoryFilter
from iotpki.monitoring.service import Monitor
from iotpki.net.asgi_tls import TLSExtensionProtocol
from iotpki.server import Service, build_https_app, ensure_tls_identity, https_context
from iotpki.services.installation import Installation, open_installation
from iotpki.settings import Settings
from iotpki.store import schema as s

PASSPHRASE = "bench"
CHUNK = 10_000
RSA_EVERY = 10  # one certificate in ten has an RSA-2048 key
REVOKED_EVERY = 50
LIFETIMES = (30, 90, 365)
SEARCH_RUNS = 7


def _certificate_pool(ca_key: ec.EllipticCurvePrivateKey) -> tuple[list[bytes], list[bytes]]:
    """Genuine DER certificates to reuse: 64 with P-256 keys, 16 with RSA-2048 keys."""
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench CA")])
    now = datetime.now(UTC)

    def make(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, i: int) -> bytes:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"pool-{i}")])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + timedelta(days=90))
            .sign(ca_key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.DER)

    ecs = [make(ec.generate_private_key(ec.SECP256R1()), i) for i in range(64)]
    rsas = [make(rsa.generate_private_key(65537, 2048), i) for i in range(16)]
    return ecs, rsas


def _rows(count: int, now: datetime) -> Iterator[list[dict[str, object]]]:
    """Synthetic certificate rows in chunks: devices dev-0000000 ..., spread over two years."""
    ecs, rsas = _certificate_pool(ec.generate_private_key(ec.SECP256R1()))
    start = now - timedelta(days=730)
    chunk: list[dict[str, object]] = []
    for i in range(count):
        digest = hashlib.sha256(i.to_bytes(8, "big")).hexdigest()
        device = f"dev-{i:07d}"
        is_rsa = i % RSA_EVERY == 0
        not_before = start + timedelta(seconds=(i * 63_072_000) // count)
        not_after = not_before + timedelta(days=LIFETIMES[i % len(LIFETIMES)])
        revoked = i % REVOKED_EVERY == 7
        chunk.append(
            {
                "ca_name": "issuing",
                "serial": digest[:40].lstrip("0") or "0",
                "profile": "gateway" if i % 20 == 3 else "device",
                "device_id": device,
                "subject": f"CN={device},O=Acme Plant {i % 97}",
                "sans": json.dumps([f"uri:urn:dev:ops:iotpki-{device}"]),
                "not_before": not_before,
                "not_after": not_after,
                "key_fingerprint": digest,
                "key_algorithm": "rsa2048" if is_rsa else "p256",
                "der": rsas[i % len(rsas)] if is_rsa else ecs[i % len(ecs)],
                "status": "revoked" if revoked else "valid",
                "revoked_at": not_before + timedelta(days=3) if revoked else None,
                "revocation_reason": "superseded" if revoked else None,
                "issued_at": not_before,
                "lint_status": "ok",
            }
        )
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _fill(inst: Installation, count: int) -> float:
    """Bulk-insert ``count`` certificates; returns the seconds it took."""
    started = time.perf_counter()
    engine = inst.store.engine
    for chunk in _rows(count, inst.authority.clock.now()):
        with engine.begin() as conn:
            conn.execute(insert(s.certificates), chunk)
    # What autovacuum would do after a load: planner statistics, and on PostgreSQL the GIN
    # indexes' pending lists merged (until then a trigram lookup scans them).
    statement = "VACUUM ANALYZE certificates" if inst.store.dialect == "postgresql" else "ANALYZE"
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(statement))
    return time.perf_counter() - started


def _median_ms(run: Callable[[], object], runs: int = SEARCH_RUNS) -> float:
    run()  # warm the cache once
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def _searches(monitor: Monitor, count: int) -> list[tuple[str, float, int]]:
    """The dashboard's search page (50 rows + 1 to know there is a next) for typical filters."""
    inv = monitor.inventory
    now = monitor.authority.clock.now()
    rare = f"dev-{count // 3:07d}"
    cases: list[tuple[str, InventoryFilter, int | None]] = [
        ("first page, no filter", InventoryFilter(), None),
        ("page at row 500,000", InventoryFilter(), count // 2),
        ("subject 'plant 42' (common)", InventoryFilter(subject="plant 42"), None),
        (f"subject '{rare}' (one match)", InventoryFilter(subject=rare), None),
        ("subject 'no-such-thing' (none)", InventoryFilter(subject="no-such-thing"), None),
        ("device prefix 'dev-05'", InventoryFilter(device="dev-05"), None),
        ("serial prefix 'abc'", InventoryFilter(serial="abc"), None),
        ("status revoked", InventoryFilter(status="revoked"), None),
        (
            "valid, expiring in 7 days",
            InventoryFilter(status="valid", expires_before=now + timedelta(days=7)),
            None,
        ),
        (
            "profile gateway + 'plant 9'",
            InventoryFilter(profile="gateway", subject="plant 9"),
            None,
        ),
    ]
    results = []
    for label, flt, before in cases:

        def page(flt: InventoryFilter = flt, before: int | None = before) -> int:
            return len(inv.search(flt, now, before_id=before, limit=51))

        results.append((label, _median_ms(page), page()))
    return results


def _naive_subject(inst: Installation, term: str) -> float:
    """The same one-match subject page as a plain substring scan (what the trigram index saves)."""
    sql = text(
        "SELECT id FROM certificates WHERE subject LIKE :p OR sans LIKE :p "
        "ORDER BY id DESC LIMIT 51"
    )

    def run() -> None:
        with inst.store.engine.connect() as conn:
            conn.execute(sql, {"p": f"%{term}%"}).all()

    return _median_ms(run, runs=3)


def _timed(run: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    result = run()
    return time.perf_counter() - started, result


@contextmanager
def _https(inst: Installation) -> Iterator[tuple[str, Path]]:
    """The real HTTPS listener on a free 127.0.0.1 port; its URL and the root to trust."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    key_path, cert_path = ensure_tls_identity(inst)
    context = https_context(inst, key_path, cert_path)
    config = uvicorn.Config(
        build_https_app(Service(inst)),
        host="127.0.0.1",
        port=port,
        http=TLSExtensionProtocol,
        ssl_context_factory=lambda _config, _default: context,
        log_level="warning",
        lifespan="off",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    root = inst.authority.chain(inst.authority.default_issuing_ca())[-1]
    ca_file = inst.home / "bench-root.pem"
    ca_file.write_bytes(root.public_bytes(serialization.Encoding.PEM))
    try:
        yield f"https://127.0.0.1:{port}", ca_file
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _ingest(inst: Installation, serials: list[str], batches: int, clients: int) -> float:
    """Events per second through POST /api/v1/usage/events, batches of 1000, a few clients."""
    token, _ = create_token(
        inst.store, inst.authority.clock, role=Role.REPORTER, description="bench", actor="bench"
    )
    per_client = batches // clients
    failures: list[str] = []

    def client(url: str, ca_file: Path, offset: int) -> None:
        with httpx.Client(verify=str(ca_file), timeout=60) as http:
            for b in range(per_client):
                now = datetime.now(UTC).isoformat()
                base = (offset * per_client + b) * 1000
                body = {
                    "nonce": secrets.token_urlsafe(24),
                    "sent_at": now,
                    "events": [
                        {
                            "serial": serials[(base + k) % len(serials)],
                            "time": now,
                            "kind": "connect",
                            "client_id": f"client-{(base + k) % len(serials)}",
                            "source": f"10.{k % 250}.{b % 250}.{offset}",
                        }
                        for k in range(1000)
                    ],
                }
                reply = http.post(
                    f"{url}/api/v1/usage/events",
                    json=body,
                    headers={"authorization": f"Bearer {token}"},
                )
                if reply.status_code != 202:
                    failures.append(reply.text[:200])

    with _https(inst) as (url, ca_file):
        threads = [threading.Thread(target=client, args=(url, ca_file, i)) for i in range(clients)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"ingest refused: {failures[0]}")
    return per_client * clients * 1000 / elapsed


def _serials(inst: Installation, limit: int) -> list[str]:
    with inst.store.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT serial FROM certificates ORDER BY id DESC LIMIT :n"), {"n": limit}
        )
        return [r[0] for r in rows]


@contextmanager
def _database(kind: str, workdir: Path) -> Iterator[str | None]:
    """A database URL of the kind (None: SQLite in the home), dropped afterwards."""
    if kind == "sqlite":
        yield None
        return
    base = os.environ.get("IOTPKI_TEST_DATABASE_URL")
    if not base:
        raise SystemExit("set IOTPKI_TEST_DATABASE_URL (scripts/postgres start DIR prints one)")
    name = f"bench_ops_{secrets.token_hex(4)}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    head, _, query = base.partition("?")
    try:
        yield head.rsplit("/", 1)[0] + f"/{name}" + (f"?{query}" if query else "")
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


class _Table(list[tuple[str, str, str]]):
    """Figures printed as they are measured: (what, value, target or baseline)."""

    def append(self, row: tuple[str, str, str]) -> None:
        super().append(row)
        print(f"{row[0]:<46}  {row[1]:>16}  {row[2]}", flush=True)


def run(kind: str, count: int, batches: int, clients: int) -> list[tuple[str, str, str]]:
    """Every figure for one database: (what, value, target or baseline)."""
    print(f"\n== {kind}: {count:,} certificates", flush=True)
    out = _Table()
    with tempfile.TemporaryDirectory() as tmp, _database(kind, Path(tmp)) as url:
        settings = Settings(
            home=Path(tmp) / "home",
            database_url=url,
            passphrase=PASSPHRASE,
            lint_background=False,
        )
        inst = open_installation(settings, create=True, lint=False)
        inst.initialise(actor="bench")
        load = _fill(inst, count)
        out.append((f"bulk insert {count:,} rows", f"{load:.0f} s", f"{count / load:,.0f} rows/s"))
        monitor = Monitor(inst)
        for label, ms, n in _searches(monitor, count):
            out.append((f"search page: {label}", f"{ms:.1f} ms", f"target < 100 ms ({n} rows)"))
        rare = f"dev-{count // 3:07d}"
        out.append(
            (
                f"  baseline: LIKE '%{rare}%' scan",
                f"{_naive_subject(inst, rare):.0f} ms",
                "no index",
            )
        )
        seconds, _ = _timed(monitor.overview)
        out.append(("overview counts (cached 30 s after)", f"{seconds:.2f} s", ""))
        seconds, changes = _timed(monitor.expiry_scan)
        out.append(
            (
                "expiry scan, first (opens findings)",
                f"{seconds:.2f} s",
                f"target < 10 s ({len(changes):,} findings)",  # type: ignore[arg-type]
            )
        )
        seconds, changes = _timed(monitor.expiry_scan)
        out.append(("expiry scan, steady state", f"{seconds:.2f} s", "target < 10 s"))
        seconds, result = _timed(monitor.key_scan)
        checked = result[0]  # type: ignore[index]
        out.append(
            (
                "key-quality scan, every key",
                f"{seconds:.1f} s",
                f"{checked:,} keys, {checked / seconds:,.0f} keys/s",
            )
        )
        seconds, _ = _timed(monitor.key_scan)
        out.append(("key-quality scan, nothing new", f"{seconds:.2f} s", "shared-key query"))
        rate = _ingest(inst, _serials(inst, 100_000), batches, clients)
        out.append(
            (
                f"ingest, {clients} clients x 1000-event batches",
                f"{rate:,.0f} events/s",
                "HTTPS, uvicorn",
            )
        )
        inst.close()
    return out


def main() -> None:
    """Parse arguments, run each database; the table is printed as it is measured."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--batches", type=int, default=40, help="ingest batches of 1000 events")
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    for kind in args.databases.split(","):
        run(kind, args.count, args.batches, args.clients)


if __name__ == "__main__":
    main()
