"""A real ``iotpki serve`` in a subprocess on free ports, with its output collected line by line
and every wait on a condition (a generous bound, never a timed assertion)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from estserver import free_port

IOTPKI = [sys.executable, "-m", "iotpki.cli"]
BOUND = 120.0  # generous: the first start lints profiles and makes keys on a busy machine


def environment(**extra: str) -> dict[str, str]:
    """The test's environment without the caller's iotpki settings or terminal width."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOTPKI_")}
    env.pop("COLUMNS", None)
    return {**env, **extra}


def wait(done: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + BOUND
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {BOUND:.0f}s: {what}")
        time.sleep(0.05)


class Server:
    """A running ``iotpki serve`` whose stdout and stderr lines are collected as they come.

    One request process unless ``args`` name ``--workers``: a test's output does not depend on
    the CPUs of the machine it runs on.
    """

    def __init__(self, home: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.https_port, self.http_port = free_port(), free_port()
        command = [*IOTPKI, "--home", str(home), "serve"]
        command += ["--https-port", str(self.https_port), "--http-port", str(self.http_port)]
        if "--workers" not in args:
            command += ["--workers", "1"]
        self.process = subprocess.Popen(
            [*command, *args],
            env=env or environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        assert self.process.stdout is not None and self.process.stderr is not None
        self.readers = [
            threading.Thread(target=self._read, args=(self.process.stdout, self.out)),
            threading.Thread(target=self._read, args=(self.process.stderr, self.err)),
        ]
        for reader in self.readers:
            reader.start()

    @staticmethod
    def _read(stream: object, lines: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            lines.append(line.rstrip("\n"))

    def wait_serving(self) -> None:
        """Until the "serving" line (or the process ends, which fails the test)."""
        wait(
            lambda: (
                any(line.startswith("serving ") for line in self.out)
                or self.process.poll() is not None
            ),
            "the serving line",
        )
        assert self.process.poll() is None, "\n".join(self.out + self.err)

    def finish(self, *, stop: bool = True) -> int:
        """Stop it (SIGTERM) or let it end; the exit status, with every output line collected."""
        if stop and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        status = self.process.wait(timeout=BOUND)
        for reader in self.readers:
            reader.join(timeout=BOUND)
        return status
