"""The inventory search on both databases: trigram subject search, filters, keyset paging."""

from __future__ import annotations

from datetime import timedelta

import pytest

from iotpki.core.models import RevocationReason
from iotpki.core.monitoring import InventoryFilter
from iotpki.services.installation import Installation
from iotpki.store.inventory import SqlInventoryStore

from conftest import device_csr


@pytest.fixture
def fleet(any_inst: Installation) -> tuple[Installation, SqlInventoryStore]:
    names = ["Pump-North-01", "pump-south-02", "valve-03", "gateway-04", "pump-east-05"]
    for i, name in enumerate(names):
        any_inst.authority.issue(
            device_csr(name),
            profile="device",
            lifetime=timedelta(days=10 * (i + 1)),
            actor="test",
        )
    return any_inst, SqlInventoryStore(any_inst.store)


def _subjects(inv: SqlInventoryStore, inst: Installation, **flt: object) -> list[str]:
    rows = inv.search(
        InventoryFilter(**flt),  # type: ignore[arg-type]
        inst.authority.clock.now(),
        before_id=None,
        limit=50,
    )
    return [r.subject for r in rows]


def test_subject_search_is_a_case_insensitive_substring_match(
    fleet: tuple[Installation, SqlInventoryStore],
) -> None:
    inst, inv = fleet
    assert _subjects(inv, inst, subject="PUMP") == [
        "CN=pump-east-05",
        "CN=pump-south-02",
        "CN=Pump-North-01",
    ]
    assert _subjects(inv, inst, subject="th-0") == ["CN=pump-south-02", "CN=Pump-North-01"]
    assert _subjects(inv, inst, subject="iotpki-pump-s") == [
        "CN=pump-south-02"
    ]  # the SANs are searched too
    assert _subjects(inv, inst, subject="va") == ["CN=valve-03"]  # short: by scan
    assert _subjects(inv, inst, subject="nothing-like-this") == []


@pytest.mark.parametrize(
    "hostile", ["%", "_", "' OR 1=1 --", 'pump" OR "valve', "NEAR(a b)", "\\", "*"]
)
def test_hostile_search_terms_match_literally(
    fleet: tuple[Installation, SqlInventoryStore], hostile: str
) -> None:
    inst, inv = fleet
    assert _subjects(inv, inst, subject=hostile) == []


def test_filters_and_keyset_pages(fleet: tuple[Installation, SqlInventoryStore]) -> None:
    inst, inv = fleet
    now = inst.authority.clock.now()
    first = inv.search(InventoryFilter(subject="pump"), now, before_id=None, limit=2)
    rest = inv.search(InventoryFilter(subject="pump"), now, before_id=first[-1].id, limit=2)
    assert [r.subject for r in first + rest] == [
        "CN=pump-east-05",
        "CN=pump-south-02",
        "CN=Pump-North-01",
    ]
    inst.authority.revoke(first[0].serial, reason=RevocationReason.KEY_COMPROMISE, actor="t")
    assert _subjects(inv, inst, subject="pump", status="revoked") == ["CN=pump-east-05"]
    assert _subjects(inv, inst, device="gate", subject="way") == ["CN=gateway-04"]
    soon = now + timedelta(days=25)
    assert _subjects(inv, inst, subject="pump", expires_before=soon) == [
        "CN=pump-south-02",
        "CN=Pump-North-01",
    ]


def test_device_prefix_pages_newest_first(fleet: tuple[Installation, SqlInventoryStore]) -> None:
    inst, inv = fleet
    now = inst.authority.clock.now()
    flt = InventoryFilter(device="pump")
    first = inv.search(flt, now, before_id=None, limit=1)
    second = inv.search(flt, now, before_id=first[-1].id, limit=1)
    third = inv.search(flt, now, before_id=second[-1].id, limit=1)
    assert [r.device_id for r in first + second] == ["pump-east-05", "pump-south-02"]
    assert third == []  # a prefix is case-sensitive: Pump-North-01 is not under "pump"
    assert [r.subject for r in first] == ["CN=pump-east-05"] and first[0].status == "valid"
    assert _subjects(inv, inst, device="pump-s", status="valid") == ["CN=pump-south-02"]
    assert _subjects(inv, inst, device="pump\U0010ffff") == []
