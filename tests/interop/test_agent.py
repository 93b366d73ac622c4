"""The device agent against a real iotpki HTTPS listener on 127.0.0.1: fingerprint bootstrap,
enrollment by secret and IDevID, renewal with rekey, expiry fallback, exit codes, trust refresh,
PKCS#11 keys (SoftHSM2) and the TLS-terminating reverse proxy mode (nginx)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from estkit import Manufacturer, write_identity
from estserver import RunningServer, free_port, https_server
from iotpki.agent import Agent, AgentConfig, ExitCode
from iotpki.agent.cli import execute
from iotpki.agent.client import EstClient, RenewalInfo
from iotpki.core.enrollment import Enrollment
from iotpki.core.models import KeyAlgorithm, RevocationReason
from iotpki.services.installation import Installation

from conftest import ManualClock, make_installation

pytestmark = pytest.mark.interop


class AgentTestClock:
    """The agent's view of the test's manual clock; sleeping returns at once."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock

    def now(self) -> datetime:
        return self.clock.now()

    def sleep(self, seconds: float, stop: threading.Event) -> bool:
        return stop.is_set()


@pytest.fixture
def world(
    tmp_path: Path, clock: ManualClock
) -> Iterator[tuple[Installation, Enrollment, Manufacturer, RunningServer]]:
    inst = make_installation(
        tmp_path / "home", clock=clock, lint_background=False, trusted_proxies=("127.0.0.1",)
    )
    enrollment = Enrollment(inst.authority)
    maker = Manufacturer.create()
    enrollment.add_bootstrap_ca("acme", maker.cert, enroll_policy="any", actor="test")
    with https_server(inst) as server:
        yield inst, enrollment, maker, server
    inst.close()


def _config(tmp_path: Path, server: RunningServer, name: str, **extra: object) -> AgentConfig:
    values: dict[str, object] = {
        "server": server.url,
        "device_id": name,
        "state_dir": tmp_path / f"agent-{name}",
        "ca_fingerprint": server.root_fingerprint,
        "timeout": 10.0,
    }
    values.update(extra)
    return AgentConfig(**values)  # type: ignore[arg-type]


def test_secret_enroll_renew_and_exit_codes(
    tmp_path: Path,
    world: tuple[Installation, Enrollment, Manufacturer, RunningServer],
    clock: ManualClock,
) -> None:
    inst, enrollment, _maker, server = world
    secret, _ = enrollment.create_secret("agent-1", actor="test")
    marker = tmp_path / "reloaded"
    config = _config(
        tmp_path,
        server,
        "agent-1",
        enrollment_secret=secret,
        post_renew_command=f"touch {marker}",
    )
    agent = Agent(config, clock=AgentTestClock(clock))
    assert execute("status", agent) is ExitCode.NOT_ENROLLED
    assert execute("enroll", agent) is ExitCode.OK
    first = agent.store.load()
    assert first is not None
    assert stat.S_IMODE(first.key_path.stat().st_mode) == 0o600
    assert first.certificate.subject.rfc4514_string() == "CN=agent-1"
    assert first.chain_path.read_text().count("BEGIN CERTIFICATE") == 2
    assert marker.exists()
    assert execute("status", agent) is ExitCode.OK

    # the real command line agrees (a subprocess, on the real clock)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "iotpki.agent",
            "status",
            "--server",
            server.url,
            "--device-id",
            "agent-1",
            "--state-dir",
            str(config.state_dir),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "enrolled: serial" in result.stdout

    # a new CA under the same root appears in cacerts and is accepted as an anchor
    inst.authority.create_issuing(
        "issuing-2",
        parent="root",
        common_name="iotpki Issuing CA 2",
        algorithm=KeyAlgorithm.P256,
        lifetime=timedelta(days=365),
        backend="file",
        actor="test",
    )
    marker.unlink()
    assert execute("renew", agent) is ExitCode.OK
    second = agent.store.load()
    assert second is not None
    assert second.certificate.serial_number != first.certificate.serial_number
    assert second.certificate.public_key() != first.certificate.public_key()
    assert marker.exists()
    assert len(agent.store.trust()) == 3

    # a used secret enrolls nothing, for a fresh agent too
    fresh = Agent(
        _config(tmp_path, server, "agent-1", enrollment_secret=secret, state_dir=tmp_path / "new")
    )
    assert execute("enroll", fresh) is ExitCode.REFUSED
    assert fresh.status().enrolled is False

    # revoked: renewal is refused; expired without IDevID: the agent says so
    inst.authority.revoke(
        format(second.certificate.serial_number, "x"),
        reason=RevocationReason.KEY_COMPROMISE,
        actor="test",
    )
    assert execute("renew", agent) is ExitCode.REFUSED
    clock.advance(timedelta(days=31))
    assert execute("status", agent) is ExitCode.EXPIRED
    assert execute("renew", agent) is ExitCode.EXPIRED
    clock.advance(timedelta(days=-31))


def test_idevid_enrollment_and_rebootstrap_when_expired(
    tmp_path: Path,
    world: tuple[Installation, Enrollment, Manufacturer, RunningServer],
    clock: ManualClock,
) -> None:
    _inst, _enrollment, maker, server = world
    key, idevid = maker.idevid("SN-AGENT-1")
    cert_path, key_path = write_identity(tmp_path / "factory", "idevid", key, idevid)
    config = _config(tmp_path, server, "SN-AGENT-1", idevid_cert=cert_path, idevid_key=key_path)
    agent = Agent(config, clock=AgentTestClock(clock))
    assert execute("enroll", agent) is ExitCode.OK
    first = agent.store.load()
    assert first is not None
    clock.advance(timedelta(days=31))
    assert execute("status", agent) is ExitCode.EXPIRED
    assert execute("renew", agent) is ExitCode.OK  # falls back to the IDevID
    assert execute("status", agent) is ExitCode.OK
    clock.advance(timedelta(days=-31))


def test_pending_and_unreachable(
    tmp_path: Path,
    world: tuple[Installation, Enrollment, Manufacturer, RunningServer],
    clock: ManualClock,
) -> None:
    _inst, enrollment, _maker, server = world
    secret, _ = enrollment.create_secret("agent-2", actor="test", approval=True)
    agent = Agent(_config(tmp_path, server, "agent-2", enrollment_secret=secret))
    assert execute("enroll", agent) is ExitCode.PENDING
    [request] = enrollment.list_approvals()
    enrollment.decide(request.request_id, approve=True, actor="operator")
    assert execute("enroll", agent) is ExitCode.OK
    gone = RunningServer(f"https://127.0.0.1:{free_port()}", 0, server.ca_file, "")
    lost = Agent(_config(tmp_path, gone, "agent-3", enrollment_secret="x", ca_fingerprint="ab"))
    assert execute("enroll", lost) is ExitCode.UNREACHABLE


def test_daemon_renews_on_schedule(
    tmp_path: Path,
    world: tuple[Installation, Enrollment, Manufacturer, RunningServer],
    clock: ManualClock,
) -> None:
    _inst, enrollment, _maker, server = world
    secret, _ = enrollment.create_secret("agent-4", actor="test")
    stop = threading.Event()
    serials: list[int] = []

    class Stepping(AgentTestClock):
        def sleep(self, seconds: float, stop_event: threading.Event) -> bool:
            identity = agent.store.load()
            assert identity is not None
            assert identity.certificate.not_valid_after_utc > self.clock.now()  # never expired
            serials.append(identity.certificate.serial_number)
            self.clock.advance(timedelta(seconds=seconds))
            if len(serials) >= 4:
                stop_event.set()
            return stop_event.is_set()

    agent = Agent(
        _config(tmp_path, server, "agent-4", enrollment_secret=secret, check_interval=1e9),
        clock=Stepping(clock),
    )
    assert agent.run(stop) is ExitCode.OK
    assert len(set(serials)) == 4  # enrolled, then renewed three times


@pytest.fixture
def softhsm(tmp_path: Path) -> tuple[str, str, str]:
    from softhsm import softhsm_token

    return softhsm_token(tmp_path)


def test_pkcs11_key_never_leaves_the_token(
    tmp_path: Path,
    world: tuple[Installation, Enrollment, Manufacturer, RunningServer],
    clock: ManualClock,
    softhsm: tuple[str, str, str],
) -> None:
    _inst, _enrollment, maker, server = world
    module, token, pin = softhsm
    key, idevid = maker.idevid("SN-HSM-1")
    cert_path, key_path = write_identity(tmp_path / "factory", "idevid", key, idevid)
    agent = Agent(
        _config(
            tmp_path,
            server,
            "SN-HSM-1",
            idevid_cert=cert_path,
            idevid_key=key_path,
            key_store="pkcs11",
            pkcs11_module=module,
            pkcs11_token=token,
            pkcs11_pin=pin,
        ),
        clock=AgentTestClock(clock),
    )
    assert execute("enroll", agent) is ExitCode.OK
    first = agent.store.load()
    assert first is not None
    assert first.key_uri is not None and first.key_uri.startswith("pkcs11:")
    assert not first.key_path.exists()
    assert execute("renew", agent) is ExitCode.OK  # rekeys in the token via the IDevID
    second = agent.store.load()
    assert second is not None and second.key_uri != first.key_uri
    assert second.certificate.public_key() != first.certificate.public_key()


_NGINX = """
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_client_certificate {clients};
        ssl_verify_client optional;
        location / {{
            proxy_pass https://127.0.0.1:{upstream};
            proxy_set_header X-SSL-Client-Cert $ssl_client_escaped_cert;
        }}
    }}
}}
"""


def test_behind_a_tls_terminating_proxy(
    tmp_path: Path,
    world: tuple[Installation, Enrollment, Manufacturer, RunningServer],
    clock: ManualClock,
) -> None:
    nginx = shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None
    )
    if nginx is None:
        pytest.skip("nginx is not installed")
    inst, _enrollment, maker, server = world
    directory = tmp_path / "nginx"
    directory.mkdir()
    clients = directory / "clients.pem"
    clients.write_bytes(
        maker.cert.public_bytes(serialization.Encoding.PEM)
        + server.ca_file.read_bytes()
        + inst.authority.chain("issuing")[0].public_bytes(serialization.Encoding.PEM)
    )
    port = free_port()
    conf = directory / "nginx.conf"
    conf.write_text(
        _NGINX.format(
            dir=directory,
            port=port,
            cert=inst.home / "tls" / "server.pem",
            key=inst.home / "tls" / "server.key",
            clients=clients,
            upstream=server.port,
        )
    )
    process = subprocess.Popen([nginx, "-c", str(conf), "-e", str(directory / "error.log")])
    try:
        _wait_for_port(port, process)
        proxy = RunningServer(
            f"https://127.0.0.1:{port}", port, server.ca_file, server.root_fingerprint
        )
        key, idevid = maker.idevid("SN-PROXY-1")
        cert_path, key_path = write_identity(tmp_path / "factory", "idevid", key, idevid)
        agent = Agent(
            _config(tmp_path, proxy, "SN-PROXY-1", idevid_cert=cert_path, idevid_key=key_path),
            clock=AgentTestClock(clock),
        )
        assert execute("enroll", agent) is ExitCode.OK
        first = agent.store.load()
        assert first is not None
        assert execute("renew", agent) is ExitCode.OK  # simplereenroll via the header
        second = agent.store.load()
        assert second is not None
        assert second.certificate.serial_number != first.certificate.serial_number
        events = [e for e in inst.store.audit_events() if e.action == "certificate.renewed"]
        assert events and events[-1].actor == "est:reenroll:SN-PROXY-1"
    finally:
        process.terminate()
        process.wait(timeout=10)


def _wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    import socket
    import time

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("nginx exited")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("nginx did not start")


def test_renewal_over_cmp_with_a_file_key(
    tmp_path: Path,
    world: tuple[Installation, Enrollment, Manufacturer, RunningServer],
    clock: ManualClock,
) -> None:
    inst, enrollment, _maker, server = world
    secret, _ = enrollment.create_secret("cmp-1", actor="test")
    agent = Agent(
        _config(tmp_path, server, "cmp-1", enrollment_secret=secret, renew_protocol="cmp"),
        clock=AgentTestClock(clock),
    )
    assert execute("enroll", agent) is ExitCode.OK
    first = agent.store.load()
    assert first is not None
    assert execute("renew", agent) is ExitCode.OK
    second = agent.store.load()
    assert second is not None
    assert second.certificate.public_key() != first.certificate.public_key()
    assert second.certificate.subject == first.certificate.subject
    record = inst.authority.get(format(second.certificate.serial_number, "x"))
    assert record.device_id == "cmp-1"
    # a revoked certificate cannot renew: the CA's rejection is the agent's "refused"
    inst.authority.revoke(record.serial, reason=RevocationReason.KEY_COMPROMISE, actor="test")
    assert execute("renew", agent) is ExitCode.REFUSED


def test_pkcs11_key_renews_over_cmp_without_an_idevid(
    tmp_path: Path,
    world: tuple[Installation, Enrollment, Manufacturer, RunningServer],
    clock: ManualClock,
    softhsm: tuple[str, str, str],
) -> None:
    """A token key cannot sign Python's TLS handshake; it signs a CMP kur."""
    _inst, enrollment, _maker, server = world
    module, token, pin = softhsm
    secret, _ = enrollment.create_secret("hsm-cmp-1", actor="test")
    agent = Agent(
        _config(
            tmp_path,
            server,
            "hsm-cmp-1",
            enrollment_secret=secret,
            key_store="pkcs11",
            pkcs11_module=module,
            pkcs11_token=token,
            pkcs11_pin=pin,
            renew_protocol="cmp",
        ),
        clock=AgentTestClock(clock),
    )
    assert execute("enroll", agent) is ExitCode.OK
    first = agent.store.load()
    assert first is not None and first.key_uri is not None
    assert execute("renew", agent) is ExitCode.OK  # no IDevID is configured
    second = agent.store.load()
    assert second is not None and second.key_uri is not None
    assert second.key_uri != first.key_uri and not second.key_path.exists()
    assert second.certificate.public_key() != first.certificate.public_key()


def test_the_agent_asks_for_renewal_information_again_only_after_retry_after(
    tmp_path: Path,
    world: tuple[Installation, Enrollment, Manufacturer, RunningServer],
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _inst, enrollment, _maker, server = world
    secret, _ = enrollment.create_secret("ari-1", actor="test")
    agent = Agent(
        _config(tmp_path, server, "ari-1", enrollment_secret=secret), clock=AgentTestClock(clock)
    )
    agent.enroll()
    asked: list[RenewalInfo | None] = []
    original = EstClient.renewal_window

    def counting(self: EstClient, certificate: x509.Certificate) -> RenewalInfo | None:
        info = original(self, certificate)
        asked.append(info)
        return info

    monkeypatch.setattr(EstClient, "renewal_window", counting)
    agent.step()
    assert len(asked) == 1 and asked[0] is not None and asked[0].retry_after == 21600
    clock.advance(timedelta(hours=1))
    agent.step()  # within the six hours the server asked for: no new question
    assert len(asked) == 1
    clock.advance(timedelta(hours=6))
    agent.step()
    assert len(asked) == 2
