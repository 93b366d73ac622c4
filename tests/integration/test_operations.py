"""Operations in process: dashboard sign-in, roles, CSRF, revoke, ingest, findings, alerts."""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Iterator
from datetime import timedelta

import pytest
from starlette.testclient import TestClient

from iotpki.core.access import create_token
from iotpki.core.campaigns import Campaigns
from iotpki.core.models import CertStatus, RevocationReason, Role
from iotpki.server import Service, build_https_app
from iotpki.services.installation import Installation
from iotpki.web.session import hash_password

from conftest import ManualClock, device_csr


class Ops:
    """The HTTPS app, a token per role and a few issued certificates."""

    def __init__(self, inst: Installation) -> None:
        self.inst = inst
        self.service = Service(inst)
        self.app = build_https_app(self.service)
        self.tokens = {
            role: create_token(
                inst.store, inst.authority.clock, role=role, description="", actor="t"
            )[0]
            for role in Role
        }
        self.serials = [
            inst.authority.issue(
                device_csr(f"dev-{i}"),
                profile="device",
                actor="test",
                device_id=f"dev-{i}",
                lifetime=timedelta(days=5 + 40 * i),
            ).record.serial
            for i in range(3)
        ]

    def client(self, role: Role | None = None) -> TestClient:
        client = TestClient(self.app, base_url="https://testserver", follow_redirects=False)
        if role is not None:
            reply = client.post("/ui/login", data={"token": self.tokens[role], "next": "/"})
            assert reply.status_code == 303, reply.text
        return client

    def csrf(self, client: TestClient, path: str) -> str:
        page = client.get(path)
        match = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert match, page.text
        return match.group(1)

    def audit_actions(self) -> list[str]:
        return [e.action for e in self.inst.store.audit_events()]


@pytest.fixture
def ops(inst: Installation) -> Iterator[Ops]:
    yield Ops(inst)


def test_sign_in_sets_a_strict_cookie_and_pages_render(
    ops: Ops, caplog: pytest.LogCaptureFixture
) -> None:
    client = TestClient(ops.app, base_url="https://testserver", follow_redirects=False)
    assert client.get("/").status_code == 303  # to the sign-in page
    reply = client.post("/ui/login", data={"token": ops.tokens[Role.ADMIN], "next": "/"})
    cookie = reply.headers["set-cookie"].lower()
    assert "httponly" in cookie and "secure" in cookie and "samesite=strict" in cookie
    before = len(ops.audit_actions())
    for path in ("/", "/ui/certificates", "/ui/audit", "/ui/findings", "/ui/report"):
        with caplog.at_level(logging.INFO, logger="iotpki.access"):
            page = client.get(path)
        assert page.status_code == 200, (path, page.text)
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert "http://" not in page.text.replace("http://www.w3.org/2000/svg", "")
    assert "ui.login" in ops.audit_actions()
    # Page views are access-log lines, one per request, and add nothing to the audit chain.
    views = [r.getMessage() for r in caplog.records if r.name == "iotpki.access"]
    assert len(views) == 5 and any(line.endswith(" ui.overview") for line in views)
    assert len(ops.audit_actions()) == before


def test_user_sign_in_and_wrong_password(ops: Ops) -> None:
    monitor = ops.service.monitor
    now = ops.inst.authority.clock.now()
    monitor.store.put_user("alice", "auditor", hash_password("correct horse"), now)
    client = ops.client()
    bad = client.post("/ui/login", data={"username": "alice", "password": "nope"})
    assert bad.status_code == 401
    good = client.post("/ui/login", data={"username": "alice", "password": "correct horse"})
    assert good.status_code == 303
    assert client.get("/ui/audit").status_code == 200
    assert "ui.login.refused" in ops.audit_actions()


def test_roles_are_enforced_and_refusals_audited(ops: Ops) -> None:
    provisioner = ops.client(Role.PROVISIONER)
    assert provisioner.get("/").status_code == 403
    assert provisioner.get("/ui/audit").status_code == 403
    auditor = ops.client(Role.AUDITOR)
    assert auditor.get("/ui/report").status_code == 200
    detail = auditor.get(f"/ui/certificates/issuing/{ops.serials[0]}")
    assert detail.status_code == 200 and 'id="revoke"' not in detail.text
    csrf = ops.csrf(auditor, "/ui/findings")
    refused = auditor.post(
        f"/ui/certificates/issuing/{ops.serials[0]}/revoke",
        data={"csrf": csrf, "reason": "keyCompromise"},
    )
    assert refused.status_code == 403
    assert ops.inst.authority.get(ops.serials[0]).status is CertStatus.VALID
    assert ops.audit_actions().count("ui.denied") >= 3


def test_operator_revokes_with_reason_and_csrf(ops: Ops) -> None:
    client = ops.client(Role.OPERATOR)
    path = f"/ui/certificates/issuing/{ops.serials[1]}"
    csrf = ops.csrf(client, path)
    forged = client.post(path + "/revoke", data={"csrf": "x" * 32, "reason": "superseded"})
    assert forged.status_code == 403
    assert ops.inst.authority.get(ops.serials[1]).status is CertStatus.VALID
    done = client.post(path + "/revoke", data={"csrf": csrf, "reason": "keyCompromise"})
    assert done.status_code == 303
    record = ops.inst.authority.get(ops.serials[1])
    assert record.status is CertStatus.REVOKED and str(record.revocation_reason) == "keyCompromise"
    bad_reason = client.post(path + "/revoke", data={"csrf": csrf, "reason": "because"})
    assert bad_reason.status_code == 400


@pytest.mark.parametrize(
    "query",
    [
        "q=%27%20OR%201%3D1--",
        "device=%25",
        "serial=zz%27;DROP%20TABLE%20certificates",
        "status=all",
        "size=100000",
        "before=-1",
        "expires_before=yesterday",
        "q=" + "a" * 500,
        "profile=%00",
    ],
)
def test_crafted_search_parameters(ops: Ops, query: str) -> None:
    client = ops.client(Role.AUDITOR)
    before = ops.inst.store.count_certificates()
    reply = client.get(f"/ui/certificates?{query}")
    assert reply.status_code in (200, 400), reply.text
    if reply.status_code == 200:
        assert "No certificate matches." in reply.text
    assert ops.inst.store.count_certificates() == before


def test_inventory_filters_and_keyset_paging(ops: Ops) -> None:
    client = ops.client(Role.ADMIN)
    page = client.get("/ui/certificates?device=dev-2")
    assert ops.serials[2][:20] in page.text and ops.serials[0][:20] not in page.text
    first = client.get("/ui/certificates?size=25&profile=device")
    assert all(s[:20] in first.text for s in ops.serials)
    soon = (ops.inst.authority.clock.now() + timedelta(days=10)).date().isoformat()
    expiring = client.get(f"/ui/certificates?status=valid&expires_before={soon}")
    assert ops.serials[0][:20] in expiring.text and ops.serials[2][:20] not in expiring.text


def test_forged_session_cookie_is_refused(ops: Ops) -> None:
    client = ops.client()
    client.cookies.set("iotpki_session", "eyJzdWIiOiJ0b2tlbjp4Iiwicm9sZSI6ImFkbWluIn0.AAAA")
    assert client.get("/ui/audit").status_code == 303


def _batch(serial: str, **extra: object) -> dict[str, object]:
    return {
        "nonce": secrets.token_hex(16),
        "sent_at": ManualClock().now().isoformat(),
        "events": [
            {
                "serial": serial,
                "client_id": "client-a",
                "source": "198.51.100.7",
                "time": ManualClock().now().isoformat(),
            }
        ],
        **extra,
    }


def test_ingest_replay_forgery_and_role(ops: Ops) -> None:
    client = ops.client()
    headers = {"authorization": f"Bearer {ops.tokens[Role.REPORTER]}"}
    batch = _batch(ops.serials[0])
    assert client.post("/api/v1/usage/events", json=batch, headers=headers).status_code == 202
    replay = client.post("/api/v1/usage/events", json=batch, headers=headers)
    assert replay.status_code == 409
    forged = _batch("abcdef0123456789")
    assert client.post("/api/v1/usage/events", json=forged, headers=headers).status_code == 400
    stale = _batch(ops.serials[0], sent_at="2001-01-01T00:00:00+00:00")
    assert client.post("/api/v1/usage/events", json=stale, headers=headers).status_code == 400
    operator = {"authorization": f"Bearer {ops.tokens[Role.OPERATOR]}"}
    assert (
        client.post("/api/v1/usage/events", json=_batch(ops.serials[0]), headers=operator)
    ).status_code == 403
    reporter_reads = client.get("/api/v1/findings", headers=headers)
    assert reporter_reads.status_code == 403
    assert len(ops.service.monitor.store.usage_of(ops.serials[0])) == 1


def test_anomalies_from_usage_and_alert_dedup(ops: Ops) -> None:
    ops.inst.authority.clock.advance(timedelta(days=4))  # type: ignore[attr-defined]
    # dev-0's 5-day certificate now has a day left: under a quarter of its life
    monitor = ops.service.monitor
    client = ops.client()
    headers = {"authorization": f"Bearer {ops.tokens[Role.REPORTER]}"}
    ops.inst.authority.revoke(ops.serials[2], reason=RevocationReason.SUPERSEDED, actor="test")
    now = ops.inst.authority.clock.now().isoformat()
    events = [
        {"serial": ops.serials[0], "client_id": "c1", "source": "10.0.0.1", "time": now},
        {"serial": ops.serials[0], "client_id": "c1", "source": "10.0.0.2", "time": now},
        {"serial": ops.serials[1], "client_id": "c1", "source": "10.0.0.3", "time": now},
        {"serial": ops.serials[2], "client_id": "c3", "source": "10.0.0.4", "time": now},
    ]
    body = {"nonce": secrets.token_hex(16), "sent_at": now, "events": events}
    assert client.post("/api/v1/usage/events", json=body, headers=headers).status_code == 202
    first = monitor.scan()
    checks = {f.check for f in monitor.store.list_findings()}
    assert {"cert_shared", "client_id_conflict", "revoked_in_use", "cert_expiring"} <= checks
    second = monitor.scan()
    assert first.alerted >= 4 and second.alerted == 0  # deduplicated
    auditor = {"authorization": f"Bearer {ops.tokens[Role.AUDITOR]}"}
    listed = client.get("/api/v1/findings?check=cert_shared", headers=auditor).json()
    assert listed["items"][0]["serial"] == ops.serials[0]
    metrics = client.get("/metrics").text
    assert 'iotpki_findings_open{check="cert_shared",severity="high"} 1.0' in metrics
    assert 'iotpki_certificates_expiring{within="7d"} 1.0' in metrics


def test_campaign_pages_show_the_burn_down_and_silent_devices(ops: Ops, clock: ManualClock) -> None:
    campaigns = Campaigns(ops.inst.authority)
    campaign = campaigns.create(
        name="rekey-all", select="profile=device", deadline=clock.now() + timedelta(hours=6),
        actor="test",
    )  # fmt: skip
    clock.advance(timedelta(hours=4))  # two of three windows have ended, nothing renewed
    client = ops.client(Role.AUDITOR)
    listing = client.get("/ui/campaigns")
    assert listing.status_code == 200 and "rekey-all" in listing.text and "behind" in listing.text
    page = client.get(f"/ui/campaigns/{campaign.campaign_id}")
    assert page.status_code == 200
    assert "<svg" in page.text and "<polyline" in page.text and "<rect" in page.text
    assert page.text.count("/ui/certificates/issuing/") >= 2  # the devices not heard from
    assert client.get("/ui/campaigns/nope").status_code == 404
    assert client.get("/ui/campaigns/../../x").status_code == 404
    assert ops.client().get("/ui/campaigns").status_code == 303  # sign in first
