"""``iotpki report`` and ``iotpki user create`` from the command line (typer, in process)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from iotpki.cli.main import app
from iotpki.monitoring.service import Monitor
from iotpki.services.installation import Installation, open_installation
from iotpki.settings import load_settings
from iotpki.web.session import verify_password

from conftest import device_csr, make_installation

ENV = {"IOTPKI_PASSPHRASE": "test-passphrase", "COLUMNS": "200"}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    inst = make_installation(tmp_path / "home")
    inst.authority.issue(device_csr("meter-1"), profile="device", actor="test")
    inst.close()
    return tmp_path / "home"


def _invoke(home: Path, *args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(app, ["--home", str(home), *args], env=ENV, input=stdin)


def _open(home: Path) -> Installation:
    return open_installation(load_settings(home, ENV), lint=False)


def test_report_as_json_on_stdout(home: Path) -> None:
    result = _invoke(home, "report", "--format", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["inventory"]["by_status"]["valid"] >= 1
    assert report["audit_chain"]["ok"] is True
    assert report["key_algorithms"]["p256"] >= 1


def test_report_as_self_contained_html_file(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    result = _invoke(home, "report", "--out", str(out))
    assert result.exit_code == 0, result.output
    page = out.read_text()
    assert page.startswith("<!doctype html>") and "<svg" in page
    assert "<script" not in page and 'src="http' not in page and "<link" not in page
    inst = _open(home)
    try:
        assert list(inst.store.audit_events())[-1].action == "report.generated"
    finally:
        inst.close()


def test_report_refuses_an_unknown_format(home: Path) -> None:
    assert _invoke(home, "report", "--format", "pdf").exit_code == 2


def test_user_create_from_stdin_then_sign_in_works(home: Path) -> None:
    result = _invoke(
        home,
        "user",
        "create",
        "alice",
        "--role",
        "auditor",
        "--password-stdin",
        stdin="s3cret-Pass!x\n",
    )
    assert result.exit_code == 0, result.output
    inst = _open(home)
    try:
        user = Monitor(inst).store.get_user("alice")
        assert user is not None and user[0] == "auditor" and not user[2]
        assert verify_password("s3cret-Pass!x", user[1])
        assert list(inst.store.audit_events())[-1].action == "user.created"
    finally:
        inst.close()


def test_user_create_prompts_twice(home: Path) -> None:
    result = _invoke(
        home,
        "user",
        "create",
        "bob",
        "--role",
        "operator",
        stdin="long-password-1\nlong-password-1\n",
    )
    assert result.exit_code == 0, result.output
    assert "bob (operator) created" in result.output


@pytest.mark.parametrize(
    ("args", "stdin"),
    [
        (["carol", "--role", "reporter"], "long-enough-password\n"),  # not a dashboard role
        (["carol", "--role", "root"], "long-enough-password\n"),
        (["carol", "--role", "admin"], "short\n"),
        (["../etc", "--role", "admin"], "long-enough-password\n"),
        (["<script>", "--role", "admin"], "long-enough-password\n"),
    ],
)
def test_user_create_refuses_bad_input(home: Path, args: list[str], stdin: str) -> None:
    result = _invoke(home, "user", "create", *args, "--password-stdin", stdin=stdin)
    assert result.exit_code != 0
    inst = _open(home)
    try:
        assert Monitor(inst).store.get_user(args[0]) is None
    finally:
        inst.close()
