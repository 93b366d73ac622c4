"""``iotpki campaign`` from the command line (typer, in process): create, list, show, steer,
and refusals as one error line."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner, Result

from iotpki.cli.main import app
from iotpki.errors import IotpkiError

from conftest import device_csr, make_installation

ENV = {"IOTPKI_PASSPHRASE": "test-passphrase", "COLUMNS": "200"}


def _invoke(home: Path, *args: str) -> Result:
    return CliRunner().invoke(app, ["--home", str(home), *args], env=ENV)


def test_create_list_show_pause_resume_cancel(tmp_path: Path) -> None:
    home = tmp_path / "home"
    inst = make_installation(home)
    for n in range(3):
        inst.authority.issue(device_csr(f"plant-a-{n}"), profile="device", actor="test")
    inst.close()
    created = _invoke(
        home, "campaign", "create", "rekey", "--select", "device_prefix=plant-a- profile=device",
        "--deadline", "2d", "--max-rate", "30/h", "--key-type", "p384", "--revoke-after",
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    assert "3 certificates" in created.output
    listed = _invoke(home, "campaign", "list", "--json")
    assert listed.exit_code == 0, listed.output
    [row] = json.loads(listed.output)
    assert row["members"] == 3 and row["pending"] == 3 and row["status"] == "active"
    shown = _invoke(home, "campaign", "show", row["id"])
    assert shown.exit_code == 0 and "key p384" in shown.output and "plant-a-" in shown.output
    for command, status in (("pause", "paused"), ("resume", "active"), ("cancel", "cancelled")):
        done = _invoke(home, "campaign", command, row["id"])
        assert done.exit_code == 0 and status in done.output
    again = _invoke(home, "campaign", "resume", row["id"])
    assert isinstance(again.exception, IotpkiError)  # `iotpki` prints it as one error line
    assert "cancelled" in again.exception.message


def test_refusals_are_one_line(tmp_path: Path) -> None:
    home = tmp_path / "home"
    make_installation(home).close()
    for args in (
        ("--select", "colour=red", "--deadline", "1d"),
        ("--select", "ca=issuing", "--deadline", "1d"),  # nothing to replace
        ("--select", "ca=issuing", "--deadline", "1d", "--max-rate", "fast"),
        ("--select", "ca=issuing", "--deadline", "yesterday"),
    ):
        result = _invoke(home, "campaign", "create", "x", *args)
        assert isinstance(result.exception, IotpkiError), (args, result.exception)
