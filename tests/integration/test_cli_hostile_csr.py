"""``iotpki issue`` with a hostile CSR: the project's error (``run`` prints it on one line and
exits 2), not a ValueError traceback; nothing issued."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from csrkit import HOSTILE
from iotpki.cli.main import app
from iotpki.errors import BadCSR
from iotpki.services.installation import open_installation
from iotpki.settings import load_settings

from conftest import make_installation

ENV = {"IOTPKI_PASSPHRASE": "test-passphrase", "COLUMNS": "200"}


@pytest.mark.parametrize("case", ["ec-point-off-curve", "ip-san-5-bytes", "empty-rdn"])
def test_issue_refuses_a_hostile_csr(tmp_path: Path, case: str) -> None:
    home = tmp_path / "home"
    make_installation(home).close()
    csr = tmp_path / "hostile.csr"
    csr.write_bytes(HOSTILE[case])
    result = CliRunner().invoke(
        app, ["--home", str(home), "issue", "--csr", str(csr), "--profile", "device"], env=ENV
    )
    assert isinstance(result.exception, BadCSR), result.exception
    assert result.exception.message.startswith("the CSR does not parse")
    inst = open_installation(load_settings(home, ENV), lint=False)
    try:
        assert inst.store.count_certificates() == 1  # the issuing CA's own certificate only
    finally:
        inst.close()
