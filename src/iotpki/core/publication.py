"""CRL publication: when each CA's complete and delta CRLs are due, and generating them.

The decision reads only the store, never process memory, so every replica (and a CLI in another
process) reaches the same answer; the server's job runner makes sure only one replica acts on it.
A CRL is never generated inside a revoke call: revocations make the next CRL due after a short
delay, so a burst of revocations costs one signing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal, Protocol

from cryptography import x509

from iotpki.core.authority import Authority
from iotpki.core.revocation import CrlEntry, build_crl

__all__ = [
    "CrlKind",
    "CrlPublisher",
    "CrlRecord",
    "RevocationConfig",
    "RevocationPeriods",
    "RevocationStore",
    "StatusRow",
    "crl_url",
]

CrlKind = Literal["full", "delta"]

StatusRow = tuple[int, str, str, datetime | None, str | None]
"""(row id, serial hex, status, revocation time, reason) of one certificate, for pre-signing."""


@dataclass(frozen=True, slots=True)
class CrlRecord:
    """The latest complete or delta CRL of a CA as the store keeps it (``der`` may be omitted)."""

    ca_name: str
    kind: CrlKind
    number: int
    base_number: int | None
    this_update: datetime
    next_update: datetime
    entries: int
    der: bytes | None = None
    partition: str | None = None  # None: the CA-wide CRL (``core.partitions``)
    sha256: str | None = None  # of the DER, kept for partitions' index


class RevocationStore(Protocol):
    """What revocation publication needs from the store, beyond the ``Store`` port."""

    def next_crl_number(self, ca_name: str) -> int:
        """Allocate the CA's next CRL number (complete and delta CRLs share the sequence)."""
        ...

    def get_crl(self, ca_name: str, kind: CrlKind, *, with_der: bool = True) -> CrlRecord | None:
        """The latest CRL of that kind."""
        ...

    def put_crl(self, record: CrlRecord) -> bool:
        """Keep ``record`` unless a CRL with a higher number is stored; whether it was kept."""
        ...

    def revoked_entries(
        self, ca_name: str, *, valid_at: datetime, revoked_since: datetime | None = None
    ) -> Iterator[CrlEntry]:
        """Stream the CA's revoked certificates not expired at ``valid_at``."""
        ...

    def first_revocation_since(self, ca_name: str, since: datetime) -> datetime | None:
        """The earliest revocation time at or after ``since`` (None when there is none)."""
        ...

    def revocations_since(self, ca_name: str, since: datetime, limit: int) -> list[str]:
        """Serials (hex) of the CA's certificates revoked at or after ``since``."""
        ...

    def certificate_statuses(
        self, ca_name: str, *, after_id: int, valid_at: datetime, limit: int
    ) -> list[StatusRow]:
        """Unexpired certificates of the CA in row order after ``after_id``."""
        ...

    def exclusive(self, name: str) -> AbstractContextManager[bool]:
        """Hold a lock named ``name`` across replicas if it is free; yields whether it is held."""
        ...


@dataclass(frozen=True, slots=True)
class RevocationPeriods:
    """How long CRLs and OCSP responses of one CA are valid and how often they are remade."""

    crl_validity: timedelta = timedelta(hours=24)
    crl_interval: timedelta = timedelta(hours=6)
    delta_crl_validity: timedelta = timedelta(hours=2)
    delta_crl_interval: timedelta = timedelta(minutes=30)
    ocsp_validity: timedelta = timedelta(hours=4)
    ocsp_max_age: timedelta = timedelta(minutes=15)
    crl_max_age: timedelta = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class RevocationConfig:
    """Revocation publication settings, per CA with defaults."""

    public_base_url: str
    defaults: RevocationPeriods = field(default_factory=RevocationPeriods)
    per_ca: Mapping[str, RevocationPeriods] = field(default_factory=dict)
    revocation_delay: timedelta = timedelta(seconds=5)
    full_crl_delay: timedelta = timedelta(seconds=60)
    ocsp_presign_limit: int = 100_000
    ocsp_max_certs: int = 16
    ocsp_max_nonce: int = 32

    def periods(self, ca_name: str) -> RevocationPeriods:
        """The periods of one CA."""
        return self.per_ca.get(ca_name, self.defaults)


def crl_url(base_url: str, ca_name: str, kind: CrlKind) -> str:
    """Where the CRL of that kind is published (the URLs certificates carry)."""
    suffix = "-delta" if kind == "delta" else ""
    return f"{base_url.rstrip('/')}/crl/{ca_name}{suffix}.crl"


class _Counted:
    """Passes entries through, counting them."""

    def __init__(self, entries: Iterable[CrlEntry]) -> None:
        self._entries = entries
        self.count = 0

    def __iter__(self) -> Iterator[CrlEntry]:
        for entry in self._entries:
            self.count += 1
            yield entry


class CrlPublisher:
    """Decides when CRLs are due and generates, signs and stores them."""

    def __init__(
        self, authority: Authority, store: RevocationStore, config: RevocationConfig
    ) -> None:
        self._authority = authority
        self._store = store
        self._config = config

    @property
    def config(self) -> RevocationConfig:
        """The settings in force."""
        return self._config

    def signing_cas(self) -> list[str]:
        """CAs whose key is held here: the ones this installation publishes CRLs for."""
        return [
            ca.name
            for ca in self._authority.list_cas()
            if ca.certificate_der is not None and ca.key_ref is not None
        ]

    def due(self, ca_name: str, now: datetime) -> list[CrlKind]:
        """Which CRLs of the CA need generating now, complete first."""
        periods = self._config.periods(ca_name)
        full = self._store.get_crl(ca_name, "full", with_der=False)
        kinds: list[CrlKind] = []
        if full is None or self._stale(
            full, now, periods.crl_interval, periods.crl_validity, self._config.full_crl_delay
        ):
            kinds.append("full")
        delta = self._store.get_crl(ca_name, "delta", with_der=False)
        if (
            kinds
            or delta is None
            or (full is not None and delta.base_number != full.number)
            or self._stale(
                delta,
                now,
                periods.delta_crl_interval,
                periods.delta_crl_validity,
                self._config.revocation_delay,
            )
        ):
            kinds.append("delta")
        return kinds

    def _stale(
        self,
        crl: CrlRecord,
        now: datetime,
        interval: timedelta,
        validity: timedelta,
        delay: timedelta,
    ) -> bool:
        """Scheduled time reached, expiry near, or a revocation older than ``delay`` unlisted."""
        if now >= crl.this_update + interval or now >= crl.next_update - validity / 4:
            return True
        if now <= crl.this_update:
            return False
        first = self._store.first_revocation_since(crl.ca_name, crl.this_update)
        return first is not None and now >= first + delay

    def publish_due(self, now: datetime, actor: str = "system:crl") -> list[CrlRecord]:
        """Generate every CRL that is due, for every CA held here."""
        made: list[CrlRecord] = []
        for ca_name in self.signing_cas():
            for kind in self.due(ca_name, now):
                made.append(self.generate(ca_name, kind, actor=actor))
        return made

    def generate(self, ca_name: str, kind: CrlKind, *, actor: str) -> CrlRecord:
        """Generate, sign and store one CRL of the CA (a delta needs a complete CRL first).

        RFC 5280 section 5.2.4: a delta CRL lists what changed since its base, the complete CRL
        whose number its delta CRL indicator carries; revocations are listed from the base's
        thisUpdate on, so one made in the same second as the base is never missed.
        """
        record, key = self._authority.crl_signer(ca_name)
        issuer: x509.Certificate = record.certificate
        periods = self._config.periods(ca_name)
        now = self._authority.clock.now()
        base: CrlRecord | None = None
        if kind == "delta":
            base = self._store.get_crl(ca_name, "full", with_der=False)
            if base is None:
                base = self.generate(ca_name, "full", actor=actor)
        number = self._store.next_crl_number(ca_name)
        entries = _Counted(
            self._store.revoked_entries(
                ca_name, valid_at=now, revoked_since=base.this_update if base else None
            )
        )
        validity = periods.delta_crl_validity if base else periods.crl_validity
        der = build_crl(
            issuer=issuer,
            key=key,
            entries=entries,
            number=number,
            this_update=now,
            next_update=now + validity,
            delta_base=base.number if base else None,
            freshest_url=crl_url(self._config.public_base_url, ca_name, "delta"),
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
        )
        if self._store.put_crl(crl):
            self._authority.record_event(
                actor,
                "crl.published",
                ca_name,
                {"kind": kind, "number": number, "entries": entries.count, "bytes": len(der)},
            )
        return crl

    def current(self, ca_name: str, kind: CrlKind) -> CrlRecord | None:
        """The latest stored CRL of that kind, with its DER."""
        return self._store.get_crl(ca_name, kind)

    def status(self, ca_name: str, now: datetime) -> dict[str, object]:
        """Publication status of one CA for operators (``iotpki ca show``, metrics)."""
        out: dict[str, object] = {}
        kinds: tuple[CrlKind, CrlKind] = ("full", "delta")
        for kind in kinds:
            crl = self._store.get_crl(ca_name, kind, with_der=False)
            if crl is None:
                out[kind] = None
                continue
            out[kind] = replace(crl, der=None)
        out["pending_since"] = None
        latest = out.get("delta") or out.get("full")
        if isinstance(latest, CrlRecord):
            out["pending_since"] = self._store.first_revocation_since(
                ca_name, latest.this_update + timedelta(seconds=1)
            )
        out["due"] = self.due(ca_name, now) if ca_name in self.signing_cas() else []
        return out
