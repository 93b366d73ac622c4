"""The audit log's hash chain: canonical encoding, hashing and verification.

Each event's hash is SHA-256 over the previous event's hash and the canonical JSON encoding of the
event (sorted keys, no white space, UTC time in ISO 8601). The first event chains from
``GENESIS``. Verification walks the chain in sequence order and names the first entry that was
modified, deleted, inserted or reordered; the stored head (last sequence number and hash)
catches entries cut from the end.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from iotpki.core.models import AuditEvent

__all__ = ["GENESIS", "ChainReport", "canonical_encoding", "chain_hash", "verify_chain"]

GENESIS = "0" * 64


def canonical_encoding(
    seq: int, time: datetime, actor: str, action: str, target: str, data: dict[str, object]
) -> bytes:
    """The bytes an event's hash covers."""
    body = {
        "seq": seq,
        "time": time.astimezone(UTC).isoformat(timespec="microseconds"),
        "actor": actor,
        "action": action,
        "target": target,
        "data": data,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()


def chain_hash(prev_hash: str, encoding: bytes) -> str:
    """SHA-256 over the previous hash (hex) and the event's canonical encoding."""
    return hashlib.sha256(bytes.fromhex(prev_hash) + encoding).hexdigest()


@dataclass(frozen=True, slots=True)
class ChainReport:
    """Outcome of a chain verification."""

    ok: bool
    events: int
    first_bad_seq: int | None = None
    problem: str = ""


def verify_chain(events: Iterable[AuditEvent], head: tuple[int, str]) -> ChainReport:
    """Check every link and hash, then that the chain ends at the recorded head."""
    prev_hash = GENESIS
    expected_seq = 1
    count = 0
    for event in events:
        count += 1
        if event.seq != expected_seq:
            what = "missing (deleted)" if event.seq > expected_seq else "out of order"
            return ChainReport(False, count, expected_seq, f"entry {expected_seq} is {what}")
        if event.prev_hash != prev_hash:
            return ChainReport(
                False, count, event.seq, f"entry {event.seq} does not link to its predecessor"
            )
        encoding = canonical_encoding(
            event.seq, event.time, event.actor, event.action, event.target, event.data
        )
        if chain_hash(prev_hash, encoding) != event.hash:
            return ChainReport(False, count, event.seq, f"entry {event.seq} was modified")
        prev_hash = event.hash
        expected_seq += 1
    head_seq, head_hash = head
    last_seq = expected_seq - 1
    if (head_seq, head_hash) != (last_seq, prev_hash):
        first = last_seq if head_seq == last_seq else min(last_seq, head_seq) + 1
        return ChainReport(
            False,
            count,
            first,
            f"the chain ends at entry {last_seq} but its anchor records entry {head_seq}",
        )
    return ChainReport(True, count)
