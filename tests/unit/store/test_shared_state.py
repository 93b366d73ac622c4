"""The store's shared-state records, on SQLite and PostgreSQL: a token spent once (and its value
remembered until it expires), counters summed over every writer, a responder kept once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from iotpki.store.sql import SqlStore

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def _store(url: str) -> SqlStore:
    store = SqlStore(url)
    store.migrate()
    return store


def test_a_token_is_spent_once_until_it_expires(database_url: str) -> None:
    one, two = _store(database_url), _store(database_url)  # two replicas
    later = NOW + timedelta(minutes=5)
    assert one.spend("scep-nonce", "n1", "tx-a:19", NOW, later) is None
    assert two.spend("scep-nonce", "n1", "tx-b:19", NOW, later) == "tx-a:19"
    assert two.spend("acme-nonce", "n1", "", NOW, later) is None  # scopes apart
    assert two.spend("scep-nonce", "n1", "tx-c:19", later, later + timedelta(minutes=5)) is None
    assert one.prune_spent(later + timedelta(hours=1)) == 2


def test_counters_add_up_across_writers(database_url: str) -> None:
    one, two = _store(database_url), _store(database_url)
    start, previous = NOW, NOW - timedelta(hours=1)
    assert one.add_events("orders", ["a"], previous, previous - timedelta(hours=1)) == [(1, 0)]
    assert two.add_events("orders", ["a", "b"], start, previous) == [(1, 1), (1, 0)]
    assert one.add_events("orders", ["a"], start, previous) == [(2, 1)]
    one.take_back_events("orders", ["a"], start)
    assert two.add_events("orders", ["a"], start, previous) == [(2, 1)]
    assert one.prune_counters(start) == 1


def test_one_responder_is_kept_and_replaced_only_as_seen(database_url: str) -> None:
    one, two = _store(database_url), _store(database_url)
    assert one.put_ocsp_responder("issuing", b"A", "ref-a", NOW, replace=None)
    assert not two.put_ocsp_responder("issuing", b"B", "ref-b", NOW, replace=None)
    assert two.ocsp_responder("issuing") == (b"A", "ref-a")
    assert not two.put_ocsp_responder("issuing", b"C", "ref-c", NOW, replace=b"B")
    assert two.put_ocsp_responder("issuing", b"C", "ref-c", NOW, replace=b"A")
    assert one.ocsp_responder("issuing") == (b"C", "ref-c")
