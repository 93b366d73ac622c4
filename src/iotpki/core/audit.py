"""The audit log's hash chain: canonical encoding, hashing and verification.

Each event's hash is SHA-256 over the previous event's hash and the canonical JSON encoding of the
event (sorted keys, no white space, UTC time in ISO 8601). The first event chains from
``GENESIS``. Verification walks the chain in sequence order and names the first entry that was
modified, deleted, inserted or reordered; the stored head (last sequence number and hash)
catches entries cut from the end.

The chain records state changes and security decisions, not noise: refusals of anonymous
requests are folded per source, action and error code into windows (:func:`fold_refusal`). The
first refusal of a window is written at once; the repeats are only counted, in a
``refusal_counters`` row updated in the same transaction, and written as one summary entry
(``data["repeated"]`` = how many) when the next window opens or :func:`flush_refusals` finds
the window closed. A crash loses nothing: the counts are durable and the next flush writes them.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from iotpki.core.models import AuditEvent, RefusalCounter
from iotpki.core.ports.audit import AuditTx, RefusalTx

__all__ = [
    "GENESIS",
    "REPEATED",
    "ChainReport",
    "canonical_encoding",
    "chain_hash",
    "flush_refusals",
    "fold_refusal",
    "source_key",
    "verify_chain",
]

GENESIS = "0" * 64
REPEATED = "repeated"
"""The data key of a summary entry: how many refusals after the window's first it stands for."""

_FLUSH_BATCH = 500


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


def source_key(address: str) -> str:
    """The source a refusal is counted under: the IP address, or its /64 for IPv6."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64] or "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def fold_refusal(
    tx: RefusalTx,
    now: datetime,
    window: timedelta,
    *,
    source: str,
    actor: str,
    action: str,
    target: str,
    data: dict[str, object],
) -> AuditEvent | None:
    """Audit an anonymous refusal: a window's first at once (the event), repeats counted (None)."""
    fresh = RefusalCounter(
        source=source,
        action=action,
        code=str(data.get("code", "")),
        actor=actor,
        window_start=now,
        last_time=now,
        target=target,
        reason=str(data.get("reason", ""))[:512],
    )
    counter, created = tx.claim_refusal_counter(fresh)
    if not created:
        if now < counter.window_start + window:
            repeat = replace(
                counter,
                count=counter.count + 1,
                last_time=max(now, counter.last_time),
                target=fresh.target,
                reason=fresh.reason,
            )
            tx.put_refusal_counter(repeat)
            return None
        _summarise(tx, now, counter)
        tx.put_refusal_counter(fresh)
    return tx.append_audit(now, actor, action, target, {**data, "source": source})


def flush_refusals(tx: RefusalTx, now: datetime, window: timedelta) -> int:
    """Summarise and forget the counters whose window has closed; how many were summarised."""
    summarised = 0
    for counter in tx.closed_refusal_counters(now - window, _FLUSH_BATCH):
        summarised += _summarise(tx, now, counter)
        tx.delete_refusal_counter(counter)
    return summarised


def _summarise(tx: AuditTx, now: datetime, counter: RefusalCounter) -> int:
    """Write one entry for a window's repeated refusals (none when there were none)."""
    if counter.count == 0:
        return 0
    data: dict[str, object] = {
        "code": counter.code,
        "reason": counter.reason,
        "source": counter.source,
        REPEATED: counter.count,
        "window_start": counter.window_start.astimezone(UTC).isoformat(),
        "window_end": counter.last_time.astimezone(UTC).isoformat(),
    }
    tx.append_audit(now, counter.actor, counter.action, counter.target, data)
    return 1
