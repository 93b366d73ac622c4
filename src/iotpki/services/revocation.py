"""Revocation publication in the server: CRLs, the OCSP responder and their background jobs.

Wires the core's ``CrlPublisher``, ``PartitionPublisher`` and ``OcspResponder`` to the store,
the settings and the data directory. Published CRLs are also written under ``<home>/crl/`` in the
server's URL layout (``<ca>.crl``, ``<ca>-delta.crl``, ``<ca>/<partition>.crl``,
``<ca>/<partition>-delta.crl`` and ``<ca>/index.json``), each written then renamed, so the
directory can be served as is by any static web server or CDN; the configured command then runs
once per batch with the changed files in ``IOTPKI_CRL_FILES`` (e.g. to upload or reload a broker).
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path

from iotpki.core.partition_publication import PartitionPublisher, partition_index
from iotpki.core.policy import parse_duration
from iotpki.core.publication import (
    CrlKind,
    CrlPublisher,
    CrlRecord,
    RevocationConfig,
    RevocationPeriods,
)
from iotpki.core.responder import OcspResponder
from iotpki.errors import ConfigError
from iotpki.files import write_atomically
from iotpki.services.installation import Installation
from iotpki.services.jobs import Job, JobRunner, JobScope
from iotpki.settings import RevocationPeriodSettings, Settings
from iotpki.store.revocation import SqlRevocationStore

__all__ = ["RevocationService", "crl_file", "partition_file", "revocation_config"]

log = logging.getLogger(__name__)

_KINDS: tuple[CrlKind, CrlKind] = ("full", "delta")
_WATCH_OVERLAP = timedelta(seconds=2)


def revocation_config(settings: Settings) -> RevocationConfig:
    """The core's revocation settings from the typed settings (durations parsed here)."""
    section = settings.revocation
    defaults = _periods(section, RevocationPeriods())
    per_ca = {name: _periods(values, defaults) for name, values in section.cas.items()}
    try:
        delay = parse_duration(section.revocation_delay)
        full_delay = parse_duration(section.full_crl_delay)
    except (ValueError, ConfigError) as exc:
        raise ConfigError(f"setting revocation: {exc}") from exc
    return RevocationConfig(
        public_base_url=settings.effective_public_base_url,
        defaults=defaults,
        per_ca=per_ca,
        revocation_delay=delay,
        full_crl_delay=full_delay,
        ocsp_presign_limit=section.ocsp_presign_limit,
        ocsp_max_certs=section.ocsp_max_certs,
        ocsp_max_nonce=section.ocsp_max_nonce,
    )


def _periods(values: RevocationPeriodSettings, base: RevocationPeriods) -> RevocationPeriods:
    parsed: dict[str, timedelta] = {}
    for name in RevocationPeriodSettings.model_fields:
        text = getattr(values, name)
        if text is None:
            continue
        try:
            parsed[name] = parse_duration(text)
        except (ValueError, ConfigError) as exc:
            raise ConfigError(f"setting revocation.{name}: {exc}") from exc
    periods = RevocationPeriods(**{**_as_dict(base), **parsed})
    if periods.crl_interval >= periods.crl_validity:
        raise ConfigError("setting revocation: crl_interval must be shorter than crl_validity")
    if periods.delta_crl_interval >= periods.delta_crl_validity:
        raise ConfigError(
            "setting revocation: delta_crl_interval must be shorter than delta_crl_validity"
        )
    return periods


def _as_dict(periods: RevocationPeriods) -> dict[str, timedelta]:
    return {name: getattr(periods, name) for name in RevocationPeriods.__slots__}


def crl_file(home: Path, ca_name: str, kind: CrlKind) -> Path:
    """Where a CRL is written in the data directory."""
    suffix = "-delta" if kind == "delta" else ""
    return home / "crl" / f"{ca_name}{suffix}.crl"


def partition_file(home: Path, ca_name: str, partition: str, kind: CrlKind) -> Path:
    """Where a partition's CRL is written in the data directory (its URL path under ``crl/``)."""
    suffix = "-delta" if kind == "delta" else ""
    return home / "crl" / ca_name / f"{partition}{suffix}.crl"


class RevocationService:
    """CRL and OCSP publication for one server process."""

    def __init__(self, inst: Installation, *, command_env: Mapping[str, str] | None = None) -> None:
        self.installation = inst
        self.command_env = command_env  # None: the publish command gets this process's env
        self.config = revocation_config(inst.settings)
        self.store = SqlRevocationStore(inst.store)
        self.publisher = CrlPublisher(inst.authority, self.store, self.config)
        self.responder = OcspResponder(
            inst.authority, self.store, self.config, inst.store, inst.keys["file"]
        )
        self.partitions = PartitionPublisher(
            inst.authority,
            self.store,
            self.config,
            delay=_partition_delay(inst.settings),
            max_bytes=inst.settings.revocation.partition_max_bytes,
        )
        self._crls: dict[tuple[str, CrlKind], CrlRecord] = {}
        self._partition_crls: dict[tuple[str, str, CrlKind], CrlRecord] = {}
        self._indexes: dict[str, bytes] = {}
        self._issuers: set[str] = set()
        self._watched_at: datetime | None = None
        self.runner = JobRunner(
            [
                Job("ocsp-responders", 60.0, self.refresh_responders),
                Job("crl-publish", 1.0, self.publish_due, exclusive=True),
                Job("revocation-watch", 1.0, self.watch),
                Job("ocsp-presign", 1.0, self.presign),
            ],
            self.store.exclusive,
        )
        # Partitions on a runner of their own: a CA-wide rebuild of a million entries, or a batch
        # of OCSP pre-signing, must not hold back a revocation's partition.
        self.partition_runner = JobRunner(
            [
                Job("crl-partitions", 0.5, self.make_partitions, exclusive=True),
                Job("crl-partitions-load", 0.5, self.reload_partitions),
            ],
            self.store.exclusive,
        )
        inst.authority.subscribe(self._on_event)

    # -- events and jobs ---------------------------------------------------------------------

    def _on_event(self, action: str, actor: str, data: dict[str, object]) -> None:
        """Revocation in this process: drop the OCSP responses at once, hurry the CRL job."""
        if action == "certificate.revoked":
            self.responder.invalidate(str(data["ca"]), str(data["serial"]))
            self.runner.wake(("crl-publish", "revocation-watch"))
            self.partition_runner.wake()
        elif action in ("ca.activated", "ca.created"):
            self.runner.wake(("ocsp-responders",))

    def refresh_responders(self) -> None:
        """Learn new CAs and renew responder certificates before they expire."""
        self.responder.refresh_issuers()
        self._issuers = set(self.publisher.signing_cas())
        self.responder.ensure_responders(self.installation.authority.clock.now())

    def publish_due(self) -> list[CrlRecord]:
        """Generate the CRLs that are due (one replica at a time), then publish them here."""
        made = self.publisher.publish_due(self.installation.authority.clock.now())
        self.reload_crls()
        return made

    def make_partitions(self) -> list[CrlRecord]:
        """Generate the partition CRLs that are due and drop expired partitions (one replica)."""
        made: list[CrlRecord] = []
        for ca_name in self.publisher.signing_cas():
            now = self.installation.authority.clock.now()
            self.partitions.expire(ca_name, now)
            made.extend(self.partitions.publish_due(ca_name, now))
        return made

    def publish_partitions(self) -> list[CrlRecord]:
        """Make the partition CRLs that are due, then publish them here."""
        made = self.make_partitions()
        self.reload_partitions()
        return made

    def watch(self) -> None:
        """Follow revocations made by other processes and CRLs made by other replicas."""
        now = self.installation.authority.clock.now()
        since = (self._watched_at or now) - _WATCH_OVERLAP
        self.responder.invalidate_since(since)
        self._watched_at = now
        self.reload_crls()

    def presign(self) -> None:
        """Sign OCSP responses ahead of need and renew those past half their validity."""
        now = self.installation.authority.clock.now()
        self.responder.refresh(now)
        self.responder.presign(now)

    def start(self, scope: JobScope = "all") -> None:
        """Prepare the responders and start the background jobs of ``scope``."""
        self.refresh_responders()
        self.runner.start(scope)
        self.partition_runner.start(scope)

    def stop(self) -> None:
        """Stop the background jobs."""
        self.partition_runner.stop()
        self.runner.stop()

    # -- CRLs ---------------------------------------------------------------------------------

    def reload_crls(self) -> list[CrlRecord]:
        """Load CRLs newer than those in memory, write them to files, run the command."""
        loaded = []
        for ca_name in self.publisher.signing_cas():
            for kind in _KINDS:
                held = self._crls.get((ca_name, kind))
                info = self.store.get_crl(ca_name, kind, with_der=False)
                if info is None or (held is not None and held.number >= info.number):
                    continue
                record = self.store.get_crl(ca_name, kind)
                if record is None or record.der is None:
                    continue
                self._crls[(ca_name, kind)] = record
                self._write_file(record)
                loaded.append(record)
        if loaded:
            self._run_command(loaded)
        return loaded

    def reload_partitions(self) -> list[CrlRecord]:
        """Load partition CRLs newer than those in memory; write them and each CA's index."""
        loaded: list[CrlRecord] = []
        for ca_name in self.publisher.signing_cas():
            records = self.store.partition_crls(ca_name)
            live = {(r.partition, r.kind) for r in records}
            changed = False
            for info in records:
                assert info.partition is not None
                key = (ca_name, info.partition, info.kind)
                held = self._partition_crls.get(key)
                if held is not None and held.number >= info.number:
                    continue
                record = self.store.get_partition_crl(ca_name, info.partition, info.kind)
                if record is None or record.der is None:
                    continue
                self._partition_crls[key] = record
                path = partition_file(self.installation.home, ca_name, info.partition, info.kind)
                write_atomically(path, record.der, mode=0o600)
                loaded.append(record)
                changed = True
            for key in [k for k in self._partition_crls if k[0] == ca_name]:
                if (key[1], key[2]) not in live:  # an expired partition
                    del self._partition_crls[key]
                    partition_file(self.installation.home, *key).unlink(missing_ok=True)
                    changed = True
            if changed or ca_name not in self._indexes:
                self._write_index(ca_name, records)
        if loaded:
            self._run_command(loaded)
        return loaded

    def _write_index(self, ca_name: str, records: list[CrlRecord]) -> None:
        index = partition_index(self.config.public_base_url, ca_name, records)
        body = json.dumps(index, indent=1, sort_keys=True).encode() + b"\n"
        self._indexes[ca_name] = body
        write_atomically(self.installation.home / "crl" / ca_name / "index.json", body, 0o600)

    def _write_file(self, record: CrlRecord) -> None:
        assert record.der is not None
        path = crl_file(self.installation.home, record.ca_name, record.kind)
        write_atomically(path, record.der, mode=0o600)  # in the private home

    def _run_command(self, records: list[CrlRecord]) -> None:
        command = self.installation.settings.revocation.publish_command
        if not command:
            return
        env = {
            **(os.environ if self.command_env is None else self.command_env),
            "IOTPKI_CRL_FILES": " ".join(str(self._file_of(r)) for r in records),
        }
        try:
            done = subprocess.run(
                shlex.split(command), env=env, timeout=60, check=False, capture_output=True
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.error("CRL publish command failed: %s", exc)
            return
        if done.returncode != 0:
            log.error(
                "CRL publish command exited %d: %s",
                done.returncode,
                done.stderr.decode(errors="replace")[-500:],
            )

    def _file_of(self, record: CrlRecord) -> Path:
        home = self.installation.home
        if record.partition is None:
            return crl_file(home, record.ca_name, record.kind)
        return partition_file(home, record.ca_name, record.partition, record.kind)

    # -- what the routes ask (``protocols.crl.CrlSource``) -----------------------------------

    def partition_crl(self, ca_name: str, partition: str, kind: CrlKind) -> CrlRecord | None:
        """A partition's CRL held in memory (loaded by the jobs)."""
        return self._partition_crls.get((ca_name, partition, kind))

    def partition_index_json(self, ca_name: str) -> bytes | None:
        """The CA's partition index document held in memory."""
        return self._indexes.get(ca_name)

    def cached_crl(self, ca_name: str, kind: CrlKind) -> CrlRecord | None:
        """The CRL held in memory."""
        return self._crls.get((ca_name, kind))

    def load_crl(self, ca_name: str, kind: CrlKind) -> CrlRecord | None:
        """The CRL from the store, kept in memory."""
        record = self.store.get_crl(ca_name, kind)
        if record is not None:
            self._crls[(ca_name, kind)] = record
        return record

    def is_crl_issuer(self, ca_name: str) -> bool:
        """Whether the CA publishes CRLs here."""
        if ca_name not in self._issuers:
            self._issuers = set(self.publisher.signing_cas())
        return ca_name in self._issuers

    def crl_max_age(self, ca_name: str) -> timedelta:
        """How long clients may cache this CA's CRLs."""
        return self.config.periods(ca_name).crl_max_age

    def now(self) -> datetime:
        """The authority's clock."""
        return self.installation.authority.clock.now()


def _partition_delay(settings: Settings) -> timedelta:
    try:
        return parse_duration(settings.revocation.partition_delay)
    except (ValueError, ConfigError) as exc:
        raise ConfigError(f"setting revocation.partition_delay: {exc}") from exc
