"""Audit noise: repeated anonymous refusals fold per source and window; reads are logged apart."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from iotpki.cli.main import app as cli
from iotpki.core.audit import REPEATED, source_key
from iotpki.core.models import AuditEvent
from iotpki.errors import AuthError
from iotpki.server import Service, build_http_app, build_https_app
from iotpki.services.installation import Installation
from iotpki.store.monitoring import SqlMonitoringStore

from conftest import ManualClock

_EVER = datetime.min.replace(tzinfo=UTC)


def _events(inst: Installation, action: str) -> list[AuditEvent]:
    return [e for e in inst.store.audit_events() if e.action == action]


def _from(address: str, app: object) -> TestClient:
    return TestClient(app, base_url="https://testserver", client=(address, 50000))  # type: ignore[arg-type]


def _verify(home: Path) -> str:
    env = {"IOTPKI_PASSPHRASE": "test-passphrase", "COLUMNS": "200"}
    result = CliRunner().invoke(cli, ["--home", str(home), "audit", "verify"], env=env)
    assert result.exit_code == 0, result.output
    return result.output


def test_1000_identical_refusals_add_two_entries_with_the_count(
    inst: Installation, clock: ManualClock
) -> None:
    client = _from("203.0.113.7", build_https_app(Service(inst)))
    before = len(list(inst.store.audit_events()))
    for _ in range(1000):
        assert client.get("/api/v1/cas", headers={"authorization": "Bearer x"}).status_code == 401
    first = _events(inst, "api.denied")
    assert len(first) == 1 and first[0].data["source"] == "203.0.113.7"
    # The 999 repeats are counted durably, not lost, while the window is open.
    counts = SqlMonitoringStore(inst.store).audit_counts(_EVER, ["api.denied"])
    assert counts == {"api.denied": 1000}

    clock.advance(timedelta(seconds=61))
    assert inst.authority.flush_refusals() == 1
    denied = _events(inst, "api.denied")
    assert len(denied) == 2
    summary = denied[1].data
    assert summary[REPEATED] == 999 and summary["source"] == "203.0.113.7"
    assert summary["code"] == "unauthorized"
    assert len(list(inst.store.audit_events())) == before + 2
    assert SqlMonitoringStore(inst.store).audit_counts(_EVER, ["api.denied"]) == counts
    assert inst.authority.flush_refusals() == 0  # nothing left to write
    assert "audit chain intact" in _verify(inst.home)


def test_the_next_window_opens_with_the_summary_of_the_last(
    inst: Installation, clock: ManualClock
) -> None:
    for _ in range(3):
        inst.authority.audit_refusal(
            AuthError("bad"),
            source="198.51.100.1",
            actor="x:anonymous",
            action="x.refused",
            target="",
        )
    clock.advance(timedelta(seconds=60))
    inst.authority.audit_refusal(
        AuthError("bad"), source="198.51.100.1", actor="x:anonymous", action="x.refused", target=""
    )
    written = [e.data.get(REPEATED) for e in _events(inst, "x.refused")]
    assert written == [None, 2, None]  # first, summary of its window, first of the next window


def test_sources_and_codes_are_counted_apart(inst: Installation) -> None:
    audit = inst.authority.audit_refusal
    for source in ("192.0.2.1", "192.0.2.2"):
        for _ in range(5):
            audit(AuthError("no"), source=source, actor="a", action="x.refused", target="")
    audit(AuthError("no"), source="192.0.2.1", actor="a", action="y.refused", target="")
    assert len(_events(inst, "x.refused")) == 2 and len(_events(inst, "y.refused")) == 1


def test_an_error_is_audited_once(inst: Installation) -> None:
    error = AuthError("no")
    for _ in range(2):
        inst.authority.audit_refusal(error, source="192.0.2.1", actor="a", action="x", target="")
    counts = SqlMonitoringStore(inst.store).audit_counts(_EVER, ["x"])
    assert counts == {"x": 1}


def test_ipv6_sources_fold_per_64() -> None:
    assert source_key("2001:db8:1:2:aaaa::1") == source_key("2001:db8:1:2:bbbb::2")
    assert source_key("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert source_key("::ffff:192.0.2.9") == "192.0.2.9"
    assert source_key("testclient") == "testclient"


def test_refusals_with_varying_paths_still_fold(inst: Installation) -> None:
    client = _from("203.0.113.8", build_https_app(Service(inst)))
    for n in range(50):
        client.post(f"/.well-known/est/label{n}/simpleenroll", content=b"x")
    refusals = [e for e in inst.store.audit_events() if e.action.startswith("est.")]
    assert len(refusals) <= 3


def test_reads_go_to_the_access_log_not_the_chain(
    inst: Installation, caplog: pytest.LogCaptureFixture
) -> None:
    service = Service(inst)
    http = TestClient(build_http_app(service))
    https = _from("203.0.113.9", build_https_app(service))
    assert service.scep.registration_authorities("issuing")  # created once, a state change
    before = len(list(inst.store.audit_events()))
    with caplog.at_level(logging.INFO, logger="iotpki.access"):
        assert http.get("/scep", params={"operation": "GetCACaps"}).status_code == 200
        assert http.get("/scep", params={"operation": "GetCACert"}).status_code == 200
        assert https.get("/.well-known/est/cacerts").status_code == 200
        assert https.get("/.well-known/est/csrattrs").status_code == 200
        assert http.get("/ca/issuing.crt").status_code == 200
        http.get("/crl/issuing.crl")
    lines = [r.getMessage() for r in caplog.records if r.name == "iotpki.access"]
    assert len(lines) == 6
    assert any(line.startswith("203.0.113.9 - GET /.well-known/est/cacerts") for line in lines)
    assert len(list(inst.store.audit_events())) == before


def test_folding_on_each_database(any_inst: Installation, clock: ManualClock) -> None:
    def refuse() -> None:
        any_inst.authority.audit_refusal(
            AuthError("bad"), source="192.0.2.5", actor="x", action="x.refused", target="t"
        )

    for _ in range(10):
        refuse()
    clock.advance(timedelta(seconds=61))
    assert any_inst.authority.flush_refusals() == 1
    refuse()
    assert [e.data.get(REPEATED) for e in _events(any_inst, "x.refused")] == [None, 9, None]
    counts = SqlMonitoringStore(any_inst.store).audit_counts(_EVER, ["x.refused"])
    assert counts == {"x.refused": 11}
