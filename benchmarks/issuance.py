"""Certificates per second through the authority, beside the limits of this machine.

For each issuing-CA algorithm (P-256, RSA-2048) and store (SQLite; PostgreSQL when
``IOTPKI_TEST_DATABASE_URL`` is set or ``scripts/postgres`` can start one), on one pinned core:

- authority: CSR DER -> parse and verify -> policy -> sign -> store + audit (one transaction)
  -> returned, with pre-issuance lint on ``sample``;
- bare loop: pyca/cryptography only: load and verify the CSR, build and sign the same
  certificate, nothing else (the Python limit);
- ``openssl speed`` single-core sign and verify rates of the same algorithms.

Run: ``.venv/bin/python benchmarks/issuance.py [--count N]``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from rich.console import Console
from rich.table import Table

from iotpki.core.encoding import load_csr
from iotpki.core.keytypes import signature_hash
from iotpki.core.models import KeyAlgorithm
from iotpki.services.installation import open_installation
from iotpki.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
console = Console()


def make_csrs(count: int) -> list[bytes]:
    """DER CSRs from fresh P-256 device keys (made before timing starts)."""
    csrs = []
    for n in range(count):
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"bench-{n:07d}")])
        csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
        csrs.append(csr.public_bytes(Encoding.DER))
    return csrs


def rate(work: Callable[[bytes], object], csrs: list[bytes]) -> float:
    """Items per second of ``work`` over every CSR (after a short warm-up)."""
    for der in csrs[:20]:
        work(der)
    start = time.perf_counter()
    for der in csrs[20:]:
        work(der)
    return (len(csrs) - 20) / (time.perf_counter() - start)


def bare_loop(algorithm: KeyAlgorithm, csrs: list[bytes]) -> float:
    """The pyca/cryptography limit: verify the CSR, build and sign the same certificate."""
    from iotpki.core.keytypes import generate_private_key

    ca_key = generate_private_key(algorithm)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench CA")])
    aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())  # type: ignore[arg-type]
    digest = signature_hash(ca_key)
    now = datetime.now(UTC)

    def work(der: bytes) -> object:
        csr = x509.load_der_x509_csr(der)
        if not csr.is_signature_valid:
            raise ValueError("bad CSR")
        cn = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        public_key = csr.public_key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(csr.subject)
            .issuer_name(ca_name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, False, False, False, False),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier(f"urn:dev:ops:iotpki-{cn}")]
                ),
                critical=False,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(aki, critical=False)
        )
        return builder.sign(ca_key, digest)

    return rate(work, csrs)


def authority_rate(algorithm: KeyAlgorithm, database_url: str | None, csrs: list[bytes]) -> float:
    """Certificates per second through ``Authority.issue`` on a fresh installation."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            home=Path(tmp) / "home",
            database_url=database_url,
            passphrase="bench",
            lint_background=False,
        )
        inst = open_installation(settings, create=True)
        inst.initialise(issuing_algorithm=algorithm, actor="bench")
        authority = inst.authority

        def work(der: bytes) -> object:
            return authority.issue(load_csr(der), profile="device", actor="bench")

        try:
            return rate(work, csrs)
        finally:
            inst.close()


def openssl_speed(algorithm: KeyAlgorithm) -> tuple[float, float]:
    """Single-core (sign/s, verify/s) from ``openssl speed``."""
    name = {KeyAlgorithm.P256: "ecdsap256", KeyAlgorithm.RSA2048: "rsa2048"}[algorithm]
    out = subprocess.run(
        ["openssl", "speed", "-seconds", "2", name], capture_output=True, text=True, check=True
    ).stdout
    line = next(line for line in out.splitlines() if re.match(r"^\s*(rsa|\d+ bits ecdsa)", line))
    numbers = re.findall(r"[\d.]+", line)
    return float(numbers[-2]), float(numbers[-1])


@contextmanager
def postgres() -> Iterator[str | None]:
    """A PostgreSQL URL: the configured test server, or a throwaway one."""
    configured = os.environ.get("IOTPKI_TEST_DATABASE_URL")
    if configured:
        yield configured
        return
    directory = tempfile.mkdtemp(prefix="iotpki-bench-pg.")
    started = subprocess.run(
        [str(ROOT / "scripts" / "postgres"), "start", directory], capture_output=True, text=True
    )
    if started.returncode != 0:
        console.print(f"[yellow]PostgreSQL not available: {started.stderr.strip()}[/yellow]")
        yield None
        return
    try:
        yield started.stdout.strip()
    finally:
        subprocess.run([str(ROOT / "scripts" / "postgres"), "stop", directory], check=False)


def fresh_database(base: str) -> str:
    """A new empty database on the server behind ``base``."""
    from sqlalchemy import create_engine, text

    name = f"bench_{os.getpid()}_{time.monotonic_ns()}"
    engine = create_engine(base, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    head, _, query = base.partition("?")
    return head.rsplit("/", 1)[0] + f"/{name}" + (f"?{query}" if query else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3000, help="certificates per measurement")
    args = parser.parse_args()
    os.sched_setaffinity(0, {0})
    with console.status("generating device keys and CSRs..."):
        csrs = make_csrs(args.count)
    table = Table(title=f"issuance, one core, {args.count} certificates per run")
    for column in (
        "CA key",
        "openssl sign/s",
        "openssl verify/s",
        "bare pyca loop/s",
        "authority SQLite/s",
        "ratio",
        "authority PostgreSQL/s",
        "ratio",
    ):
        table.add_column(column, justify="right")
    with postgres() as pg_url:
        for algorithm in (KeyAlgorithm.P256, KeyAlgorithm.RSA2048):
            with console.status(f"{algorithm}: openssl speed..."):
                sign, verify = openssl_speed(algorithm)
            with console.status(f"{algorithm}: bare loop..."):
                bare = bare_loop(algorithm, csrs)
            with console.status(f"{algorithm}: authority on SQLite..."):
                sqlite = authority_rate(algorithm, None, csrs)
            pg = None
            if pg_url:
                with console.status(f"{algorithm}: authority on PostgreSQL..."):
                    pg = authority_rate(algorithm, fresh_database(pg_url), csrs)
            table.add_row(
                str(algorithm),
                f"{sign:,.0f}",
                f"{verify:,.0f}",
                f"{bare:,.0f}",
                f"{sqlite:,.0f}",
                f"{sqlite / bare:.2f}",
                f"{pg:,.0f}" if pg else "-",
                f"{pg / bare:.2f}" if pg else "-",
            )
    console.print(table)
    console.print(
        "target: P-256 CA on SQLite >= 0.5 x the bare loop on one core; cfssl is measured "
        "beside the EST server in benchmarks/est.py"
    )


if __name__ == "__main__":
    sys.exit(main())
