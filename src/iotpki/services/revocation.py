"""Revocation publication in the server: CRLs, the OCSP responder and their background jobs.

Wires the core's ``CrlPublisher`` and ``OcspResponder`` to the store, the settings and the data
directory: published CRLs are also written to ``<home>/crl/<ca>.crl`` and ``<ca>-delta.crl``
(write, then rename), after which the configured command runs (e.g. to make a broker reload).
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path

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
from iotpki.services.jobs import Job, JobRunner
from iotpki.settings import RevocationPeriodSettings, Settings
from iotpki.store.revocation import SqlRevocationStore

__all__ = ["RevocationService", "crl_file", "revocation_config"]

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


class RevocationService:
    """CRL and OCSP publication for one server process."""

    def __init__(self, inst: Installation, *, command_env: Mapping[str, str] | None = None) -> None:
        self.installation = inst
        self.command_env = command_env  # None: the publish command gets this process's env
        self.config = revocation_config(inst.settings)
        self.store = SqlRevocationStore(inst.store)
        self.publisher = CrlPublisher(inst.authority, self.store, self.config)
        self.responder = OcspResponder(inst.authority, self.store, self.config)
        self._crls: dict[tuple[str, CrlKind], CrlRecord] = {}
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
        inst.authority.subscribe(self._on_event)

    # -- events and jobs ---------------------------------------------------------------------

    def _on_event(self, action: str, actor: str, data: dict[str, object]) -> None:
        """Revocation in this process: drop the OCSP responses at once, hurry the CRL job."""
        if action == "certificate.revoked":
            self.responder.invalidate(str(data["ca"]), str(data["serial"]))
            self.runner.wake(("crl-publish", "revocation-watch"))
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

    def start(self) -> None:
        """Prepare the responders and start the background jobs."""
        self.refresh_responders()
        self.runner.start()

    def stop(self) -> None:
        """Stop the background jobs."""
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
            "IOTPKI_CRL_FILES": " ".join(
                str(crl_file(self.installation.home, r.ca_name, r.kind)) for r in records
            ),
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

    # -- what the routes ask (``protocols.crl.CrlSource``) -----------------------------------

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
