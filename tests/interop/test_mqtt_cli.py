"""Provisioning over MQTT as an operator sets it up: the ``iotpki mqtt`` and ``broker``
commands, mosquitto on the written configuration, ``iotpki serve`` with ``[mqtt] broker_url``,
and ``iotpki-agent enroll --via mqtts://``."""

from __future__ import annotations

import getpass
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mosquittokit import free_port
from servekit import IOTPKI, Server, environment, wait

pytestmark = pytest.mark.interop

AGENT = [sys.executable, "-m", "iotpki.agent"]


def _run(*args: str) -> str:
    done = subprocess.run(args, env=environment(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_serve_provisions_over_mqtt_for_the_agent(tmp_path: Path) -> None:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).is_file():
        pytest.skip("mosquitto is not installed")
    home, broker_dir, batch = tmp_path / "home", tmp_path / "broker", tmp_path / "batch"
    iotpki = [*IOTPKI, "--home", str(home)]
    _run(*iotpki, "init")
    _run(*iotpki, "ca", "create", "claims", "--parent", "root")
    out = _run(
        *iotpki, "mqtt", "claim-ca", "add", "line-a", "--ca", "claims",
        "--device-pattern", "dev-[0-9]+",
    )  # fmt: skip
    assert "claim CA line-a" in out
    assert "line-a" in _run(*iotpki, "mqtt", "claim-ca", "list")
    _run(*iotpki, "mqtt", "claim", "issue", "batch-1", "--ca", "claims", "--out", str(batch))
    port = free_port()
    _run(
        *iotpki, "broker", "config", "--dir", str(broker_dir), "--port", str(port),
        "--user", getpass.getuser(),
    )  # fmt: skip
    assert (broker_dir / "provisioner.pem").is_file()
    settings = home / "iotpki.toml"
    settings.write_text(
        settings.read_text()
        + f'\n[mqtt]\nbroker_url = "mqtts://127.0.0.1:{port}"\nclient_dir = "{broker_dir}"\n'
    )
    with (broker_dir / "mosquitto.log").open("ab") as log:
        broker = subprocess.Popen(
            [binary, "-c", str(broker_dir / "mosquitto.conf")], stdout=log, stderr=log
        )
    server = Server(home)
    try:
        server.wait_serving()
        wait(
            lambda: any("connected to the broker" in line for line in server.err + server.out),
            "the provisioning service's connection",
        )
        agent_toml = tmp_path / "agent.toml"
        agent_toml.write_text(
            f'trust_bundle = "{broker_dir / "ca.pem"}"\n'
            f'claim_cert = "{batch / "claim.pem"}"\nclaim_key = "{batch / "claim.key"}"\n'
        )
        agent = [
            *AGENT, "--config", str(agent_toml), "--via", f"mqtts://127.0.0.1:{port}",
            "--device-id", "dev-7", "--state-dir", str(tmp_path / "agent"),
        ]  # fmt: skip
        enrolled = subprocess.run(
            [agent[0], *agent[1:3], "enroll", *agent[3:]],
            env=environment(), capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert enrolled.returncode == 0, enrolled.stdout + enrolled.stderr
        status = subprocess.run(
            [agent[0], *agent[1:3], "status", *agent[3:]],
            env=environment(), capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert status.returncode == 0 and "enrolled: serial" in status.stdout
    finally:
        server.finish()
        broker.terminate()
        broker.wait(timeout=30)
    listing = _run(*iotpki, "cert", "list", "--json")
    assert '"dev-7"' in listing
