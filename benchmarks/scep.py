"""SCEP PKCSReq enrollments per second: iotpki beside micromdm's scepserver, same load, same run.

One enrollment = one PKCSReq (RSA-2048 device key, a fresh CSR with a challenge password,
signed by a self-signed certificate and encrypted to the server's RA) answered by a CertRep
SUCCESS carrying the certificate. Every device has its own key and name; iotpki gets a one-time
challenge password per device, micromdm its one static challenge. The messages are built before
the clock starts, so the figures measure the servers, not this load generator.

The servers run on core 0 (``taskset``), this load generator on core 1, all inside one private
network namespace (``unshare -n``, loopback up) because micromdm's scepserver listens on every
interface. iotpki runs twice as ``iotpki serve``: with its defaults (SQLite, file keys, P-256
CA, RSA RA, background lint of every issued certificate in the same process), and with the
background lint deferred (``IOTPKI_LINT_BACKGROUND=false``; sampled pre-issuance lint stays).
micromdm's CA is made with ``-keySize 2048`` (its default 4096 would slow it down).
All three servers run at once and get their batches in turns, the order rotating each round,
so that the drift of a shared machine falls on each alike; the table shows medians.

Run as root, with the interpreter iotpki is installed in:
``python benchmarks/scep.py [--requests 100,200] [--clients 1,8] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import AttributeOID, NameOID

from iotpki.core.scep import ScepService
from iotpki.protocols.scep.client import build_request, self_signed_certificate
from iotpki.protocols.scep.messages import MessageType, parse_pki_message
from iotpki.services.installation import open_installation
from iotpki.settings import Settings

KEY_CACHE = Path(tempfile.gettempdir()) / "iotpki-bench-scep-keys.pem"
WARMUP = 8
PASSPHRASE = "benchmark-passphrase"
MICROMDM_CHALLENGE = "benchmark-challenge"


# -- keys and messages -------------------------------------------------------------------------


def _new_key(_: int) -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def device_keys(count: int) -> list[rsa.RSAPrivateKey]:
    """``count`` RSA-2048 keys, kept in a cache file between runs (making them is slow)."""
    pems: list[bytes] = []
    if KEY_CACHE.exists():
        marker = b"-----END PRIVATE KEY-----\n"
        pems = [p + marker for p in KEY_CACHE.read_bytes().split(marker) if p.strip()]
    if len(pems) < count:
        with ProcessPoolExecutor() as pool:
            pems += list(pool.map(_new_key, range(count - len(pems))))
        KEY_CACHE.write_bytes(b"".join(pems))
    keys = []
    for pem in pems[:count]:
        key = serialization.load_pem_private_key(pem, None)
        assert isinstance(key, rsa.RSAPrivateKey)
        keys.append(key)
    return keys


def pkcs_req(
    key: rsa.RSAPrivateKey, name: str, password: str, ra: x509.Certificate, now: datetime
) -> bytes:
    """One PKCSReq as a device sends it."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject)
        .add_attribute(AttributeOID.CHALLENGE_PASSWORD, password.encode())
        .sign(key, hashes.SHA256())
    )
    return build_request(
        message_type=MessageType.PKCS_REQ,
        content=csr.public_bytes(serialization.Encoding.DER),
        signer=self_signed_certificate(key, subject, now),
        key=key,
        recipient=ra,
        transaction_id=os.urandom(16).hex(),
        now=now,
    )


# -- HTTP load -----------------------------------------------------------------------------------


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    if "content-length" in headers:
        return status, await reader.readexactly(int(headers["content-length"]))
    body = bytearray()
    while True:  # chunked transfer coding
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return status, bytes(body)
        body += await reader.readexactly(size)
        await reader.readexactly(2)


async def _client(port: int, queue: list[bytes], answers: list[tuple[int, bytes]]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while queue:
            body = queue.pop()
            writer.write(
                b"POST /scep?operation=PKIOperation HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/x-pki-message\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body) + body
            )
            await writer.drain()
            answers.append(await _read_response(reader))
    finally:
        writer.close()


def drive(port: int, messages: list[bytes], clients: int) -> tuple[float, int]:
    """Send every message over ``clients`` keep-alive connections; (seconds, SUCCESS count)."""
    queue = list(reversed(messages))
    answers: list[tuple[int, bytes]] = []

    async def run() -> None:
        await asyncio.gather(*(_client(port, queue, answers) for _ in range(clients)))

    start = time.perf_counter()
    asyncio.run(run())
    elapsed = time.perf_counter() - start
    ok = 0
    for status, body in answers:
        if status == 200 and parse_pki_message(body).pki_status == "0":
            ok += 1
    return elapsed, ok


# -- servers ------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_http(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("server did not start")


def _get(port: int, query: str) -> bytes:
    async def fetch() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET /scep?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        status, body = await _read_response(reader)
        writer.close()
        assert status == 200, status
        return body

    return asyncio.run(fetch())


@contextmanager
def _running(command: list[str], port: int, **options: object) -> Iterator[int]:
    """Run ``command`` on core 0 until the block ends; yields its process id."""
    process = subprocess.Popen(
        ["taskset", "-c", "0", *command],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        **options,  # type: ignore[call-overload]
    )
    try:
        _wait_http(port, process)
        yield process.pid  # taskset execs the server: same process
    finally:
        process.terminate()
        process.wait(timeout=20)


@dataclass
class Server:
    """A running server under test and its messages, consumed batch by batch."""

    name: str
    port: int
    pid: int
    messages: list[bytes]
    rates: dict[int, list[float]] = field(default_factory=dict)
    cpu: dict[int, list[float]] = field(default_factory=dict)  # CPU ms per enrollment
    failed: int = 0

    def cpu_seconds(self) -> float:
        """User and system CPU time of the server process, all threads."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def run(self, clients: int, count: int) -> None:
        """Send the next ``count`` messages over ``clients`` connections; keep the figures."""
        batch, self.messages = self.messages[:count], self.messages[count:]
        before = self.cpu_seconds()
        seconds, ok = drive(self.port, batch, clients)
        used = self.cpu_seconds() - before
        self.failed += count - ok
        self.rates.setdefault(clients, []).append(ok / seconds)
        self.cpu.setdefault(clients, []).append(used * 1000 / max(ok, 1))


@contextmanager
def iotpki_server(
    work: Path, keys: list[rsa.RSAPrivateKey], background_lint: bool
) -> Iterator[Server]:
    """``iotpki serve`` on core 0 with one challenge password per device."""
    name = "iotpki" if background_lint else "iotpki, lint deferred"
    home = work / ("iotpki" if background_lint else "iotpki-deferred")
    settings = Settings(home=home, passphrase=PASSPHRASE)
    inst = open_installation(settings, create=True)
    inst.initialise(actor="benchmark")
    service = ScepService(inst.authority, inst.keys)
    port = _free_port()
    env = dict(
        os.environ,
        IOTPKI_HOME=str(home),
        IOTPKI_PASSPHRASE=PASSPHRASE,
        IOTPKI_LINT_BACKGROUND=str(background_lint).lower(),
    )
    command = [sys.executable, "-m", "iotpki.cli", "serve", "--workers", "1",
               "--http-port", str(port), "--https-port", str(_free_port())]  # fmt: skip
    with _running(command, port, env=env) as pid:
        ra = _ra_of(_get(port, "operation=GetCACert"))
        now = datetime.now(UTC)
        messages = []
        for index, key in enumerate(keys):
            device = f"bench-{index}"
            secret, _ = service.create_challenge(device, actor="benchmark")
            messages.append(pkcs_req(key, device, secret, ra, now))
        server = Server(name, port, pid, messages)
        server.run(1, WARMUP)
        yield server
    inst.close()


@contextmanager
def micromdm_server(work: Path, keys: list[rsa.RSAPrivateKey]) -> Iterator[Server]:
    """micromdm's scepserver on core 0 with an RSA-2048 CA and its static challenge."""
    depot = work / "depot"
    subprocess.run(
        ["scepserver", "ca", "-init", "-depot", str(depot), "-keySize", "2048"],
        check=True, capture_output=True,
    )  # fmt: skip
    port = _free_port()
    command = ["scepserver", "-depot", str(depot), "-port", str(port),
               "-challenge", MICROMDM_CHALLENGE, "-allowrenew", "0"]  # fmt: skip
    with _running(command, port) as pid:
        # One CA and no RA: GetCACert answers with the bare DER certificate.
        ca = x509.load_der_x509_certificate(_get(port, "operation=GetCACert"))
        now = datetime.now(UTC)
        messages = [
            pkcs_req(key, f"bench-{index}", MICROMDM_CHALLENGE, ca, now)
            for index, key in enumerate(keys)
        ]
        server = Server("micromdm scepserver", port, pid, messages)
        server.run(1, WARMUP)
        yield server


def _ra_of(der: bytes) -> x509.Certificate:
    for cert in pkcs7.load_der_pkcs7_certificates(der):
        if not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            return cert
    raise RuntimeError("no RA certificate in GetCACert")


def main() -> None:
    """Enter a private network namespace, run the servers in turns, print the table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--requests", default="100,200", help="requests per batch, per --clients")
    parser.add_argument("--clients", default="1,8", help="concurrent connections per batch")
    parser.add_argument("--rounds", type=int, default=3, help="batches per server and clients")
    parser.add_argument("--in-netns", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.in_netns:
        for tool in ("unshare", "taskset", "scepserver"):
            if not shutil.which(tool):
                sys.exit(f"{tool} is needed (Debian packages util-linux and scep)")
        os.execvp("unshare", ["unshare", "-n", sys.executable, *sys.argv, "--in-netns"])
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    os.sched_setaffinity(0, {1})
    clients = [int(c) for c in args.clients.split(",")]
    counts = [int(c) for c in args.requests.split(",")]
    plan = list(zip(clients, counts, strict=True))
    keys = device_keys(WARMUP + args.rounds * sum(counts))
    with (
        tempfile.TemporaryDirectory(prefix="bench-scep-") as tmp,
        iotpki_server(Path(tmp), keys, background_lint=True) as ours,
        iotpki_server(Path(tmp), keys, background_lint=False) as deferred,
        micromdm_server(Path(tmp), keys) as peer,
    ):
        servers = [ours, deferred, peer]
        # Batches in turns, the order rotating each round, so that the drift of a shared
        # machine falls on every server alike.
        for round_ in range(args.rounds):
            for clients_n, count in plan:
                for server in servers[round_ % 3 :] + servers[: round_ % 3]:
                    server.run(clients_n, count)
    print(
        f"\n{'server':<24}{'clients':>8}{'median/s':>10}{'min/s':>8}{'max/s':>8}"
        f"{'CPU ms/enroll':>15}{'per CPU-s':>11}{'failed':>8}"
    )
    for server in servers:
        for clients_n in clients:
            rates, cpu = server.rates[clients_n], statistics.median(server.cpu[clients_n])
            print(
                f"{server.name:<24}{clients_n:>8}{statistics.median(rates):>10.1f}"
                f"{min(rates):>8.1f}{max(rates):>8.1f}{cpu:>15.2f}{1000 / cpu:>11.1f}"
                f"{server.failed:>8}"
            )
    for clients_n in clients:
        theirs = statistics.median(peer.rates[clients_n])
        their_cpu = statistics.median(peer.cpu[clients_n])
        for server in (ours, deferred):
            ratio = statistics.median(server.rates[clients_n]) / theirs
            per_cpu = their_cpu / statistics.median(server.cpu[clients_n])
            print(
                f"{clients_n} client(s): {server.name} / micromdm = {ratio:.2f}x enroll/s, "
                f"{per_cpu:.2f}x enrollments per CPU-second"
            )


if __name__ == "__main__":
    main()
