"""The first-start notice of ``iotpki serve`` and the README's "First steps" say the same."""

from __future__ import annotations

from pathlib import Path

import pytest

from iotpki.cli.serve import first_start_notice

README = Path(__file__).resolve().parents[2] / "README.md"


def _first_steps() -> str:
    text = README.read_text()
    start = text.index("## First steps")
    return text[start : text.index("\n## ", start + 1)]


def _commands(notice: str) -> list[str]:
    return [
        line.strip()
        for line in notice.splitlines()
        if line.strip().startswith(("iotpki ", "curl "))
    ]


def test_the_readme_gives_the_commands_the_first_start_prints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IOTPKI_HOME", str(tmp_path))  # the default home: no --home needed
    notice = first_start_notice(tmp_path, "127.0.0.1", 8443, 8080, "itk_example")
    commands = _commands(notice)
    assert len(commands) == 2  # fetch the root in PEM, trust it with curl
    steps = _first_steps()
    for command in commands:
        assert command in steps
    assert "http://127.0.0.1:8080/ca/root.crt" in notice and "/ca/root.crt" in steps
    assert "iotpki token create --role admin" in notice and "token create --role admin" in steps
    assert "  itk_example" in notice.splitlines()


def test_another_home_is_named_in_every_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IOTPKI_HOME", str(tmp_path / "elsewhere"))
    home = tmp_path / "my home"
    notice = first_start_notice(home, "0.0.0.0", 9443, 9080, "itk_example")
    iotpki_lines = [c for c in _commands(notice) if c.startswith("iotpki ")]
    assert iotpki_lines == [f"iotpki --home '{home}' ca show root --pem > root.pem"]
    assert "curl --cacert root.pem https://127.0.0.1:9443/.well-known/est/cacerts" in notice
    assert f"iotpki --home '{home}' token create --role admin" in notice
