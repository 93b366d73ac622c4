"""Real SCEP clients against a real listener: micromdm's scepclient (PKCSReq with a challenge
password, then RenewalReq) and certmonger's SCEP helper (PKCSReq, then a renewal it signs with
its certificate); every certificate passes ``openssl verify``."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from estserver import free_port
from iotpki.core.models import CertificateQuery
from iotpki.server import Service, build_http_app, scep_service
from iotpki.services.installation import Installation

from conftest import make_installation

pytestmark = pytest.mark.interop

CERTMONGER = "/usr/lib/certmonger/scep-submit"


class _ThreadServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class Running:
    """The SCEP URL, the installation and the files a client's verifier needs."""

    url: str
    inst: Installation
    root: Path
    chain: Path
    ra_fingerprint: str

    def challenge(self, device_id: str) -> str:
        secret, _ = scep_service(self.inst).create_challenge(device_id, actor="test")
        return secret

    def issued(self, device_id: str) -> list[str]:
        records = self.inst.authority.search(CertificateQuery(device_id=device_id))
        return sorted(r.serial for r in records)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Running]:
    inst = make_installation(tmp_path / "home", lint_background=False)  # real clock
    port = free_port()
    config = uvicorn.Config(
        build_http_app(Service(inst)),
        host="127.0.0.1",
        port=port,
        http="httptools",
        log_level="warning",
        lifespan="off",
    )
    listener = _ThreadServer(config)
    thread = threading.Thread(target=listener.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not listener.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    service = scep_service(inst)
    ra = service.registration_authorities("issuing")[0].certificate
    chain = inst.authority.chain("issuing")
    root, chain_file = tmp_path / "root.pem", tmp_path / "chain.pem"
    root.write_bytes(chain[-1].public_bytes(serialization.Encoding.PEM))
    chain_file.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain))
    fingerprint = hashlib.sha256(ra.public_bytes(serialization.Encoding.DER)).hexdigest()
    try:
        yield Running(f"http://127.0.0.1:{port}/scep", inst, root, chain_file, fingerprint)
    finally:
        listener.should_exit = True
        thread.join(timeout=10)
        inst.close()


def _verify(server: Running, cert: Path) -> x509.Certificate:
    done = subprocess.run(
        ["openssl", "verify", "-x509_strict", "-CAfile", str(server.root),
         "-untrusted", str(server.chain), str(cert)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return x509.load_pem_x509_certificates(cert.read_bytes())[0]


# -- micromdm scepclient ---------------------------------------------------------------------


def _scepclient(server: Running, workdir: Path, *args: str) -> str:
    done = subprocess.run(
        ["scepclient", "-server-url", server.url, "-private-key", "key.pem",
         "-ca-fingerprint", server.ra_fingerprint, *args],
        cwd=workdir, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


@pytest.mark.skipif(not shutil.which("scepclient"), reason="scep (micromdm) is not installed")
def test_scepclient_enrolls_and_renews(server: Running, tmp_path: Path) -> None:
    first = tmp_path / "enroll"  # scepclient reuses csr.pem/self.pem: one directory per run
    first.mkdir()
    _scepclient(server, first, "-cn", "scep-dev-1", "-challenge", server.challenge("scep-dev-1"))
    cert = _verify(server, first / "client.pem")
    assert cert.subject.rfc4514_string() == "CN=scep-dev-1"
    assert server.issued("scep-dev-1") == [format(cert.serial_number, "x")]

    second = tmp_path / "renew"
    second.mkdir()
    for name in ("key.pem", "client.pem"):
        (second / name).write_bytes((first / name).read_bytes())
    output = _scepclient(server, second, "-cn", "scep-dev-1", "-certificate", "client.pem")
    assert "server returned a certificate" in output
    renewed = _verify(server, second / "client.pem")
    assert renewed.serial_number != cert.serial_number
    assert len(server.issued("scep-dev-1")) == 2
    events = [e for e in server.inst.store.audit_events() if e.action == "certificate.renewed"]
    assert events[-1].data["renewed_from"] == format(cert.serial_number, "x")


@pytest.mark.skipif(not shutil.which("scepclient"), reason="scep (micromdm) is not installed")
def test_scepclient_with_a_wrong_challenge_gets_failure(server: Running, tmp_path: Path) -> None:
    server.challenge("scep-dev-2")
    done = subprocess.run(
        ["scepclient", "-server-url", server.url, "-private-key", "key.pem",
         "-ca-fingerprint", server.ra_fingerprint, "-cn", "scep-dev-2", "-challenge", "nope"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "badRequest" in done.stdout + done.stderr
    assert server.issued("scep-dev-2") == []


# -- certmonger ----------------------------------------------------------------------------


def _certmonger(server: Running, state: Path, script: str) -> str:
    """Run a getcert script under a private certmonger (its own socket, no D-Bus)."""
    env = dict(os.environ)
    for name in ("requests", "cas", "tmp", "local"):
        (state / name).mkdir(exist_ok=True)
    env |= {
        "CERTMONGER_REQUESTS_DIR": str(state / "requests"),
        "CERTMONGER_CAS_DIR": str(state / "cas"),
        "CERTMONGER_TMPDIR": str(state / "tmp"),
        "CERTMONGER_LOCAL_CA_DIR": str(state / "local"),
    }
    path = state / "script.sh"
    path.write_text("#!/bin/sh\nset -e\n" + script)
    path.chmod(0o700)
    done = subprocess.run(
        ["certmonger", "-n", "-L", "-P", str(state / "socket"), "-c", str(path)],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    output = "\n".join(
        line for line in (done.stdout + done.stderr).splitlines() if "Wrote to" not in line
    )
    assert done.returncode == 0, output
    return output


@pytest.mark.skipif(not os.path.exists(CERTMONGER), reason="certmonger is not installed")
def test_certmonger_enrolls_and_renews(server: Running, tmp_path: Path) -> None:
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    output = _certmonger(
        server,
        tmp_path,
        f"getcert add-scep-ca -c iotpki -u {server.url}\n"
        f"getcert request -c iotpki -f {cert_file} -k {key_file} -N CN=cm-dev-1 "
        f"-L {server.challenge('cm-dev-1')} -w -v\n"
        "getcert list\n",
    )
    assert "status: MONITORING" in output, output
    cert = _verify(server, cert_file)
    assert cert.subject.rfc4514_string() == "CN=cm-dev-1"

    output = _certmonger(
        server,
        tmp_path,
        "ID=$(getcert list | sed -n \"s/^Request ID '\\(.*\\)':$/\\1/p\" | head -1)\n"
        'getcert resubmit -i "$ID" -w -v\n'
        "getcert list\n",
    )
    assert "status: MONITORING" in output, output
    renewed = _verify(server, cert_file)
    assert renewed.serial_number != cert.serial_number
    assert len(server.issued("cm-dev-1")) == 2


def test_get_ca_cert_parses_with_openssl(server: Running, tmp_path: Path) -> None:
    import urllib.request

    with urllib.request.urlopen(f"{server.url}?operation=GetCACert", timeout=10) as response:
        assert response.headers["Content-Type"] == "application/x-x509-ca-ra-cert"
        body = response.read()
    (tmp_path / "ca.p7").write_bytes(body)
    done = subprocess.run(
        ["openssl", "pkcs7", "-inform", "DER", "-in", str(tmp_path / "ca.p7"), "-print_certs"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert done.stdout.count("BEGIN CERTIFICATE") == 3
    assert len(pkcs7.load_der_pkcs7_certificates(body)) == 3


def _certmonger_status(server: Running, state: Path, password: str, device_id: str) -> str:
    """Submit one request and wait (bounded: 60 s) until certmonger has the CA's answer."""
    cert_file, key_file = state / "cert.pem", state / "key.pem"
    output = _certmonger(
        server,
        state,
        f"getcert add-scep-ca -c iotpki -u {server.url}\n"
        f"getcert request -c iotpki -f {cert_file} -k {key_file} -N CN={device_id} "
        f"-L {password}\n"
        "i=0\n"
        "while [ $i -lt 600 ]; do\n"
        "  s=$(getcert list | sed -n 's/^\\s*status: //p')\n"
        '  case "$s" in MONITORING|CA_*|NEED_GUIDANCE) break ;; esac\n'
        "  i=$((i + 1)); sleep 0.1\n"
        "done\n"
        "getcert list\n",
    )
    return output


@pytest.mark.skipif(not os.path.exists(CERTMONGER), reason="certmonger is not installed")
def test_certmonger_with_a_wrong_challenge_is_rejected(server: Running, tmp_path: Path) -> None:
    """RFC 8894 section 3.3.2: a FAILURE CertRep carries an empty eContent of type data, so
    OpenSSL verifies it and certmonger reports a rejection, not an unreachable CA."""
    server.challenge("cm-dev-2")
    output = _certmonger_status(server, tmp_path, "wrong-password", "cm-dev-2")
    assert "status: CA_REJECTED" in output, output
    assert "CA_UNREACHABLE" not in output
    assert server.issued("cm-dev-2") == []


@pytest.mark.skipif(not os.path.exists(CERTMONGER), reason="certmonger is not installed")
def test_certmonger_waits_on_a_pending_request(server: Running, tmp_path: Path) -> None:
    """A PENDING CertRep verifies too: certmonger keeps waiting for the CA (CA_WORKING)."""
    secret, _ = scep_service(server.inst).create_challenge("cm-dev-3", actor="test", approval=True)
    output = _certmonger_status(server, tmp_path, secret, "cm-dev-3")
    assert "status: CA_WORKING" in output, output
    assert "CA_UNREACHABLE" not in output
    assert [t.status for t in scep_service(server.inst).transactions("pending")] == ["pending"]
