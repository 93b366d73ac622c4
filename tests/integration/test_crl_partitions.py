"""CRL partitions in process: what certificates name, when partitions are remade, expiry, HTTP."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from starlette.testclient import TestClient
from typer.testing import CliRunner

from iotpki.cli.main import app as cli
from iotpki.core.authority import Issued
from iotpki.core.models import RevocationReason
from iotpki.core.partitions import PartitionScheme, partition_expires, partition_of
from iotpki.core.publication import CrlRecord
from iotpki.errors import PeerRefused
from iotpki.net.revocation_check import CrlCache, RevocationChecker
from iotpki.server import Service, build_http_app
from iotpki.services.installation import Installation
from iotpki.services.revocation import partition_file

from conftest import ManualClock, device_csr, make_installation

_CDP = x509.CRLDistributionPoints
_BASE = "http://localhost:8080"


def _issue(inst: Installation, name: str) -> Issued:
    return inst.authority.issue(device_csr(name), profile="device", actor="test")


def _url(ext: x509.CRLDistributionPoints | x509.FreshestCRL) -> str:
    name = ext[0].full_name
    assert name is not None
    return str(name[0].value)


def _partition(issued: Issued) -> str:
    assert issued.record.crl_partition is not None
    return issued.record.crl_partition


def _revoke(inst: Installation, issued: Issued) -> None:
    inst.authority.revoke(
        issued.record.serial, reason=RevocationReason.KEY_COMPROMISE, actor="test"
    )


def _listed(der: bytes | None, issued: Issued) -> bool:
    assert der is not None
    crl = x509.load_der_x509_crl(der)
    return (
        crl.get_revoked_certificate_by_serial_number(issued.certificate.serial_number) is not None
    )


@pytest.fixture
def service(inst: Installation) -> Service:
    svc = Service(inst)
    svc.revocation.refresh_responders()
    return svc


def test_certificate_names_its_partition_fixed_at_issuance(inst: Installation) -> None:
    issued = _issue(inst, "p-1")
    cert = issued.certificate
    partition = partition_of(PartitionScheme(), cert.serial_number, cert.not_valid_after_utc)
    assert issued.record.crl_partition == partition
    stored = inst.authority.get(issued.record.serial)
    assert stored.crl_partition == partition
    cdp = cert.extensions.get_extension_for_class(_CDP).value
    fresh = cert.extensions.get_extension_for_class(x509.FreshestCRL).value
    base = inst.settings.effective_public_base_url.rstrip("/")
    assert _url(cdp) == f"{base}/crl/issuing/{partition}.crl"
    assert _url(fresh) == f"{base}/crl/issuing/{partition}-delta.crl"
    assert partition_expires(partition) >= cert.not_valid_after_utc


def test_partition_crl_carries_an_idp_naming_the_cdp(inst: Installation, service: Service) -> None:
    issued = _issue(inst, "p-idp")
    service.revocation.publish_partitions()
    partition = _partition(issued)
    for kind in ("full", "delta"):
        record = service.revocation.partition_crl("issuing", partition, kind)
        assert record is not None and record.der is not None
        crl = x509.load_der_x509_crl(record.der)
        idp = crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint)
        assert idp.critical and idp.value.only_contains_user_certs
        assert idp.value.full_name is not None
        cdp = issued.certificate.extensions.get_extension_for_class(_CDP).value
        assert idp.value.full_name[0].value == _url(cdp)
        assert crl.is_signature_valid(inst.authority.get_ca("issuing").certificate.public_key())  # type: ignore[arg-type]
        if kind == "full":
            fresh = crl.extensions.get_extension_for_class(x509.FreshestCRL).value
            assert _url(fresh).endswith(f"/crl/issuing/{partition}-delta.crl")
        else:
            assert crl.extensions.get_extension_for_class(x509.DeltaCRLIndicator)


def test_revocation_remakes_only_its_partition_after_the_delay(
    any_inst: Installation, clock: ManualClock
) -> None:
    inst, service = any_inst, Service(any_inst)
    mine = _issue(inst, "p-mine")
    others = [_issue(inst, f"p-other-{i}") for i in range(12)]
    others = [o for o in others if _partition(o) != _partition(mine)]
    assert others, "twelve random serials all fell in one bucket"
    service.revocation.publish_partitions()
    before = {
        (r.partition, r.kind): r.number for r in service.revocation.store.partition_crls("issuing")
    }
    clock.advance(timedelta(seconds=10))
    _revoke(inst, mine)
    assert service.revocation.publish_partitions() == []  # debounced: partition_delay is 1 s
    clock.advance(timedelta(seconds=1))
    made = service.revocation.publish_partitions()
    assert {(r.partition, r.kind) for r in made} == {
        (_partition(mine), "full"),
        (_partition(mine), "delta"),
    }
    full = service.revocation.partition_crl("issuing", _partition(mine), "full")
    assert full is not None and _listed(full.der, mine)
    after = {
        (r.partition, r.kind): r.number for r in service.revocation.store.partition_crls("issuing")
    }
    for other in others:
        key = (_partition(other), "full")
        assert after[key] == before[key]
    assert service.revocation.publish_partitions() == []


def test_second_revocation_in_a_partition_remade_after_others_are_older(
    inst: Installation, service: Service, clock: ManualClock
) -> None:
    first = _issue(inst, "p-first")
    second = next(
        c
        for c in (_issue(inst, f"p-second-{i}") for i in range(60))
        if _partition(c) == _partition(first)
    )
    service.revocation.publish_partitions()  # every partition at t0
    for revoked in (first, second):
        clock.advance(timedelta(seconds=10))
        _revoke(inst, revoked)
        clock.advance(timedelta(seconds=1))
        made = service.revocation.publish_partitions()
        assert (_partition(revoked), "full") in {(r.partition, r.kind) for r in made}
        full = service.revocation.partition_crl("issuing", _partition(revoked), "full")
        assert full is not None and _listed(full.der, revoked)


def test_whole_partition_expires(inst: Installation, service: Service, clock: ManualClock) -> None:
    issued = _issue(inst, "p-expiring")
    partition = _partition(issued)
    service.revocation.publish_partitions()
    path = partition_file(inst.home, "issuing", partition, "full")
    assert path.exists()
    clock.current = partition_expires(partition) - timedelta(seconds=1)
    service.revocation.publish_partitions()
    assert service.revocation.partition_crl("issuing", partition, "full") is not None
    clock.current = partition_expires(partition)
    service.revocation.publish_partitions()
    assert service.revocation.partition_crl("issuing", partition, "full") is None
    assert service.revocation.store.get_partition_crl("issuing", partition, "full") is None
    assert not path.exists()
    index = json.loads((inst.home / "crl" / "issuing" / "index.json").read_text())
    assert partition not in {row["partition"] for row in index["partitions"]}


def test_route_caching_headers_static_files_and_index(
    inst: Installation, service: Service, clock: ManualClock
) -> None:
    issued = _issue(inst, "p-http")
    partition = _partition(issued)
    service.revocation.publish_partitions()
    client = TestClient(build_http_app(service))
    reply = client.get(f"/crl/issuing/{partition}.crl")
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/pkix-crl"
    record = service.revocation.partition_crl("issuing", partition, "full")
    assert record is not None
    assert reply.headers["etag"] == f'"issuing-{partition}-full-{record.number}"'
    assert "last-modified" in reply.headers and "expires" in reply.headers
    max_age = int(reply.headers["cache-control"].split("max-age=")[1])
    assert 0 < max_age <= (record.next_update - clock.now()).total_seconds()
    again = client.get(
        f"/crl/issuing/{partition}.crl", headers={"if-none-match": reply.headers["etag"]}
    )
    assert again.status_code == 304
    delta = client.get(f"/crl/issuing/{partition}-delta.crl")
    assert delta.status_code == 200
    assert partition_file(inst.home, "issuing", partition, "full").read_bytes() == reply.content
    index = client.get("/crl/issuing/index.json")
    assert index.status_code == 200
    rows = {(r["partition"], r["kind"]): r for r in index.json()["partitions"]}
    row = rows[(partition, "full")]
    assert row["url"].endswith(f"/crl/issuing/{partition}.crl")
    assert row["crl_number"] == record.number
    assert row["sha256"] == hashlib.sha256(reply.content).hexdigest()
    assert {"this_update", "next_update"} <= set(row)
    assert index.content == (inst.home / "crl" / "issuing" / "index.json").read_bytes()
    for bad in (
        "/crl/issuing/nope.crl",
        "/crl/issuing/20200101-7d-0.crl",
        "/crl/nosuch/index.json",
    ):
        assert client.get(bad).status_code == 404


def test_publish_command_gets_the_changed_partition_files(
    tmp_path: Path, clock: ManualClock
) -> None:
    out = tmp_path / "published.txt"
    command = f"sh -c 'echo $IOTPKI_CRL_FILES >> {out}'"
    inst = make_installation(tmp_path / "cmd", clock=clock, revocation={"publish_command": command})
    try:
        service = Service(inst)
        issued = _issue(inst, "p-cmd")
        service.revocation.publish_partitions()
        out.unlink()
        clock.advance(timedelta(seconds=5))
        _revoke(inst, issued)
        clock.advance(timedelta(seconds=1))
        service.revocation.publish_partitions()
        partition = _partition(issued)
        assert sorted(out.read_text().split()) == sorted(
            str(partition_file(inst.home, "issuing", partition, kind)) for kind in ("full", "delta")
        )
    finally:
        inst.close()


def test_partitions_off_keeps_the_ca_wide_distribution_point(tmp_path: Path) -> None:
    off = make_installation(tmp_path / "off", revocation={"partition_window_days": 0})
    try:
        issued = _issue(off, "p-off")
        assert issued.record.crl_partition is None
        cdp = issued.certificate.extensions.get_extension_for_class(_CDP).value
        assert _url(cdp).endswith("/crl/issuing.crl")
    finally:
        off.close()


def test_relying_party_fetches_only_the_partitions_it_meets(
    inst: Installation, service: Service, clock: ManualClock
) -> None:
    mine = _issue(inst, "rp-mine")
    other = next(
        c
        for c in (_issue(inst, f"rp-other-{i}") for i in range(60))
        if _partition(c) != _partition(mine)
    )
    clock.advance(timedelta(seconds=5))
    _revoke(inst, mine)
    service.revocation.publish_partitions()
    served = {
        str(_url(r.certificate.extensions.get_extension_for_class(_CDP).value)): r
        for r in (mine, other)
    }
    fetched: list[str] = []

    def fetch(url: str, body: bytes | None) -> bytes:
        fetched.append(url)
        issued = served[url]
        record = service.revocation.partition_crl("issuing", _partition(issued), "full")
        assert record is not None and record.der is not None
        return record.der

    issuer = inst.authority.get_ca("issuing").certificate
    cache = CrlCache(
        issuers=lambda: [issuer], fetch=fetch, clock=clock, follow_distribution_points=True
    )
    with pytest.raises(PeerRefused):
        RevocationChecker(cache).check(mine.certificate, issuer)
    assert fetched == [_url(mine.certificate.extensions.get_extension_for_class(_CDP).value)]
    assert cache.status(mine.certificate, issuer) == "revoked"
    assert len(fetched) == 1  # cached until its nextUpdate
    assert cache.status(other.certificate, issuer) == "good"
    assert len(fetched) == 2
    held = cache.crls()
    assert len(held) == 2
    next_update = min(c.next_update_utc for c in held if c.next_update_utc)
    clock.current = next_update + timedelta(seconds=1)
    service.revocation.publish_partitions()
    cache.refresh()
    assert len(fetched) == 4  # both partitions fetched again at nextUpdate


def test_cli_crl_show_lists_and_writes_partitions(tmp_path: Path) -> None:
    home = tmp_path / "cli"
    inst = make_installation(home)
    try:
        issued = _issue(inst, "p-cli")
    finally:
        inst.close()
    runner = CliRunner(env={"IOTPKI_PASSPHRASE": "test-passphrase"})
    published = runner.invoke(cli, ["--home", str(home), "crl", "publish", "--ca", "issuing"])
    assert published.exit_code == 0, published.output
    shown = runner.invoke(cli, ["--home", str(home), "crl", "show", "--ca", "issuing", "--json"])
    assert shown.exit_code == 0, shown.output
    rows = json.loads(shown.output)
    partition = _partition(issued)
    mine = [r for r in rows if r["partition"] == partition]
    assert {r["kind"] for r in mine} == {"full", "delta"}
    assert all(r["bytes"] > 0 and r["entries"] == 0 for r in mine)
    assert {"(CA-wide)"} <= {r["partition"] for r in rows}
    out = tmp_path / "p.crl"
    wrote = runner.invoke(
        cli,
        ["--home", str(home), "crl", "show", "--ca", "issuing", "--partition", partition,
         "--out", str(out)],
    )  # fmt: skip
    assert wrote.exit_code == 0, wrote.output
    crl = x509.load_der_x509_crl(out.read_bytes())
    assert crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint)
    missing = runner.invoke(
        cli,
        ["--home", str(home), "crl", "show", "--ca", "issuing", "--partition", "20200101-7d-0",
         "--pem"],
    )  # fmt: skip
    assert missing.exit_code != 0


def test_an_oversized_partition_is_logged(
    tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    inst = make_installation(
        tmp_path / "big", clock=clock, revocation={"partition_max_bytes": 10_000}
    )
    caplog.set_level(logging.WARNING, logger="iotpki.core.partition_publication")
    try:
        service = Service(inst)
        issued = [_issue(inst, f"p-big-{i}") for i in range(3)]
        service.revocation.publish_partitions()
        assert "CRL partition" not in caplog.text
        big = _partition(issued[0])
        rows = [(format(n, "x"), clock.now(), None, None) for n in range(1, 2000)]
        store = service.revocation.store
        original = store.partition_entries
        store.partition_entries = lambda ca, p, **kw: (
            iter(rows) if p == big else original(ca, p, **kw)
        )  # type: ignore[method-assign]
        service.revocation.partitions.generate("issuing", big, "full", actor="test")
        assert f"CRL partition {big} of issuing is" in caplog.text
    finally:
        inst.close()


def test_a_long_ca_wide_rebuild_does_not_hold_back_a_partition(tmp_path: Path) -> None:
    inst = make_installation(tmp_path / "jobs")
    release = threading.Event()
    blocked = threading.Event()
    try:
        service = Service(inst)
        issued = _issue(inst, "p-jobs")
        service.revocation.publish_partitions()
        original = service.revocation.publisher.publish_due

        def slow_rebuild(now: datetime, actor: str = "system:crl") -> list[CrlRecord]:
            blocked.set()
            release.wait(60)  # a CA-wide CRL of millions of entries, being built
            return original(now, actor)

        service.revocation.publisher.publish_due = slow_rebuild  # type: ignore[method-assign]
        service.revocation.start()
        assert blocked.wait(30)
        _revoke(inst, issued)
        deadline = time.monotonic() + 30  # generous: the partition_delay is 1 s
        listed = False
        while not listed and time.monotonic() < deadline:
            held = service.revocation.partition_crl("issuing", _partition(issued), "full")
            listed = held is not None and _listed(held.der, issued)
            time.sleep(0.05)
        assert listed, "the revocation did not reach its partition while the CA-wide job ran"
        assert not release.is_set()
    finally:
        release.set()
        service.revocation.stop()
        inst.close()
