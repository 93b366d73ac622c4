"""``iotpki serve`` as a newcomer and an operator meet it, in a subprocess on free ports: the
first-start notice (and the commands it prints, run with curl), "serving" only once both
listeners answer, one clear line and exit status 2 for a taken port or a wrong passphrase,
one log line per event and an opt-in access log. Every wait is on a condition."""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from servekit import IOTPKI, Server, environment

pytestmark = pytest.mark.interop


@pytest.fixture
def server_factory() -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(home: Path, *args: str, env: dict[str, str] | None = None) -> Server:
        server = Server(home, *args, env=env)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.finish()


@pytest.fixture(scope="module")
def initialised_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home made by ``iotpki init`` (generated passphrase), shared by the tests below."""
    home = tmp_path_factory.mktemp("serve") / "home"
    init = [*IOTPKI, "--home", str(home), "init"]
    done = subprocess.run(init, env=environment(), capture_output=True)
    assert done.returncode == 0, done.stderr
    return home


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=30) as response:
        status: int = response.status
        return status


def _curl(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", *args], cwd=cwd, capture_output=True, text=True)


def test_first_start_tells_a_newcomer_everything_once(
    tmp_path: Path, server_factory: Callable[..., Server]
) -> None:
    home = tmp_path / "home"
    first = server_factory(home)
    first.wait_serving()
    # Both listeners answer as soon as "serving" is printed.
    assert _get(f"http://127.0.0.1:{first.http_port}/healthz") == 200
    text = "\n".join(first.out)
    assert f"lives in {home}" in text
    assert str(home / "iotpki.toml") in text
    # The trust anchor, fetched exactly as printed, makes curl trust the HTTPS listener.
    fetch = next(line.strip() for line in first.out if " ca show root --pem > root.pem" in line)
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"  # iotpki
    env = environment(PATH=path)
    done = subprocess.run(fetch, shell=True, cwd=tmp_path, env=env, capture_output=True)
    assert done.returncode == 0, done.stderr
    cacerts = next(line.strip() for line in first.out if line.strip().startswith("curl "))
    done = subprocess.run(shlex.split(cacerts), cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "cacerts.p7").stat().st_size > 0
    # The admin token shown once signs in to the dashboard.
    token = next(line.strip() for line in first.out if re.fullmatch(r"\s+itk_\S+", line))
    https = f"https://127.0.0.1:{first.https_port}"
    login = _curl(
        "--cacert", "root.pem", "-o", "/dev/null", "-w", "%{http_code}", "-c", "jar",
        "--data-urlencode", f"token={token}", f"{https}/ui/login", cwd=tmp_path,
    )  # fmt: skip
    assert login.stdout == "303", login.stderr
    overview = _curl("--cacert", "root.pem", "-b", "jar", "-w", "%{http_code}", f"{https}/",
                     "-o", "/dev/null", cwd=tmp_path)  # fmt: skip
    assert overview.stdout == "200"
    assert first.finish() == 0
    assert first.out[-1] == "stopped"

    again = server_factory(home)
    again.wait_serving()
    assert again.finish() == 0
    later = "\n".join(again.out + again.err)
    assert "First start" not in later
    assert "itk_" not in later
    assert "initialising" not in later
    assert again.out == [
        f"serving https://127.0.0.1:{again.https_port}/ and http://127.0.0.1:{again.http_port}/",
        "stopped",
    ]


def test_one_log_line_per_event_and_an_opt_in_access_log(
    initialised_home: Path, server_factory: Callable[..., Server]
) -> None:
    quiet = server_factory(initialised_home)
    quiet.wait_serving()
    for _ in range(2):
        assert _get(f"http://127.0.0.1:{quiet.http_port}/healthz") == 200
    assert quiet.finish() == 0
    assert not any("/healthz" in line for line in quiet.err)
    lines = [line for line in quiet.out + quiet.err if line.strip()]
    assert [line for line, n in Counter(lines).items() if n > 1] == []  # nothing said twice

    logged = server_factory(initialised_home, "--access-log")
    logged.wait_serving()
    for _ in range(3):
        assert _get(f"http://127.0.0.1:{logged.http_port}/healthz") == 200
    assert _get(f"http://127.0.0.1:{logged.http_port}/ca/root.crt") == 200
    assert logged.finish() == 0
    access = [line for line in logged.err if '"GET /' in line]
    assert len(access) == 4, logged.err
    assert sum('"GET /healthz HTTP/1.1" 200' in line for line in access) == 3


def test_a_taken_port_is_one_error_line_and_status_2(
    initialised_home: Path, server_factory: Callable[..., Server]
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        for which in ("--https-port", "--http-port"):
            server = server_factory(initialised_home, which, str(port))
            assert server.finish(stop=False) == 2
            assert server.err == [
                f"error: cannot listen on 127.0.0.1:{port}: Address already in use"
            ]
            assert not any(line.startswith("serving") for line in server.out)


def test_a_wrong_passphrase_is_one_error_line_and_status_2(
    initialised_home: Path, server_factory: Callable[..., Server]
) -> None:
    env = environment(IOTPKI_PASSPHRASE="not the passphrase")
    server = server_factory(initialised_home, env=env)
    assert server.finish(stop=False) == 2
    assert server.err == ["error: cannot unlock CA 'root': wrong passphrase or damaged key"]
    assert server.out == []
    with pytest.raises(OSError):  # it never listened
        socket.create_connection(("127.0.0.1", server.https_port), timeout=5).close()
