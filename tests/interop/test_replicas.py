"""Replicas on one PostgreSQL, as real ``iotpki serve`` processes with empty homes: started at
the same moment on an empty database they converge (one initialises, the others wait and join),
and a replica whose home holds nothing but its settings signs with the CA keys in the database."""

from __future__ import annotations

import ssl
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509

from servekit import BOUND, IOTPKI, Server, environment

pytestmark = pytest.mark.interop

PASSPHRASE = "replicas share this passphrase"


@pytest.fixture
def replicas() -> Iterator[Callable[[Path, str], Server]]:
    started: list[Server] = []

    def start(home: Path, database_url: str) -> Server:
        env = environment(IOTPKI_DATABASE_URL=database_url, IOTPKI_PASSPHRASE=PASSPHRASE)
        server = Server(home, "--workers", "2", env=env)
        started.append(server)
        return server

    yield start
    for server in started:
        server.finish()


def _cacerts(server: Server) -> bytes:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # comparing what each replica serves, not trusting it
    url = f"https://127.0.0.1:{server.https_port}/.well-known/est/cacerts"
    with urllib.request.urlopen(url, timeout=BOUND, context=context) as response:
        body: bytes = response.read()
    return body


def test_replicas_started_together_on_an_empty_database_converge(
    tmp_path: Path, postgres_url: str, replicas: Callable[[Path, str], Server]
) -> None:
    servers = [replicas(tmp_path / f"replica-{n}", postgres_url) for n in range(3)]
    for server in servers:
        server.wait_serving()
    initialised = [s for s in servers if any("initialising" in line for line in s.out)]
    assert len(initialised) == 1, [s.out + s.err for s in servers]
    assert all(not any("Traceback" in line for line in s.err) for s in servers)
    assert len({_cacerts(server) for server in servers}) == 1  # one root, one issuing CA


def test_a_replica_with_an_empty_home_signs_with_the_keys_in_the_database(
    tmp_path: Path, postgres_url: str, replicas: Callable[[Path, str], Server]
) -> None:
    first = replicas(tmp_path / "first", postgres_url)
    first.wait_serving()
    assert first.finish() == 0
    other = tmp_path / "other"
    second = replicas(other, postgres_url)
    second.wait_serving()
    key = tmp_path / "dev-1.key"
    csr = tmp_path / "dev-1.csr"
    subprocess.run(
        ["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", key, "-subj", "/CN=dev-1", "-out", csr],
        check=True, capture_output=True,
    )  # fmt: skip
    env = environment(IOTPKI_DATABASE_URL=postgres_url, IOTPKI_PASSPHRASE=PASSPHRASE)
    chain = tmp_path / "dev-1.pem"
    issue = [*IOTPKI, "--home", str(other), "issue", "--csr", str(csr), "--profile", "device"]
    issue += ["--device-id", "dev-1", "--out", str(chain)]
    done = subprocess.run(issue, env=env, capture_output=True, text=True, timeout=BOUND)
    assert done.returncode == 0, done.stderr
    leaf = x509.load_pem_x509_certificates(chain.read_bytes())[0]
    assert leaf.subject.rfc4514_string() == "CN=dev-1"
    assert not (other / "keys").exists()  # signed with the key kept in the database
    assert second.finish() == 0
