"""The hash chain: byte-exact encoding and detection of every kind of tampering."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from iotpki.core.audit import GENESIS, canonical_encoding, chain_hash, verify_chain
from iotpki.core.models import AuditEvent

T = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _chain(n: int) -> list[AuditEvent]:
    events, prev = [], GENESIS
    for seq in range(1, n + 1):
        data: dict[str, object] = {"n": seq}
        digest = chain_hash(prev, canonical_encoding(seq, T, "cli", "x.done", f"t{seq}", data))
        events.append(AuditEvent(seq, T, "cli", "x.done", f"t{seq}", data, prev, digest))
        prev = digest
    return events


def test_canonical_encoding_is_stable() -> None:
    encoding = canonical_encoding(1, T, "cli", "ca.created", "root", {"b": 1, "a": [1, 2]})
    assert encoding == (
        b'{"action":"ca.created","actor":"cli","data":{"a":[1,2],"b":1},"seq":1,'
        b'"target":"root","time":"2026-01-02T03:04:05.000000+00:00"}'
    )
    assert chain_hash(GENESIS, encoding) == chain_hash(GENESIS, encoding)


def test_intact_chain_verifies() -> None:
    events = _chain(5)
    report = verify_chain(events, (5, events[-1].hash))
    assert report.ok and report.events == 5


def test_empty_chain_verifies() -> None:
    assert verify_chain([], (0, GENESIS)).ok


def test_modified_entry_named() -> None:
    events = _chain(5)
    events[2] = dataclasses.replace(events[2], actor="mallory")
    report = verify_chain(events, (5, events[-1].hash))
    assert (report.ok, report.first_bad_seq) == (False, 3)


def test_deleted_entry_named() -> None:
    events = _chain(5)
    del events[1]
    report = verify_chain(events, (5, events[-1].hash))
    assert (report.ok, report.first_bad_seq) == (False, 2)


def test_reordered_entries_named() -> None:
    events = _chain(5)
    events[1], events[2] = events[2], events[1]
    report = verify_chain(events, (5, events[-1].hash))
    assert (report.ok, report.first_bad_seq) == (False, 2)


def test_inserted_entry_named() -> None:
    events = _chain(5)
    forged = dataclasses.replace(events[2], seq=3)
    events = [*events[:2], forged, *(dataclasses.replace(e, seq=e.seq + 1) for e in events[2:])]
    report = verify_chain(events, (6, events[-1].hash))
    assert not report.ok and report.first_bad_seq == 4


def test_truncated_tail_detected_by_head() -> None:
    events = _chain(5)
    report = verify_chain(events[:3], (5, events[-1].hash))
    assert (report.ok, report.first_bad_seq) == (False, 4)
