"""The revoked-list query of ``SqlRevocationStore`` on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, timedelta

from iotpki.core.models import RevocationReason
from iotpki.services.installation import Installation
from iotpki.store.revocation import SqlRevocationStore
from iotpki.store.sql import SqlStore

from conftest import ManualClock, device_csr


def _naive(value: object) -> object:
    """A stored time as CrlEntry carries it: naive UTC."""
    assert hasattr(value, "astimezone")
    return value.astimezone(UTC).replace(tzinfo=None)


def test_revoked_entries_full_and_delta(any_inst: Installation, clock: ManualClock) -> None:
    auth = any_inst.authority
    assert isinstance(any_inst.store, SqlStore)
    store = SqlRevocationStore(any_inst.store)
    expiring = auth.issue(device_csr("old"), profile="device", actor="t", lifetime=timedelta(1))
    first = auth.issue(device_csr("a"), profile="device", actor="t").record
    second = auth.issue(device_csr("b"), profile="device", actor="t").record
    auth.issue(device_csr("good"), profile="device", actor="t")
    compromised_at = clock.now() - timedelta(days=3)
    clock.advance(timedelta(hours=1, microseconds=250))
    one = auth.revoke(
        first.serial,
        reason=RevocationReason.KEY_COMPROMISE,
        actor="t",
        invalidity_date=compromised_at,
    )
    auth.revoke(expiring.record.serial, reason=RevocationReason.SUPERSEDED, actor="t")
    clock.advance(timedelta(hours=1))
    base_time = clock.now()
    two = auth.revoke(second.serial, reason=RevocationReason.UNSPECIFIED, actor="t")
    clock.advance(timedelta(days=2))  # the one-day certificate has expired: it leaves the CRL

    full = sorted(store.revoked_entries("issuing", valid_at=clock.now()))
    assert full == sorted(
        [
            (one.serial, _naive(one.revoked_at), "keyCompromise", _naive(compromised_at)),
            (two.serial, _naive(two.revoked_at), "unspecified", None),
        ]
    )
    delta = list(store.revoked_entries("issuing", valid_at=clock.now(), revoked_since=base_time))
    assert delta == [(two.serial, _naive(two.revoked_at), "unspecified", None)]
    assert list(store.revoked_entries("root", valid_at=clock.now())) == []
