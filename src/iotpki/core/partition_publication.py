"""Publication of CRL partitions: each partition's complete and delta CRL, regenerated alone.

A revocation makes only its partition due, ``partition_delay`` after it (a burst of revocations
in one partition costs one signing), and the partition's complete CRL and delta are remade
together; both are small, so this takes milliseconds however many certificates the CA has
revoked. Every partition is also remade on the CA's CRL schedule, and a partition whose window
has ended (every certificate it covers has expired) is no longer published.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from iotpki.core.authority import Authority
from iotpki.core.partitions import partition_expires, partition_url
from iotpki.core.publication import CrlKind, CrlRecord, RevocationConfig
from iotpki.core.revocation import CrlEntry, build_crl

__all__ = ["PartitionPublisher", "PartitionStore", "partition_index"]

log = logging.getLogger(__name__)


class PartitionStore(Protocol):
    """What partition publication needs from the store."""

    def next_crl_number(self, ca_name: str) -> int:
        """Allocate the CA's next CRL number."""
        ...

    def get_partition_crl(
        self, ca_name: str, partition: str, kind: CrlKind, *, with_der: bool = True
    ) -> CrlRecord | None:
        """The latest CRL of that kind of one partition."""
        ...

    def partition_crls(self, ca_name: str) -> list[CrlRecord]:
        """Every stored partition CRL of the CA, without DER."""
        ...

    def put_partition_crl(self, record: CrlRecord) -> bool:
        """Keep ``record`` unless a higher number is stored; whether it was kept."""
        ...

    def drop_partition(self, ca_name: str, partition: str) -> None:
        """Forget an expired partition's CRLs."""
        ...

    def partitions_after(self, ca_name: str, after_id: int) -> tuple[int, set[str]]:
        """(last row id, partitions named by certificates recorded after ``after_id``)."""
        ...

    def unlisted_revocations(self, ca_name: str) -> dict[str, datetime]:
        """Per partition, the earliest revocation at or after its complete CRL's thisUpdate."""
        ...

    def partition_entries(
        self,
        ca_name: str,
        partition: str,
        *,
        valid_at: datetime,
        revoked_since: datetime | None = None,
    ) -> Iterator[CrlEntry]:
        """The partition's revoked, unexpired certificates."""
        ...


def partition_index(base_url: str, ca_name: str, records: Iterable[CrlRecord]) -> dict[str, object]:
    """The index of a CA's partitions (as the CCADB lists partitioned CRLs), as JSON data."""
    rows = []
    for record in sorted(records, key=lambda r: (r.partition or "", r.kind)):
        assert record.partition is not None
        rows.append(
            {
                "partition": record.partition,
                "kind": record.kind,
                "url": partition_url(
                    base_url, ca_name, record.partition, delta=record.kind == "delta"
                ),
                "crl_number": record.number,
                "base_crl_number": record.base_number,
                "this_update": _iso(record.this_update),
                "next_update": _iso(record.next_update),
                "entries": record.entries,
                "sha256": record.sha256,
                "expires": _iso(partition_expires(record.partition)),
            }
        )
    return {"ca": ca_name, "partitions": rows}


def _iso(value: datetime) -> str:
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


@dataclass(slots=True)
class _Counted:
    entries: Iterable[CrlEntry]
    count: int = 0

    def __iter__(self) -> Iterator[CrlEntry]:
        for entry in self.entries:
            self.count += 1
            yield entry


class PartitionPublisher:
    """Decides which partitions are due and generates, signs and stores their CRLs."""

    def __init__(
        self,
        authority: Authority,
        store: PartitionStore,
        config: RevocationConfig,
        *,
        delay: timedelta = timedelta(seconds=1),
        max_bytes: int = 5_000_000,
    ) -> None:
        self._authority = authority
        self._store = store
        self._config = config
        self._delay = delay
        self._max_bytes = max_bytes
        self._known: dict[str, tuple[int, set[str]]] = {}  # per CA: last row seen, partitions

    def partitions(self, ca_name: str, now: datetime) -> set[str]:
        """The CA's partitions named by a certificate and not yet expired."""
        seen, known = self._known.get(ca_name, (0, set()))
        if not known and seen == 0:
            known = {r.partition for r in self._store.partition_crls(ca_name) if r.partition}
        top, new = self._store.partitions_after(ca_name, seen)
        known = {p for p in known | new if partition_expires(p) > now}
        self._known[ca_name] = (top, known)
        return known

    def due(self, ca_name: str, now: datetime) -> dict[str, list[CrlKind]]:
        """Which CRLs of which partitions need generating now."""
        periods = self._config.periods(ca_name)
        stored: dict[tuple[str, CrlKind], CrlRecord] = {
            (r.partition, r.kind): r for r in self._store.partition_crls(ca_name) if r.partition
        }
        revoked = self._store.unlisted_revocations(ca_name)
        out: dict[str, list[CrlKind]] = {}
        for partition in sorted(self.partitions(ca_name, now)):
            full = stored.get((partition, "full"))
            delta = stored.get((partition, "delta"))
            first = revoked.get(partition)
            if (
                full is None
                or now >= full.this_update + periods.crl_interval
                or now >= full.next_update - periods.crl_validity / 4
                or (first is not None and now >= first + self._delay)
            ):
                out[partition] = ["full", "delta"]
            elif (
                delta is None
                or delta.base_number != full.number
                or now >= delta.this_update + periods.delta_crl_interval
                or now >= delta.next_update - periods.delta_crl_validity / 4
            ):
                out[partition] = ["delta"]
        return out

    def expire(self, ca_name: str, now: datetime) -> list[str]:
        """Drop the stored CRLs of partitions whose window has ended; the ones dropped."""
        gone = sorted(
            {
                r.partition
                for r in self._store.partition_crls(ca_name)
                if r.partition and partition_expires(r.partition) <= now
            }
        )
        for partition in gone:
            self._store.drop_partition(ca_name, partition)
        return gone

    def publish_due(
        self, ca_name: str, now: datetime, actor: str = "system:crl"
    ) -> list[CrlRecord]:
        """Generate every partition CRL of the CA that is due."""
        made: list[CrlRecord] = []
        for partition, kinds in self.due(ca_name, now).items():
            for kind in kinds:
                made.append(self.generate(ca_name, partition, kind, actor=actor))
        return made

    def generate(self, ca_name: str, partition: str, kind: CrlKind, *, actor: str) -> CrlRecord:
        """Generate, sign and store one CRL of a partition (a delta needs its complete CRL).

        RFC 5280 section 5.2.5: the issuingDistributionPoint names the URL the partition's
        certificates carry; section 5.2.4: a delta lists what changed since its base's thisUpdate.
        """
        record, key = self._authority.crl_signer(ca_name)
        periods = self._config.periods(ca_name)
        now = self._authority.clock.now()
        base: CrlRecord | None = None
        if kind == "delta":
            base = self._store.get_partition_crl(ca_name, partition, "full", with_der=False)
            if base is None:
                base = self.generate(ca_name, partition, "full", actor=actor)
        number = self._store.next_crl_number(ca_name)
        entries = _Counted(
            self._store.partition_entries(
                ca_name,
                partition,
                valid_at=now,
                revoked_since=base.this_update if base else None,
            )
        )
        validity = periods.delta_crl_validity if base else periods.crl_validity
        base_url = self._config.public_base_url
        der = build_crl(
            issuer=record.certificate,
            key=key,
            entries=entries,
            number=number,
            this_update=now,
            next_update=now + validity,
            delta_base=base.number if base else None,
            freshest_url=partition_url(base_url, ca_name, partition, delta=True),
            partition_url=partition_url(base_url, ca_name, partition),
        )
        crl = CrlRecord(
            ca_name=ca_name,
            kind=kind,
            number=number,
            base_number=base.number if base else None,
            this_update=now,
            next_update=now + validity,
            entries=entries.count,
            der=der,
            partition=partition,
            sha256=hashlib.sha256(der).hexdigest(),
        )
        if len(der) > self._max_bytes:
            log.warning(
                "CRL partition %s of %s is %d bytes (over %d): raise partition_buckets",
                partition,
                ca_name,
                len(der),
                self._max_bytes,
            )
        if self._store.put_partition_crl(crl):
            self._authority.record_event(
                actor,
                "crl.published",
                ca_name,
                {
                    "kind": kind,
                    "partition": partition,
                    "number": number,
                    "entries": entries.count,
                    "bytes": len(der),
                },
            )
        return crl
