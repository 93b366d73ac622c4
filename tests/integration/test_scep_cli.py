"""``iotpki scep``: challenge passwords and the approval queue from the command line."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from iotpki.cli.main import app
from iotpki.protocols.scep.client import read_cert_rep
from iotpki.protocols.scep.messages import PkiStatus
from iotpki.protocols.scep.responder import ScepResponder
from iotpki.server import scep_service
from iotpki.services.installation import Installation, open_installation
from iotpki.settings import load_settings
from scepkit import Device, rsa_key

from conftest import make_installation

ENV = {"IOTPKI_PASSPHRASE": "test-passphrase", "COLUMNS": "200"}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    make_installation(tmp_path / "home").close()
    return tmp_path / "home"


def _run(home: Path, *args: str) -> str:
    result = CliRunner().invoke(app, ["--home", str(home), *args], env=ENV)
    assert result.exit_code == 0, result.output
    return result.output


def _open(home: Path) -> Installation:
    return open_installation(load_settings(home, ENV), lint=False)


def test_challenge_create_prints_a_password_that_enrolls(home: Path) -> None:
    out = _run(home, "scep", "challenge", "create", "--device-id", "cli-dev", "--expires", "2h")
    password = out.strip().splitlines()[-1]
    assert len(password) == 32 and "cli-dev" in out
    inst = _open(home)
    try:
        service = scep_service(inst)
        ra = service.registration_authorities("issuing")[0].certificate
        device = Device("cli-dev", rsa_key(40))
        now = inst.authority.clock.now()
        answer = ScepResponder(service, inst.store).pki_operation(
            device.pkcs_req(password, ra, now), "t"
        )
        assert read_cert_rep(answer.body, ra, now).status is PkiStatus.SUCCESS
    finally:
        inst.close()


def test_pending_approve_and_reject(home: Path) -> None:
    inst = _open(home)
    try:
        service = scep_service(inst)
        ra = service.registration_authorities("issuing")[0].certificate
        responder = ScepResponder(service, inst.store)
        now = inst.authority.clock.now()
        first, second = Device("cli-a", rsa_key(41)), Device("cli-b", rsa_key(42))
        for device in (first, second):
            secret, _ = service.create_challenge(device.name, actor="t", approval=True)
            responder.pki_operation(device.pkcs_req(secret, ra, now), "t")
    finally:
        inst.close()
    listed = _run(home, "scep", "pending")
    assert "cli-a" in listed and "cli-b" in listed
    assert "issued certificate" in _run(home, "scep", "approve", first.transaction_id)
    assert "rejected" in _run(home, "scep", "reject", second.transaction_id)
    assert "cli-a" not in _run(home, "scep", "pending")


def test_bad_device_id_is_an_error(home: Path) -> None:
    result = CliRunner().invoke(
        app, ["--home", str(home), "scep", "challenge", "create", "--device-id", "bad id"], env=ENV
    )
    assert result.exit_code != 0
