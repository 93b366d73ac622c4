"""The channel's commands through the real CLI: broker config and refresh, CA rollover, retire."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography import x509
from typer.testing import CliRunner

from iotpki.cli.main import app


def _run(home: Path, *args: str) -> str:
    result = CliRunner().invoke(app, ["--home", str(home), *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_broker_config_then_rollover_then_refresh(tmp_path: Path) -> None:
    home, broker = tmp_path / "home", tmp_path / "broker"
    _run(home, "init")
    out = _run(home, "broker", "config", "--dir", str(broker), "--reader", "verifier")
    assert "publish_command" in out and "broker refresh" in out
    conf = (broker / "mosquitto.conf").read_text()
    for line in ("require_certificate true", "use_identity_as_username true", "crlfile"):
        assert line in conf
    assert "user verifier" in (broker / "acl").read_text()
    assert oct((broker / "broker.key").stat().st_mode & 0o777) == "0o600"
    assert len(x509.load_pem_x509_certificates((broker / "ca.pem").read_bytes())) == 2

    _run(home, "ca", "rollover", "root", "--new", "root-g2", "--overlap", "7d")
    _run(home, "broker", "refresh", "--dir", str(broker))
    trust = x509.load_pem_x509_certificates((broker / "ca.pem").read_bytes())
    assert sum(1 for c in trust if c.issuer == c.subject) == 2  # both roots during the overlap
    chain = x509.load_pem_x509_certificates((broker / "broker.pem").read_bytes())
    assert len(chain) == 3  # leaf, successor issuing CA, new-with-old cross-certificate
    assert "(root-g2)" in chain[1].subject.rfc4514_string()

    refused = CliRunner().invoke(app, ["--home", str(home), "ca", "retire", "root"])
    assert refused.exit_code != 0  # the overlap is still running
    _run(home, "ca", "retire", "root", "--force")
    _run(home, "broker", "refresh", "--dir", str(broker))
    trust = x509.load_pem_x509_certificates((broker / "ca.pem").read_bytes())
    assert sum(1 for c in trust if c.issuer == c.subject) == 1


def test_the_broker_key_is_never_readable_by_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, broker = tmp_path / "home", tmp_path / "broker"
    _run(home, "init")
    modes: dict[str, int] = {}
    real_replace = os.replace

    def spy(src: str, dst: Path) -> None:
        modes[Path(dst).name] = os.stat(src).st_mode & 0o777
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    _run(home, "broker", "config", "--dir", str(broker), "--reader", "verifier")
    assert modes["broker.key"] == 0o600  # already private when it takes the key's name
