"""Complete ACME orders per second: iotpki beside Let's Encrypt's pebble, same load, same run.

One order = newOrder, read the authorization, answer http-01 (served by this benchmark's own
responder and really fetched by the server), poll until valid, finalize with a fresh CSR,
poll until the order is valid, download the chain. Each client reuses one account. The
identifier is the IP address 127.0.0.1 (RFC 8738), which both servers validate without DNS.

The server runs on core 0 (``taskset``), this load generator on core 1. Pebble runs with
``PEBBLE_VA_NOSLEEP=1``, ``PEBBLE_WFE_NONCEREJECT=0`` and ``PEBBLE_AUTHZREUSE=0`` so that it
neither sleeps, nor rejects good nonces, nor skips validation (Debian's pebble 2.4 still reuses
about 1% of valid authorizations: the table shows how many orders skipped validation, and the
signed requests each order took, polls included).

Run: ``.venv/bin/python benchmarks/acme.py [--seconds 10] [--clients 1,16]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
IOTPKI = Path(sys.executable).with_name("iotpki")
console = Console(width=140)
POLL = 0.005


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def make_csr() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return b64(csr.public_bytes(serialization.Encoding.DER))


# -- a raw asyncio HTTP/1.1 keep-alive client over TLS, and ES256 JWS by hand --------------


class Connection:
    """One keep-alive HTTPS connection (the benchmark's load generator, not under test)."""

    def __init__(self, port: int, context: ssl.SSLContext) -> None:
        self.port = port
        self.context = context
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, path: str, body: bytes = b""
    ) -> tuple[int, dict[str, str], bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(
                "127.0.0.1", self.port, ssl=self.context, server_hostname="localhost"
            )
        assert self.reader is not None
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            f"Content-Type: application/jose+json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        headers: dict[str, str] = {}
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding") == "chunked":
            data = b""
            while True:
                size = int((await self.reader.readline()).strip(), 16)
                if size == 0:
                    await self.reader.readline()
                    break
                data += await self.reader.readexactly(size)
                await self.reader.readline()
        else:
            data = await self.reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection") == "close":
            self.writer.close()
            self.writer = None
        return status, headers, data


@dataclass
class Account:
    """An ES256 account key and its URL on one server."""

    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    kid: str | None = None

    def jwk(self) -> dict[str, str]:
        numbers = self.key.public_key().public_numbers()
        return {
            "crv": "P-256",
            "kty": "EC",
            "x": b64(numbers.x.to_bytes(32, "big")),
            "y": b64(numbers.y.to_bytes(32, "big")),
        }

    def thumbprint(self) -> str:
        digest = hashes.Hash(hashes.SHA256())
        digest.update(json.dumps(self.jwk(), sort_keys=True, separators=(",", ":")).encode())
        return b64(digest.finalize())

    def sign(self, url: str, nonce: str, payload: dict[str, Any] | None) -> bytes:
        header: dict[str, Any] = {"alg": "ES256", "nonce": nonce, "url": url}
        if self.kid:
            header["kid"] = self.kid
        else:
            header["jwk"] = self.jwk()
        protected = b64(json.dumps(header).encode())
        body = b64(b"" if payload is None else json.dumps(payload).encode())
        der = self.key.sign(f"{protected}.{body}".encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        signature = b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
        return json.dumps(
            {"protected": protected, "payload": body, "signature": signature}
        ).encode()


class AcmeClient:
    """Drives complete orders against one directory."""

    def __init__(
        self, directory: str, port: int, responder: dict[str, str], csrs: list[str]
    ) -> None:
        self.directory_url = directory
        self.conn = Connection(port, _insecure())
        self.responder = responder
        self.csrs = csrs
        self.account = Account()
        self.nonce = ""
        self.urls: dict[str, str] = {}
        self.reused = 0
        self.requests = 0

    @staticmethod
    def path(url: str) -> str:
        return "/" + url.split("/", 3)[3]

    async def post(
        self, url: str, payload: dict[str, Any] | None
    ) -> tuple[int, dict[str, str], bytes]:
        for _ in range(5):
            self.requests += 1
            body = self.account.sign(url, self.nonce, payload)
            status, headers, data = await self.conn.request("POST", self.path(url), body)
            self.nonce = headers.get("replay-nonce", self.nonce)
            if status == 400 and b"badNonce" in data:
                continue
            if status >= 400:
                raise RuntimeError(f"{url}: {status} {data[:300]!r}")
            return status, headers, data
        raise RuntimeError("repeated badNonce")

    async def setup(self) -> None:
        _, _, data = await self.conn.request("GET", self.path(self.directory_url))
        self.urls = json.loads(data)
        _, headers, _ = await self.conn.request("HEAD", self.path(self.urls["newNonce"]))
        self.nonce = headers["replay-nonce"]
        _, headers, _ = await self.post(self.urls["newAccount"], {"termsOfServiceAgreed": True})
        self.account.kid = headers["location"]

    async def poll(self, url: str, wanted: str) -> dict[str, Any]:
        while True:
            _, _, data = await self.post(url, None)
            body = json.loads(data)
            if body["status"] == wanted:
                return body
            if body["status"] == "invalid":
                raise RuntimeError(f"{url} became invalid: {body}")
            await asyncio.sleep(POLL)

    async def order(self) -> None:
        _, headers, data = await self.post(
            self.urls["newOrder"], {"identifiers": [{"type": "ip", "value": "127.0.0.1"}]}
        )
        order_url, order = headers["location"], json.loads(data)
        authz_url = order["authorizations"][0]
        _, _, data = await self.post(authz_url, None)
        authz = json.loads(data)
        challenge = next(c for c in authz["challenges"] if c["type"] == "http-01")
        if authz["status"] == "valid":  # the server reused a valid authorization: no validation
            self.reused += 1
        else:
            self.responder[challenge["token"]] = f"{challenge['token']}.{self.account.thumbprint()}"
            await self.post(challenge["url"], {})
            await self.poll(authz_url, "valid")
        _, _, data = await self.post(order["finalize"], {"csr": self.csrs.pop()})
        order = json.loads(data)
        if order["status"] != "valid":
            order = await self.poll(order_url, "valid")
        _, _, pem = await self.post(order["certificate"], None)
        assert pem.startswith(b"-----BEGIN CERTIFICATE-----")
        self.responder.pop(challenge["token"], None)


def _insecure() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def _responder(port: int, tokens: dict[str, str]) -> asyncio.Server:
    """The http-01 responder: answers /.well-known/acme-challenge/<token> from ``tokens``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                token = line.split(b" ")[1].rsplit(b"/", 1)[-1].decode()
                while (await reader.readline()) not in (b"\r\n", b""):
                    pass
                body = tokens.get(token, "").encode()
                status = b"200 OK" if body else b"404 Not Found"
                writer.write(
                    b"HTTP/1.1 "
                    + status
                    + b"\r\nContent-Length: "
                    + str(len(body)).encode()
                    + b"\r\n\r\n"
                    + body
                )
                await writer.drain()
        except (ConnectionError, IndexError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", port)


@dataclass
class Result:
    """One measurement: orders per second, orders that skipped validation (the server reused
    a valid authorization), and signed requests per order."""

    rate: float
    reused: int
    requests_per_order: float


async def measure(
    directory: str, port: int, http01_port: int, clients: int, seconds: float
) -> Result:
    """Complete orders per second with ``clients`` concurrent clients."""
    tokens: dict[str, str] = {}
    server = await _responder(http01_port, tokens)
    per_client = int(seconds * 600 / clients) + 20
    drivers = [
        AcmeClient(directory, port, tokens, [make_csr() for _ in range(per_client)])
        for _ in range(clients)
    ]
    for driver in drivers:
        await driver.setup()
    done = 0
    stop = time.perf_counter() + seconds

    async def loop(driver: AcmeClient) -> None:
        nonlocal done
        await driver.order()  # warm-up, not counted
        driver.reused = driver.requests = 0
        while time.perf_counter() < stop:
            await driver.order()
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(loop(d) for d in drivers))
    elapsed = time.perf_counter() - start
    server.close()
    requests = sum(d.requests for d in drivers)
    return Result(done / elapsed, sum(d.reused for d in drivers), requests / max(done, 1))


# -- the two servers ----------------------------------------------------------------------


@contextmanager
def iotpki_server(http01_port: int) -> Iterator[tuple[str, int]]:
    with tempfile.TemporaryDirectory(prefix="acme-bench-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        https_port, http_port = free_port(), free_port()
        (home / "iotpki.toml").write_text(
            "lint_background = false\n"
            "[acme]\n"
            f"http01_port = {http01_port}\n"
            "orders_per_account_per_hour = 0\n"
            "orders_per_identifier_per_hour = 0\n"
            "validation_retry_delays = [0.05, 0.1, 0.2, 0.5]\n"
        )
        env = {**os.environ, "IOTPKI_PASSPHRASE": "bench", "IOTPKI_HOME": str(home)}
        subprocess.run([str(IOTPKI), "init"], env=env, check=True, capture_output=True)
        process = subprocess.Popen(
            ["taskset", "-c", "0", str(IOTPKI), "serve",
             "--https-port", str(https_port), "--http-port", str(http_port)],
            env=env, stdout=subprocess.DEVNULL, stderr=(Path(tmp) / "serve.log").open("w"),
        )  # fmt: skip
        try:
            wait_port(https_port)
            yield f"https://127.0.0.1:{https_port}/acme/directory", https_port
        finally:
            process.terminate()
            process.wait(timeout=30)


@contextmanager
def pebble_server(http01_port: int) -> Iterator[tuple[str, int]]:
    with tempfile.TemporaryDirectory(prefix="pebble-bench-") as tmp:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=1))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256())
        )  # fmt: skip
        (Path(tmp) / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (Path(tmp) / "key.pem").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        port, management = free_port(), free_port()
        config = {"pebble": {
            "listenAddress": f"127.0.0.1:{port}",
            "managementListenAddress": f"127.0.0.1:{management}",
            "certificate": str(Path(tmp) / "cert.pem"), "privateKey": str(Path(tmp) / "key.pem"),
            "httpPort": http01_port, "tlsPort": free_port(), "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }}  # fmt: skip
        (Path(tmp) / "pebble.json").write_text(json.dumps(config))
        env = {
            **os.environ,
            "PEBBLE_VA_NOSLEEP": "1",
            "PEBBLE_WFE_NONCEREJECT": "0",
            "PEBBLE_AUTHZREUSE": "0",
        }
        process = subprocess.Popen(
            ["taskset", "-c", "0", "pebble", "-config", str(Path(tmp) / "pebble.json")],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_port(port)
            yield f"https://127.0.0.1:{port}/dir", port
        finally:
            process.terminate()
            process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", default="1,16")
    parser.add_argument("--servers", default="iotpki,pebble")
    args = parser.parse_args()
    if not shutil.which("pebble") or not shutil.which("taskset"):
        sys.exit("needs pebble and taskset (Debian packages pebble, util-linux)")
    os.sched_setaffinity(0, {1})
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    counts = [int(c) for c in args.clients.split(",")]
    results: dict[tuple[str, int], Result] = {}
    known = {"iotpki": iotpki_server, "pebble": pebble_server}
    servers = {name: known[name] for name in args.servers.split(",")}
    for label, factory in servers.items():
        http01_port = free_port()
        with factory(http01_port) as (directory, port):
            for clients in counts:
                results[label, clients] = asyncio.run(
                    measure(directory, port, http01_port, clients, args.seconds)
                )
                result = results[label, clients]
                console.print(
                    f"{label}, {clients} clients: {result.rate:.1f} orders/s, "
                    f"{result.requests_per_order:.1f} signed requests/order, "
                    f"{result.reused} orders skipped validation (reused authz)"
                )
    table = Table(
        title=f"Complete ACME orders per second (server on 1 core, {args.seconds:.0f} s each)"
    )
    table.add_column("clients", justify="right")
    for label in servers:
        table.add_column(f"{label} orders/s", justify="right")
        table.add_column(f"{label} req/order", justify="right")
        table.add_column(f"{label} reused authz", justify="right")
    table.add_column("iotpki / pebble", justify="right")
    for clients in counts:
        cells: list[str] = []
        for label in servers:
            result = results[label, clients]
            cells += [f"{result.rate:.1f}", f"{result.requests_per_order:.1f}", str(result.reused)]
        rates = [results[label, clients].rate for label in servers]
        ratio = f"{rates[0] / rates[1]:.2f}x" if len(rates) == 2 else "-"
        table.add_row(str(clients), *cells, ratio)
    console.print(table)


if __name__ == "__main__":
    main()
