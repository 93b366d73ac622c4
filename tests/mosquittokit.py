"""A real mosquitto broker for tests: started on a free 127.0.0.1 port with the configuration
``iotpki broker config`` writes, its clients, and a stop that waits for it."""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from iotpki.services.broker import BrokerSettings, write_config
from iotpki.services.installation import Installation

__all__ = ["Mosquitto", "free_port", "start_broker"]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Mosquitto:
    """A running mosquitto and the directory of its iotpki-written configuration."""

    process: subprocess.Popen[bytes]
    settings: BrokerSettings

    @property
    def port(self) -> int:
        return self.settings.port

    @property
    def log(self) -> Path:
        """The broker's log file (a pipe nobody reads would fill up and block the broker)."""
        return self.settings.path("mosquitto.log")

    def stop(self) -> str:
        """Stop the broker; its log."""
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return self.log.read_text(errors="replace")


def _wait_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mosquitto exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("mosquitto did not start listening")


def start_broker(
    inst: Installation, directory: Path, readers: tuple[str, ...] = (), port: int | None = None
) -> Mosquitto:
    """Write the broker configuration with iotpki and run mosquitto on it (on ``port``, or a
    free one)."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).is_file():
        pytest.skip("mosquitto is not installed")
    settings = BrokerSettings(
        directory=directory,
        port=port or free_port(),
        readers=readers,
        pid_file=directory / "pid",
        user=getpass.getuser(),  # files under the test's tmp_path are private to this user
    )
    settings = write_config(inst, settings)
    with settings.path("mosquitto.log").open("ab") as log:
        process = subprocess.Popen(
            [binary, "-c", str(settings.path("mosquitto.conf")), "-v"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    (directory / "pid").write_text(str(process.pid))
    _wait_listening(settings.port, process)
    return Mosquitto(process, settings)
