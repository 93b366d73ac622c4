"""Secrets at rest (issue 13): every secret made through the real paths (SCEP challenge, EST
one-time secret, API token, dashboard password) and then used is absent, in plain text, from
the SQLite database file and its write-ahead log, before and after a checkpoint."""

from __future__ import annotations

from pathlib import Path

from starlette.testclient import TestClient
from typer.testing import CliRunner

from estkit import b64_csr, basic
from iotpki.cli.main import app as cli
from iotpki.core.access import create_token
from iotpki.core.models import Role
from iotpki.protocols.scep.client import issuer_and_serial
from iotpki.protocols.scep.messages import MessageType, PkiStatus
from iotpki.server import Service, build_https_app
from scepapp import Scep, running_scep
from scepkit import Device, rsa_key

from conftest import ManualClock, device_csr


def _database_files(home: Path) -> dict[str, bytes]:
    files = {p.name: p.read_bytes() for p in home.glob("*.db*") if p.is_file()}
    assert any(name.endswith(".db") for name in files), sorted(files)
    return files


def _assert_absent(home: Path, secrets: list[str]) -> None:
    for name, data in _database_files(home).items():
        for secret in secrets:
            assert secret.encode() not in data, f"a secret is in {name} in plain text"


def _scep_secrets(scep: Scep, api: TestClient, admin: dict[str, str]) -> list[str]:
    """A challenge that enrolls at once, and one that waits for an operator's approval."""
    made = []
    for device_id, approval in (("rest-1", False), ("rest-2", True)):
        body = {"device_id": device_id, "approval": approval}
        response = api.post("/api/v1/scep/challenges", json=body, headers=admin)
        assert response.status_code == 201, response.text
        made.append(response.json()["challenge_password"])
    first, second = Device("rest-1", rsa_key(80)), Device("rest-2", rsa_key(81))
    now = scep.clock.now()
    assert scep.post(first.pkcs_req(made[0], scep.ra, now)).status is PkiStatus.SUCCESS
    assert scep.post(second.pkcs_req(made[1], scep.ra, now)).status is PkiStatus.PENDING
    approve = f"/api/v1/scep/transactions/issuing/{second.transaction_id}/approve"
    assert api.post(approve, headers=admin).status_code == 200
    poll = issuer_and_serial(scep.chain[0].subject, 1)
    rep = scep.post(second.message(MessageType.CERT_POLL, poll, scep.ra, scep.clock.now()))
    assert rep.status is PkiStatus.SUCCESS
    return made


def _est_secret(api: TestClient, admin: dict[str, str]) -> str:
    response = api.post("/api/v1/devices/rest-3/enrollment-secrets", json={}, headers=admin)
    assert response.status_code == 201, response.text
    secret: str = response.json()["secret"]
    enrolled = api.post(
        "/.well-known/est/simpleenroll",
        content=b64_csr(device_csr("rest-3")),
        headers={"Content-Type": "application/pkcs10", **basic("rest-3", secret)},
    )
    assert enrolled.status_code == 200, enrolled.text
    return secret


def _api_token(api: TestClient, admin: dict[str, str]) -> str:
    response = api.post("/api/v1/tokens", json={"role": "operator"}, headers=admin)
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    assert api.get("/api/v1/cas", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    return token.split("_", 2)[2]  # the secret part (it may hold "_"); prefix and ID are not


def _dashboard_password(home: Path, api: TestClient) -> str:
    password = "correct-horse-battery-staple"
    result = CliRunner().invoke(
        cli,
        [
            "--home",
            str(home),
            "user",
            "create",
            "rest-admin",
            "--role",
            "admin",
            "--password-stdin",
        ],
        env={"IOTPKI_PASSPHRASE": "test-passphrase"},
        input=password + "\n",
    )
    assert result.exit_code == 0, result.output
    form = {"username": "rest-admin", "password": password, "next": "/"}
    signed_in = api.post("/ui/login", data=form, follow_redirects=False)
    assert signed_in.status_code == 303, signed_in.text
    return password


def test_no_secret_reaches_the_database_or_its_log(tmp_path: Path, clock: ManualClock) -> None:
    home = tmp_path / "home"
    with running_scep(home, clock) as scep:
        admin_token, _ = create_token(
            scep.inst.store, scep.inst.authority.clock, role=Role.ADMIN, description="", actor="t"
        )
        admin = {"Authorization": f"Bearer {admin_token}"}
        with TestClient(
            build_https_app(Service(scep.inst)), base_url="https://t", client=("127.0.0.1", 4321)
        ) as api:
            secrets = [
                admin_token.rsplit("_", 1)[1],
                *_scep_secrets(scep, api, admin),
                _est_secret(api, admin),
                _api_token(api, admin),
                _dashboard_password(home, api),
            ]
        assert any(name.endswith("-wal") for name in _database_files(home))
        _assert_absent(home, secrets)  # the log not yet checkpointed
    _assert_absent(home, secrets)  # closed: checkpointed into the database file
