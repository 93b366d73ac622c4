"""One device-ID rule (1-128 letters, digits and ``._:-``) on every path that accepts one.

Each path gets one input the rule forbids: markup (``<script>``, printable, so a loose check
let it through) or a trailing newline (which ``re.match`` with ``$`` accepts).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from starlette.testclient import TestClient
from typer.testing import CliRunner

from estkit import b64_csr, basic
from iotpki.agent.config import load_config
from iotpki.cli.main import app as cli
from iotpki.core.access import create_token
from iotpki.core.device_id import check_device_id, is_device_id
from iotpki.core.models import Role
from iotpki.errors import ConfigError, RequestError
from iotpki.protocols.acme.messages import parse_identifiers
from iotpki.protocols.acme.problems import AcmeProblem
from iotpki.server import Service, build_https_app
from iotpki.services.installation import Installation, open_installation
from iotpki.settings import load_settings

from conftest import ManualClock, device_csr, make_installation

SCRIPT = "<script>alert(1)</script>"
NEWLINE = "pump-7\n"
ENV = {"IOTPKI_PASSPHRASE": "test-passphrase"}


@pytest.fixture
def client(inst: Installation) -> Iterator[TestClient]:
    token, _ = create_token(
        inst.store, inst.authority.clock, role=Role.ADMIN, description="", actor="t"
    )
    with TestClient(
        build_https_app(Service(inst)),
        base_url="https://t",
        headers={"authorization": f"Bearer {token}"},
    ) as c:
        yield c


@pytest.mark.parametrize(
    "value", ["", "-lead", "a" * 129, SCRIPT, NEWLINE, "dev 1", "dév", "dev/1", "dev\x00"]
)
def test_the_rule_refuses(value: str) -> None:
    assert not is_device_id(value)
    with pytest.raises(RequestError):
        check_device_id(value)


@pytest.mark.parametrize("value", ["a", "pump-7", "A.b_c:d-9", "x" * 128])
def test_the_rule_accepts(value: str) -> None:
    assert check_device_id(value) == value


def test_api_device_registration(client: TestClient, inst: Installation) -> None:
    reply = client.post("/api/v1/devices", json={"device_id": SCRIPT})
    assert reply.status_code == 400, reply.text
    assert reply.json()["field"] == "device_id"
    with inst.store.transaction(readonly=True) as tx:
        assert tx.get_device(SCRIPT) is None


def test_api_enrollment_secret(client: TestClient) -> None:
    reply = client.post("/api/v1/devices/%3Cscript%3E/enrollment-secrets", json={})
    assert reply.status_code == 400, reply.text


def test_api_issue_with_a_device_id(client: TestClient) -> None:
    csr = device_csr(None).public_bytes(Encoding.PEM).decode()
    reply = client.post("/api/v1/certificates", json={"csr": csr, "device_id": NEWLINE})
    assert reply.status_code == 400, reply.text


def test_csr_common_name_as_device_id(client: TestClient) -> None:
    csr = device_csr(NEWLINE).public_bytes(Encoding.PEM).decode()
    reply = client.post("/api/v1/certificates", json={"csr": csr})
    assert reply.status_code == 400, reply.text


def test_scep_challenge(client: TestClient) -> None:
    reply = client.post("/api/v1/scep/challenges", json={"device_id": NEWLINE})
    assert reply.status_code == 400, reply.text


def test_est_secret_user_name(tmp_path: Path, clock: ManualClock) -> None:
    inst = make_installation(tmp_path / "home", clock=clock)
    try:
        with TestClient(build_https_app(Service(inst)), base_url="https://est.test") as c:
            reply = c.post(
                "/.well-known/est/simpleenroll",
                content=b64_csr(device_csr("dev-1")),
                headers={"Content-Type": "application/pkcs10", **basic(SCRIPT, "guess")},
            )
        assert reply.status_code == 401
        refusal = inst.store.latest_audit("est.authenticate.refused")
        assert refusal is not None and "not a valid device ID" in str(refusal.data)
    finally:
        inst.close()


def test_acme_permanent_identifier() -> None:
    with pytest.raises(AcmeProblem) as caught:
        parse_identifiers([{"type": "permanent-identifier", "value": NEWLINE}])
    assert caught.value.kind == "rejectedIdentifier"


def test_cli_device_register(tmp_path: Path) -> None:
    make_installation(tmp_path / "home").close()
    result = CliRunner().invoke(
        cli,
        ["--home", str(tmp_path / "home"), "est", "device", "register", SCRIPT],
        env=ENV,
    )
    assert result.exit_code != 0
    assert isinstance(result.exception, RequestError)
    inst = open_installation(load_settings(tmp_path / "home", ENV), lint=False)
    try:
        with inst.store.transaction(readonly=True) as tx:
            assert tx.get_device(SCRIPT) is None
    finally:
        inst.close()


def test_agent_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a valid device ID"):
        load_config(None, {}, server="https://ca.test", device_id=SCRIPT, state_dir=tmp_path)
