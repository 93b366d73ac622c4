"""``serve --workers 2`` on SQLite: two request processes on the same listeners share a
concurrent load while a job worker lints what they issue; a request worker killed with SIGKILL in
the middle is started again; every certificate a client received is stored, no serial is issued
twice and the audit chain verifies."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sqlite3
import ssl
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from servekit import BOUND, IOTPKI, Server, environment, wait

pytestmark = pytest.mark.interop


def _workers(master: int) -> set[int]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return {int(pid) for pid in children}


def _listening_workers(port: int, pids: set[int]) -> set[int]:
    """The processes among ``pids`` that hold the listening socket on ``port`` (from /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    holders = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd) in inodes:
                    holders.add(pid)
    return holders


def _csr(name: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def test_two_workers_share_the_load_and_a_killed_one_comes_back(tmp_path: Path) -> None:
    home = tmp_path / "home"
    server = Server(home, "--workers", "2")
    try:
        server.wait_serving()
        assert server.out[-1].endswith("with 2 workers")
        token = next(line.strip() for line in server.out if re.fullmatch(r"\s+itk_\S+", line))
        root = subprocess.run(
            [*IOTPKI, "--home", str(home), "ca", "show", "root", "--pem"],
            env=environment(), capture_output=True, check=True, timeout=BOUND,
        ).stdout  # fmt: skip
        (tmp_path / "root.pem").write_bytes(root)
        trust = ssl.create_default_context(cafile=tmp_path / "root.pem")
        first = _workers(server.process.pid)
        assert len(first) == 3  # two request workers and the job worker
        url = f"https://127.0.0.1:{server.https_port}/api/v1/certificates"
        headers = {"authorization": f"Bearer {token}"}
        received: list[str] = []
        failed: list[str] = []

        def issue(n: int) -> None:
            body = {"csr": _csr(f"dev-{n}"), "profile": "device", "device_id": f"dev-{n}"}
            try:
                with httpx.Client(verify=trust, timeout=BOUND) as client:
                    response = client.post(url, json=body, headers=headers)
            except httpx.TransportError as exc:  # the killed worker's connections
                failed.append(repr(exc))
                return
            assert response.status_code == 201, response.text
            received.append(response.json()["serial"])

        accepting = _listening_workers(server.https_port, first)
        assert len(accepting) == 2
        killed = min(accepting)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(issue, range(30)))
            os.kill(killed, signal.SIGKILL)
            list(pool.map(issue, range(30, 60)))

        def restarted() -> bool:  # a zombie stays a child until the master reaps it
            now = _workers(server.process.pid)
            return len(now) == 3 and killed not in now

        wait(restarted, "the killed worker restarted")
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(issue, range(60, 80)))
        assert len(received) >= 60, failed  # only requests in the killed worker may fail
        database = sqlite3.connect(home / "iotpki.db")
        stored = [row[0] for row in database.execute("SELECT serial FROM certificates")]
        database.close()
        assert set(received) <= set(stored)
        assert len(stored) == len(set(stored))  # no serial twice

        def linted() -> bool:  # by the job worker, not on the request path
            with sqlite3.connect(home / "iotpki.db") as db:
                pending = "SELECT 1 FROM certificates WHERE lint_status IS NULL"
                return not db.execute(pending).fetchall()

        wait(linted, "every issued certificate linted")
        verify = subprocess.run(
            [*IOTPKI, "--home", str(home), "audit", "verify"],
            env=environment(), capture_output=True, text=True, timeout=BOUND,
        )  # fmt: skip
        assert verify.returncode == 0, verify.stdout + verify.stderr
    finally:
        status = server.finish()
    assert status == 0, server.out + server.err
    assert not any("Traceback" in line for line in server.err)
