"""ACME with real clients against a real server: certbot (http-01) and lego (http-01 and
tls-alpn-01) register with EAB, obtain, renew and revoke; certificates verify with
``openssl verify`` and revoked ones answer ``revoked`` over OCSP."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from iotpki.core.campaigns import Campaigns
from iotpki.core.models import CertStatus, MemberState
from iotpki.net.asgi_tls import TLSExtensionProtocol
from iotpki.protocols.acme import eab
from iotpki.server import (
    Service,
    build_http_app,
    build_https_app,
    ensure_tls_identity,
    https_context,
)
from iotpki.services.installation import Installation
from iotpki.store.acme import SqlAcmeStore

from conftest import make_installation

pytestmark = pytest.mark.interop

_PEM = serialization.Encoding.PEM


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    inst: Installation
    directory: str
    ocsp: str
    files: Path
    http01_port: int
    tlsalpn_port: int

    def eab(self) -> tuple[str, str]:
        credential, key = eab.create(
            SqlAcmeStore(self.inst.store),
            now=self.inst.authority.clock.now(),
            actor="test",
            profiles=self.inst.settings.resolved_profiles(),
            tenant="interop",
        )
        return credential.key_id, key

    def verify(self, cert: Path) -> None:
        out = subprocess.run(
            ["openssl", "verify", "-CAfile", str(self.files / "root.pem"),
             "-untrusted", str(self.files / "issuing.pem"), str(cert)],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert out.returncode == 0 and ": OK" in out.stdout, out.stdout + out.stderr

    def ocsp_status(self, cert: Path) -> str:
        out = subprocess.run(
            ["openssl", "ocsp", "-sha1", "-issuer", str(self.files / "issuing.pem"),
             "-cert", str(cert), "-url", self.ocsp, "-CAfile", str(self.files / "chain.pem"),
             "-no_nonce"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert "Response verify OK" in out.stderr, out.stderr
        return out.stdout.split(f"{cert}: ", 1)[1].split()[0]

    def status(self, cert: Path) -> CertStatus:
        leaf = x509.load_pem_x509_certificate(cert.read_bytes())
        return self.inst.authority.get(format(leaf.serial_number, "x")).status


def _listener(app: object, port: int, **options: object) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",
        **options,  # type: ignore[arg-type]
    )
    server = uvicorn.Server(config)
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.02)
    return server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("acme")
    https_port, http_port = _free_port(), _free_port()
    http01_port, tlsalpn_port = _free_port(), _free_port()
    inst = make_installation(
        base / "home",
        public_base_url=f"http://127.0.0.1:{http_port}",
        egress_allow=["127.0.0.0/8"],  # certbot and lego answer challenges on loopback
        acme={
            "http01_port": http01_port,
            "tlsalpn01_port": tlsalpn_port,
            "resolve_override": ["*.localhost=127.0.0.1"],
            "validation_retry_delays": [0.5, 1.0, 2.0],
        },
    )
    service = Service(inst)
    key_path, cert_path = ensure_tls_identity(inst)
    tls = https_context(inst, key_path, cert_path)
    https = _listener(
        build_https_app(service),
        https_port,
        http=TLSExtensionProtocol,
        ssl_context_factory=lambda _config, _default: tls,
    )
    http = _listener(build_http_app(service), http_port, http="httptools")
    service.revocation.start()
    files = base / "files"
    files.mkdir()
    chain = inst.authority.chain("issuing")
    (files / "issuing.pem").write_bytes(chain[0].public_bytes(_PEM))
    (files / "root.pem").write_bytes(chain[1].public_bytes(_PEM))
    (files / "chain.pem").write_bytes(b"".join(c.public_bytes(_PEM) for c in chain))
    try:
        yield Server(
            inst,
            f"https://127.0.0.1:{https_port}/acme/directory",
            f"http://127.0.0.1:{http_port}/ocsp",
            files,
            http01_port,
            tlsalpn_port,
        )
    finally:
        https.should_exit = http.should_exit = True
        service.revocation.stop()
        inst.close()


def _wait_revoked_over_ocsp(server: Server, cert: Path) -> None:
    """OCSP answers from the revocation service; wait (bounded) until it has the revocation."""
    deadline = time.monotonic() + 120
    while server.ocsp_status(cert) != "revoked":
        assert time.monotonic() < deadline, "OCSP never answered revoked"
        time.sleep(0.3)


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=180, env=env, cwd=cwd)


def _certbot() -> str:
    path = Path(sys.executable).with_name("certbot")
    if path.exists():
        return str(path)
    found = shutil.which("certbot")
    if not found:
        pytest.skip("certbot is not installed")
    return found


def test_certbot_register_obtain_renew_revoke(server: Server, tmp_path: Path) -> None:
    key_id, hmac_key = server.eab()
    env = {**os.environ, "REQUESTS_CA_BUNDLE": str(server.files / "root.pem")}
    dirs = ["--config-dir", str(tmp_path / "c"), "--work-dir", str(tmp_path / "w"),
            "--logs-dir", str(tmp_path / "l"), "--server", server.directory,
            "--non-interactive"]  # fmt: skip
    name = "certbot.localhost"
    obtained = _run(
        [_certbot(), "certonly", *dirs, "--standalone", "--agree-tos", "-m", "ops@example.com",
         "--eab-kid", key_id, "--eab-hmac-key", hmac_key, "-d", name,
         "--preferred-challenges", "http", "--http-01-port", str(server.http01_port),
         "--http-01-address", "127.0.0.1"],
        env, tmp_path,
    )  # fmt: skip
    assert obtained.returncode == 0, obtained.stdout + obtained.stderr
    live = tmp_path / "c" / "live" / name
    first = (live / "cert.pem").resolve()
    server.verify(first)
    first_serial = x509.load_pem_x509_certificate(first.read_bytes()).serial_number

    renewed = _run(
        [_certbot(), "renew", *dirs, "--force-renewal", "--no-random-sleep-on-renew",
         "--cert-name", name],
        env, tmp_path,
    )  # fmt: skip
    assert renewed.returncode == 0, renewed.stdout + renewed.stderr
    second = (live / "cert.pem").resolve()
    assert x509.load_pem_x509_certificate(second.read_bytes()).serial_number != first_serial
    server.verify(second)

    revoked = _run(
        [_certbot(), "revoke", *dirs, "--cert-path", str(second), "--reason", "superseded",
         "--no-delete-after-revoke"],
        env, tmp_path,
    )  # fmt: skip
    assert revoked.returncode == 0, revoked.stdout + revoked.stderr
    assert server.status(second) is CertStatus.REVOKED
    _wait_revoked_over_ocsp(server, second)
    assert server.ocsp_status(first) == "good"


def test_lego_http01_renew_revoke_and_tls_alpn01(server: Server, tmp_path: Path) -> None:
    if not shutil.which("lego"):
        pytest.skip("lego is not installed")
    key_id, hmac_key = server.eab()
    env = {**os.environ, "LEGO_CA_CERTIFICATES": str(server.files / "root.pem")}
    common = ["lego", "--server", server.directory, "--email", "ops@example.com",
              "--accept-tos", "--path", str(tmp_path / "lego")]  # fmt: skip
    http01 = ["--http", "--http.port", f"127.0.0.1:{server.http01_port}"]
    name = "lego.localhost"
    run = _run([*common, "--eab", "--kid", key_id, "--hmac", hmac_key, "--domains", name,
                *http01, "run"], env, tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    cert = tmp_path / "lego" / "certificates" / f"{name}.crt"
    server.verify(cert)
    first_serial = x509.load_pem_x509_certificate(cert.read_bytes()).serial_number

    renew = _run([*common, "--domains", name, *http01, "renew", "--days", "3650",
                  "--no-random-sleep"], env, tmp_path)  # fmt: skip
    assert renew.returncode == 0, renew.stdout + renew.stderr
    assert x509.load_pem_x509_certificate(cert.read_bytes()).serial_number != first_serial
    server.verify(cert)

    kept = tmp_path / "renewed.pem"  # lego moves revoked certificates away
    kept.write_bytes(cert.read_bytes())
    revoke = _run([*common, "--domains", name, "revoke", "--keep"], env, tmp_path)
    assert revoke.returncode == 0, revoke.stdout + revoke.stderr
    assert server.status(kept) is CertStatus.REVOKED
    _wait_revoked_over_ocsp(server, kept)
    again = _run([*common, "--domains", name, "revoke", "--keep"], env, tmp_path)
    assert again.returncode != 0
    assert "urn:ietf:params:acme:error:alreadyRevoked" in again.stdout + again.stderr

    alpn_name = "alpn.localhost"
    alpn = _run([*common, "--domains", alpn_name, "--tls", "--tls.port",
                 f"127.0.0.1:{server.tlsalpn_port}", "run"], env, tmp_path)  # fmt: skip
    assert alpn.returncode == 0, alpn.stdout + alpn.stderr
    server.verify(tmp_path / "lego" / "certificates" / f"{alpn_name}.crt")
    actions = {e.action for e in server.inst.store.audit_events()}
    assert {"acme.account.created", "acme.authorization.valid", "acme.order.valid"} <= actions


def test_certbot_renews_inside_the_window_a_campaign_gives_it(
    server: Server, tmp_path: Path
) -> None:
    """certbot reads the renewal information (RFC 9773): not due on its own schedule, it renews
    once a rotation campaign's window for its certificate has passed, with ``replaces``, and the
    renewal counts as the member replaced."""
    key_id, hmac_key = server.eab()
    env = {**os.environ, "REQUESTS_CA_BUNDLE": str(server.files / "root.pem")}
    dirs = ["--config-dir", str(tmp_path / "c"), "--work-dir", str(tmp_path / "w"),
            "--logs-dir", str(tmp_path / "l"), "--server", server.directory,
            "--non-interactive"]  # fmt: skip
    name = "ari.localhost"
    obtained = _run(
        [_certbot(), "certonly", *dirs, "--standalone", "--agree-tos", "-m", "ops@example.com",
         "--eab-kid", key_id, "--eab-hmac-key", hmac_key, "-d", name,
         "--preferred-challenges", "http", "--http-01-port", str(server.http01_port),
         "--http-01-address", "127.0.0.1"],
        env, tmp_path,
    )  # fmt: skip
    assert obtained.returncode == 0, obtained.stdout + obtained.stderr
    live = tmp_path / "c" / "live" / name
    first = x509.load_pem_x509_certificate((live / "cert.pem").read_bytes())
    serial = format(first.serial_number, "x")
    campaigns = Campaigns(server.inst.authority)
    clock = server.inst.authority.clock
    campaign = campaigns.create(
        name="ari", select=f"serial={serial}", deadline=clock.now() + timedelta(seconds=20),
        actor="test",
    )  # fmt: skip
    window = campaigns.window(server.inst.authority.get(serial))
    assert window is not None
    deadline = time.monotonic() + 120
    while clock.now() <= window[1]:  # certbot renews at a random moment of the window
        assert time.monotonic() < deadline
        time.sleep(0.2)
    renewed = _run(
        [_certbot(), "renew", *dirs, "--no-random-sleep-on-renew", "--cert-name", name,
         "--http-01-port", str(server.http01_port), "--http-01-address", "127.0.0.1"],
        env, tmp_path,
    )  # fmt: skip
    assert renewed.returncode == 0, renewed.stdout + renewed.stderr
    second = x509.load_pem_x509_certificate((live / "cert.pem").read_bytes())
    assert second.serial_number != first.serial_number, renewed.stdout + renewed.stderr
    counts = campaigns.progress(campaign.campaign_id).counts
    assert counts[MemberState.REPLACED] == 1
