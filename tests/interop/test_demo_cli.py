"""``iotpki demo`` as a user runs it: whatever IOTPKI_* settings the caller's shell holds, the demo
and every process it starts (the CRL publish command, the broker refresh) use its own."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.interop


def test_demo_ignores_the_callers_passphrase_and_home(tmp_path: Path) -> None:
    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").is_file():
        pytest.skip("mosquitto is not installed")
    other_home = tmp_path / "users-home"
    env = {
        **os.environ,
        "IOTPKI_PASSPHRASE": "a passphrase of the user's own installation",
        "IOTPKI_HOME": str(other_home),
        "COLUMNS": "120",
    }
    done = subprocess.run(
        [sys.executable, "-m", "iotpki.cli", "demo", "-n", "2", "--interval", "0.1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "old root retired" in done.stdout
    assert "publish command" not in output  # the publish command never failed
    assert "what happened" in done.stdout  # the summary table's header row
    assert not other_home.exists()  # the user's home was never touched


def test_demo_via_mqtt_provisions_and_renews_through_the_broker() -> None:
    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").is_file():
        pytest.skip("mosquitto is not installed")
    demo = [sys.executable, "-m", "iotpki.cli", "demo", "-n", "3", "--interval", "0.1"]
    done = subprocess.run(
        [*demo, "--via", "mqtt"],
        env={**os.environ, "COLUMNS": "120"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "3 agents enrolled over MQTT" in done.stdout
    assert "2 agents renewed from the successor CA" in done.stdout  # over MQTT too
    assert "publish command" not in output
