"""A fleet of agents through revocation and a root rollover, end to end with real peers: the
iotpki HTTPS server (EST), mosquitto, paho-mqtt over iotpki.net.tls, and the verifying subscriber.
Zero failed broker connections for devices in good standing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from iotpki.cli.demo_session import DemoOptions, run_demo

pytestmark = pytest.mark.interop


def test_fleet_survives_revocation_and_root_rollover() -> None:
    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").is_file():
        pytest.skip("mosquitto is not installed")
    progress: list[str] = []
    summary = run_demo(DemoOptions(devices=6, interval=0.1, timeout=300), progress.append)
    assert summary.enrolled == 6
    assert summary.failed_connections == 0
    assert summary.refused >= 1  # the revoked device's next connection
    assert summary.rejected["revoked"] >= 1  # and its messages on the open connection
    assert set(summary.rejected) == {"revoked"}
    assert summary.renewed == summary.adopted_new_root == summary.new_root_devices == 5
    assert summary.verified > 6 * 2
    assert any("old root retired" in line for line in progress)
