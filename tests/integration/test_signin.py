"""Dashboard sign-in throttling, server-side sessions and taking API tokens back.

The clock is the installation's manual clock: back-off ends when the test advances it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from iotpki.cli.main import app as cli
from iotpki.core import access
from iotpki.core.models import Role
from iotpki.server import Service, build_https_app
from iotpki.services.installation import Installation, open_installation
from iotpki.settings import load_settings
from iotpki.web.session import COOKIE, hash_password

from conftest import ManualClock, make_installation

PASSWORD = "correct horse battery"
ENV = {"IOTPKI_PASSPHRASE": "test-passphrase", "COLUMNS": "200"}


class Dash:
    """The HTTPS app of one installation, with an admin token and a user alice."""

    def __init__(self, inst: Installation) -> None:
        self.inst = inst
        self.app = build_https_app(Service(inst))
        self.admin, self.admin_record = access.create_token(
            inst.store, inst.authority.clock, role=Role.ADMIN, description="admin", actor="t"
        )
        access.put_user(
            inst.store,
            inst.authority.clock,
            "alice",
            Role.AUDITOR,
            hash_password(PASSWORD),
            actor="t",
        )

    def client(self, source: str = "192.0.2.1") -> TestClient:
        return TestClient(
            self.app, base_url="https://testserver", follow_redirects=False, client=(source, 1)
        )

    def password(self, client: TestClient, password: str, user: str = "alice") -> httpx.Response:
        return client.post("/ui/login", data={"username": user, "password": password})

    def signed_in(self, client: TestClient) -> bool:
        return client.get("/ui/audit").status_code == 200

    def actions(self) -> list[str]:
        return [e.action for e in self.inst.store.audit_events()]

    def api(self, method: str, path: str, token: str) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="https://t") as c:
                return await c.request(method, path, headers={"authorization": f"Bearer {token}"})

        return asyncio.run(go())


@pytest.fixture
def dash(inst: Installation) -> Iterator[Dash]:
    yield Dash(inst)


# -- throttling -----------------------------------------------------------------------------------


def test_thirty_wrong_passwords_then_the_right_one_is_refused(
    dash: Dash, clock: ManualClock
) -> None:
    client = dash.client()
    codes = [dash.password(client, f"wrong-{i}").status_code for i in range(30)]
    assert codes[:5] == [401] * 5 and set(codes[5:]) <= {401, 429} and 429 in codes
    refused = dash.password(client, PASSWORD)
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert not dash.signed_in(client)
    actions = dash.actions()
    assert "ui.login.backoff" in actions and "ui.login.throttled" in actions
    clock.advance(timedelta(minutes=16))  # past the cap
    assert dash.password(client, PASSWORD).status_code == 303
    assert dash.signed_in(client)


def test_back_off_grows_exponentially_and_is_capped(dash: Dash, clock: ManualClock) -> None:
    client = dash.client()
    for i in range(5):
        assert dash.password(client, f"wrong-{i}").status_code == 401
    waits = []
    for i in range(14):
        assert dash.password(client, f"wrong-{i}").status_code == 401  # counted, blocks
        blocked = dash.password(client, f"wrong-{i}")
        assert blocked.status_code == 429
        wait = int(blocked.headers["retry-after"])
        waits.append(wait)
        clock.advance(timedelta(seconds=wait))
    assert waits[:4] == [2, 3, 5, 9]  # 1, 2, 4, 8 s (+1 rounding up)
    assert max(waits) == 15 * 60 + 1


def test_the_account_is_throttled_from_any_source(dash: Dash) -> None:
    for i in range(6):
        dash.password(dash.client(f"198.51.100.{i}"), "wrong")
    assert dash.password(dash.client("203.0.113.9"), PASSWORD).status_code == 429


def test_a_source_is_throttled_across_accounts(dash: Dash) -> None:
    client = dash.client("198.51.100.7")
    for i in range(21):  # every guess at a different account name
        dash.password(client, "wrong", user=f"user{i}")
    assert dash.password(client, PASSWORD).status_code == 429
    assert dash.password(dash.client("198.51.100.8"), PASSWORD).status_code == 303


def test_throttle_and_sessions_are_shared_through_the_database(
    any_inst: Installation, clock: ManualClock
) -> None:
    """A second replica (its own app and installation on the same database) sees the back-off
    and the sessions, SQLite and PostgreSQL alike."""
    dash = Dash(any_inst)
    signed = dash.client("192.0.2.50")
    assert dash.password(signed, PASSWORD).status_code == 303
    for i in range(6):
        dash.password(dash.client(), f"wrong-{i}")
    other = open_installation(any_inst.settings, lint=False, clock=clock)
    try:
        replica = TestClient(
            build_https_app(Service(other)), base_url="https://testserver", client=("192.0.2.99", 1)
        )
        assert dash.password(replica, PASSWORD).status_code == 429
        replica.cookies.set(COOKIE, signed.cookies[COOKIE])
        assert dash.signed_in(replica)
        access.disable_user(other.store, clock, "alice", actor="t")
        assert not dash.signed_in(signed)
    finally:
        other.close()


def test_a_token_guess_is_throttled_too(dash: Dash) -> None:
    client = dash.client()
    token_id = dash.admin_record.token_id
    for _ in range(6):
        client.post("/ui/login", data={"token": f"itk_{token_id}_guess"})
    assert client.post("/ui/login", data={"token": dash.admin}).status_code == 429


# -- server-side sessions -------------------------------------------------------------------------


def _csrf(client: TestClient) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', client.get("/").text)
    assert match
    return match.group(1)


def test_logout_ends_the_session_even_for_a_kept_cookie(dash: Dash) -> None:
    client = dash.client()
    assert client.post("/ui/login", data={"token": dash.admin}).status_code == 303
    cookie = client.cookies[COOKIE]
    assert client.post("/ui/logout", data={"csrf": _csrf(client)}).status_code == 303
    replay = dash.client()
    replay.cookies.set(COOKIE, cookie)
    assert not dash.signed_in(replay)
    assert "ui.logout" in dash.actions()


def test_revoking_the_token_ends_its_sessions(dash: Dash) -> None:
    token, record = access.create_token(
        dash.inst.store, dash.inst.authority.clock, role=Role.AUDITOR, description="", actor="t"
    )
    client = dash.client()
    assert client.post("/ui/login", data={"token": token}).status_code == 303
    assert dash.signed_in(client)
    access.revoke_token(dash.inst.store, dash.inst.authority.clock, record.token_id, actor="t")
    assert not dash.signed_in(client)


def test_disabling_the_user_ends_its_sessions(dash: Dash) -> None:
    client = dash.client()
    assert dash.password(client, PASSWORD).status_code == 303
    assert dash.signed_in(client)
    access.disable_user(dash.inst.store, dash.inst.authority.clock, "alice", actor="t")
    assert not dash.signed_in(client)
    assert dash.password(dash.client("192.0.2.2"), PASSWORD).status_code == 401


def test_changing_the_password_ends_its_sessions(dash: Dash) -> None:
    client = dash.client()
    assert dash.password(client, PASSWORD).status_code == 303
    access.put_user(
        dash.inst.store,
        dash.inst.authority.clock,
        "alice",
        Role.AUDITOR,
        hash_password("another long password"),
        actor="t",
    )
    assert not dash.signed_in(client)


def test_sessions_expire_and_forged_ids_are_refused(dash: Dash, clock: ManualClock) -> None:
    client = dash.client()
    assert dash.password(client, PASSWORD).status_code == 303
    clock.advance(timedelta(hours=8, seconds=1))
    assert not dash.signed_in(client)
    forged = dash.client()
    forged.cookies.set(COOKIE, "x" * 43)
    assert not dash.signed_in(forged)


def test_only_the_session_ids_hash_is_stored(dash: Dash) -> None:
    client = dash.client()
    dash.password(client, PASSWORD)
    cookie = client.cookies[COOKIE]
    database = dash.inst.settings.home / "iotpki.db"
    assert database.exists()
    for path in database.parent.glob("iotpki.db*"):
        assert cookie.encode() not in path.read_bytes()


# -- listing and revoking API tokens --------------------------------------------------------------


def test_api_lists_and_revokes_tokens(dash: Dash) -> None:
    victim, record = access.create_token(
        dash.inst.store, dash.inst.authority.clock, role=Role.OPERATOR, description="ci", actor="t"
    )
    listed = dash.api("GET", "/api/v1/tokens", dash.admin)
    assert listed.status_code == 200
    items = {i["token_id"]: i for i in listed.json()["items"]}
    assert items[record.token_id] == {
        "token_id": record.token_id,
        "description": "ci",
        "role": "operator",
        "created_at": record.created_at.isoformat(),
        "expires_at": None,
        "revoked": False,
    }
    assert victim not in listed.text and record.secret_hash not in listed.text
    assert dash.api("GET", "/api/v1/cas", victim).status_code == 200
    assert dash.api("GET", "/api/v1/tokens", victim).status_code == 403
    assert (
        dash.api("DELETE", f"/api/v1/tokens/{dash.admin_record.token_id}", victim).status_code
        == 403
    )
    revoked = dash.api("DELETE", f"/api/v1/tokens/{record.token_id}", dash.admin)
    assert revoked.status_code == 200 and revoked.json()["revoked"] is True
    assert dash.api("GET", "/api/v1/cas", victim).status_code == 401
    assert dash.api("DELETE", "/api/v1/tokens/0000", dash.admin).status_code == 404
    event = dash.inst.store.latest_audit("token.revoked")
    assert event is not None and event.target == record.token_id
    assert event.actor == f"api:{dash.admin_record.token_id}"


def test_cli_lists_and_revokes_tokens(tmp_path: Path) -> None:
    home = tmp_path / "home"
    inst = make_installation(home)
    token, record = access.create_token(
        inst.store, inst.authority.clock, role=Role.AUDITOR, description="laptop", actor="t"
    )
    inst.close()

    def run(*args: str) -> str:
        result = CliRunner().invoke(cli, ["--home", str(home), *args], env=ENV)
        assert result.exit_code == 0, result.output
        return result.output

    listing = run("token", "list")
    assert record.token_id in listing and "laptop" in listing and "auditor" in listing
    assert token not in listing
    assert "revoked" in run("token", "revoke", record.token_id)
    row = next(line for line in run("token", "list").splitlines() if record.token_id in line)
    assert "yes" in row
    inst = open_installation(load_settings(home, ENV), lint=False)
    try:
        with pytest.raises(Exception, match="revoked"):
            access.authenticate(inst.store, inst.authority.clock, token)
        assert inst.store.latest_audit("token.revoked") is not None
    finally:
        inst.close()


def test_cli_user_disable(tmp_path: Path) -> None:
    home = tmp_path / "home"
    make_installation(home).close()
    base = ["--home", str(home), "user"]
    made = CliRunner().invoke(
        cli,
        [*base, "create", "bob", "--role", "admin", "--password-stdin"],
        env=ENV,
        input="long-enough-password\n",
    )
    assert made.exit_code == 0, made.output
    assert CliRunner().invoke(cli, [*base, "disable", "bob"], env=ENV).exit_code == 0
    inst = open_installation(load_settings(home, ENV), lint=False)
    try:
        with inst.store.transaction(readonly=True) as tx:
            user = tx.get_user("bob")
        assert user is not None and user.disabled
        assert inst.store.latest_audit("user.disabled") is not None
    finally:
        inst.close()
