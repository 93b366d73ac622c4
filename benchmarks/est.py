"""EST enrollments per second over HTTPS keep-alive, beside the HTTP ceiling and cfssl.

Run on demand: ``.venv/bin/python benchmarks/est.py``. Needs ``taskset`` and ``cfssl``
(Debian golang-cfssl). The server under test (``iotpki serve``, SQLite, one process) is pinned
to CPU 0, the load generator (a raw asyncio client, keep-alive, one connection per client) to
CPU 1. Three figures per concurrency level (1, 8, 64 clients):

- iotpki ``simpleenroll``: HTTP Basic with a fresh one-time secret per enrollment, base64
  PKCS#10 in, base64 certs-only CMS out, over TLS;
- iotpki ``/healthz`` on the same listener: the HTTP(S) ceiling of the stack;
- cfssl ``serve`` sign API with its SQLite certificate database (plain HTTP, JSON, no client
  authentication, no PKCS#7), pinned to CPU 0 likewise.

Then the agent daemon's resident memory while it waits for its next renewal.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

LEVELS = {1: 600, 8: 2000, 64: 4000}  # concurrent clients: requests
SERVER_CPU, CLIENT_CPU = "0", 1
PYTHON = sys.executable

# cfssl's certdb schema (its SQLite migration 001: certificates and ocsp_responses).
CFSSL_SCHEMA = """
CREATE TABLE certificates (
  serial_number            blob NOT NULL,
  authority_key_identifier blob NOT NULL,
  ca_label                 blob,
  status                   blob NOT NULL,
  reason                   int,
  expiry                   timestamp,
  revoked_at               timestamp,
  pem                      blob NOT NULL,
  PRIMARY KEY(serial_number, authority_key_identifier)
);
CREATE TABLE ocsp_responses (
  serial_number            blob NOT NULL,
  authority_key_identifier blob NOT NULL,
  body                     blob NOT NULL,
  expiry                   timestamp,
  PRIMARY KEY(serial_number, authority_key_identifier),
  FOREIGN KEY(serial_number, authority_key_identifier)
    REFERENCES certificates(serial_number, authority_key_identifier)
);
"""


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 60) -> None:
    """Wait until something listens on ``port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def csr_pem_der(cn: str) -> tuple[bytes, bytes]:
    """A P-256 CSR for ``cn`` as PEM and DER."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM), csr.public_bytes(
        serialization.Encoding.DER
    )


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.lower() == "content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


async def _load(
    port: int, requests: list[bytes], clients: int, context: ssl.SSLContext | None
) -> tuple[float, int]:
    queue = list(reversed(requests))
    errors = 0

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
        while queue:
            writer.write(queue.pop())
            if await _read_response(reader) != 200:
                errors += 1
        writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return time.perf_counter() - start, errors


def load(
    port: int, requests: list[bytes], clients: int, context: ssl.SSLContext | None = None
) -> tuple[float, int]:
    """Successful requests per second over ``clients`` keep-alive connections, and failures."""
    seconds, errors = asyncio.run(_load(port, requests, clients, context))
    return (len(requests) - errors) / seconds, errors


def http_request(
    method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> bytes:
    """A raw HTTP/1.1 keep-alive request."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@contextmanager
def iotpki_server(home: Path) -> Iterator[int]:
    """``iotpki serve`` on CPU 0 (SQLite, no background lint)."""
    port, http_port = free_port(), free_port()
    env = {**os.environ, "IOTPKI_PASSPHRASE": "bench", "IOTPKI_LINT_BACKGROUND": "false"}
    cmd = ["taskset", "-c", SERVER_CPU, PYTHON, "-c", "from iotpki.cli.main import run; run()"]
    process = subprocess.Popen(
        [
            *cmd,
            "--home",
            str(home),
            "serve",
            "--https-port",
            str(port),
            "--http-port",
            str(http_port),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(home / "serve.log").open("ab"),
    )
    try:
        wait_port(port, timeout=180)
        yield port
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def est_requests(home: Path, count: int, prefix: str) -> list[bytes]:
    """``count`` simpleenroll requests, each with its own device and one-time secret."""
    from iotpki.core.enrollment import Enrollment
    from iotpki.services.installation import open_installation
    from iotpki.settings import load_settings

    os.environ["IOTPKI_PASSPHRASE"] = "bench"
    inst = open_installation(load_settings(home), lint=False)
    enrollment = Enrollment(inst.authority)
    requests = []
    for i in range(count):
        device = f"{prefix}-{i}"
        secret, _ = enrollment.create_secret(device, actor="bench")
        _, der = csr_pem_der(device)
        auth = base64.b64encode(f"{device}:{secret}".encode()).decode()
        requests.append(
            http_request(
                "POST",
                "/.well-known/est/simpleenroll",
                base64.encodebytes(der),
                {"Content-Type": "application/pkcs10", "Authorization": f"Basic {auth}"},
            )
        )
    inst.close()
    return requests


def bench_iotpki(work: Path) -> dict[int, tuple[float, float, int]]:
    """{clients: (enrollments/s, healthz/s, failed enrollments)}."""
    home = work / "iotpki"
    subprocess.run(
        [PYTHON, "-c", "from iotpki.cli.main import run; run()", "--home", str(home), "init"],
        env={**os.environ, "IOTPKI_PASSPHRASE": "bench"},
        check=True,
        capture_output=True,
    )
    batches = {n: est_requests(home, count, f"c{n}") for n, count in LEVELS.items()}
    results = {}
    with iotpki_server(home) as port:
        root = home / "tls" / "server.pem"
        context = ssl.create_default_context(cafile=str(root))
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        load(port, [http_request("GET", "/healthz")] * 200, 4, context)  # warm up
        for clients, requests in batches.items():
            est, failed = load(port, requests, clients, context)
            health, _ = load(port, [http_request("GET", "/healthz")] * 10_000, clients, context)
            results[clients] = (est, health, failed)
    return results


def bench_cfssl(work: Path) -> dict[int, tuple[float, int]]:
    """{clients: (certificates/s, failed requests)} of cfssl's sign API with its SQLite certdb."""
    directory = work / "cfssl"
    directory.mkdir()
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cfssl bench CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    (directory / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (directory / "ca-key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    (directory / "config.json").write_text(
        json.dumps(
            {
                "signing": {
                    "default": {"expiry": "720h", "usages": ["digital signature", "client auth"]}
                }
            }
        )
    )
    database = directory / "certs.db"
    with sqlite3.connect(database) as conn:
        conn.executescript(CFSSL_SCHEMA)
    (directory / "db.json").write_text(
        json.dumps({"driver": "sqlite3", "data_source": str(database)})
    )
    port = free_port()
    process = subprocess.Popen(
        [
            "taskset",
            "-c",
            SERVER_CPU,
            "cfssl",
            "serve",
            "-address",
            "127.0.0.1",
            "-port",
            str(port),
            "-ca",
            str(directory / "ca.pem"),
            "-ca-key",
            str(directory / "ca-key.pem"),
            "-config",
            str(directory / "config.json"),
            "-db-config",
            str(directory / "db.json"),
            "-loglevel",
            "5",
        ],
        env={**os.environ, "GOMAXPROCS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    results = {}
    try:
        wait_port(port)
        for clients, count in LEVELS.items():
            requests = []
            for i in range(count):
                pem, _ = csr_pem_der(f"cfssl-{clients}-{i}")
                body = json.dumps({"certificate_request": pem.decode()}).encode()
                requests.append(
                    http_request(
                        "POST", "/api/v1/cfssl/sign", body, {"Content-Type": "application/json"}
                    )
                )
            results[clients] = load(port, requests, clients)
    finally:
        process.terminate()
        process.wait(timeout=30)
    return results


def agent_rss(work: Path) -> float:
    """Resident MB of ``python -m iotpki.agent run`` once enrolled and waiting."""
    home = work / "iotpki"
    from iotpki.core.enrollment import Enrollment
    from iotpki.services.installation import open_installation
    from iotpki.settings import load_settings

    inst = open_installation(load_settings(home), lint=False)
    secret, _ = Enrollment(inst.authority).create_secret("rss-agent", actor="bench")
    root = inst.authority.chain(inst.authority.default_issuing_ca())[-1]
    (work / "root.pem").write_bytes(root.public_bytes(serialization.Encoding.PEM))
    inst.close()
    with iotpki_server(home) as port:
        state = work / "agent"
        config = work / "agent.toml"
        config.write_text(
            f'server = "https://127.0.0.1:{port}"\ndevice_id = "rss-agent"\n'
            f'state_dir = "{state}"\ntrust_bundle = "{work / "root.pem"}"\n'
            f'enrollment_secret = "{secret}"\n'
        )
        process = subprocess.Popen(
            [PYTHON, "-m", "iotpki.agent", "run", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while not (state / "current").exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            if not (state / "current").exists():
                raise RuntimeError("the agent did not enroll")
            time.sleep(1.0)
            status = Path(f"/proc/{process.pid}/status").read_text()
            rss_kb = int(
                next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1]
            )
        finally:
            process.terminate()
            process.wait(timeout=10)
    return rss_kb / 1024


def main() -> None:
    """Run every measurement and print the table."""
    for tool in ("taskset", "cfssl"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is needed")
    os.sched_setaffinity(0, {CLIENT_CPU})
    with tempfile.TemporaryDirectory(prefix="est-bench-") as tmp:
        work = Path(os.environ.get("EST_BENCH_DIR") or tmp)
        cfssl = bench_cfssl(work)
        iotpki = bench_iotpki(work)
        rss = agent_rss(work)
    print("\nEST enrollment over HTTPS keep-alive, server on one core (SQLite)")
    header = ("clients", "iotpki EST/s", "failed", "healthz/s", "cfssl sign/s", "failed", "ratio")
    print(
        f"{header[0]:>8} {header[1]:>13} {header[2]:>7} {header[3]:>10} {header[4]:>13} "
        f"{header[5]:>7} {header[6]:>6}"
    )
    for clients in LEVELS:
        est, health, failed = iotpki[clients]
        signed, cfssl_failed = cfssl[clients]
        print(
            f"{clients:>8} {est:>13,.0f} {failed:>7} {health:>10,.0f} {signed:>13,.0f} "
            f"{cfssl_failed:>7} {est / signed:>6.2f}"
        )
    print(f"\nagent daemon resident memory: {rss:.1f} MB (target < 40 MB)")


if __name__ == "__main__":
    main()
