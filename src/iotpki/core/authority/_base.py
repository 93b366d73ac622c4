"""The authority's shared state, value types and the CA reads every part of it needs."""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)

from iotpki.core import policy
from iotpki.core.keyquality import KeyBlocklist
from iotpki.core.models import CARecord, CAStatus, CertificateRecord, KeyAlgorithm
from iotpki.core.partitions import PartitionScheme, partition_extensions
from iotpki.core.ports import Clock, KeyBackend, Linter, Store, StoreTransaction, SystemClock
from iotpki.core.ports.shared import RateCounters
from iotpki.errors import ConfigError, NotFound

EventListener = Callable[[str, str, dict[str, object]], None]
"""Called after commit with (action, actor, data) for every audited authority event."""

RecordHook = Callable[[StoreTransaction, CertificateRecord], None]
"""Runs inside the transaction that records a new certificate."""

log = logging.getLogger("iotpki.core.authority")
DER = serialization.Encoding.DER
CA_CACHE_SECONDS = 10.0


def serial_hex(serial: int) -> str:
    """The canonical text form of a serial number: lower-case hex."""
    return format(serial, "x")


@dataclass(frozen=True, slots=True)
class AuthorityConfig:
    """What the authority needs from the settings."""

    public_base_url: str
    profiles: Mapping[str, policy.Profile] = field(default_factory=lambda: policy.DEFAULT_PROFILES)
    default_ca: str | None = None
    organization: str | None = None
    key_blocklist: KeyBlocklist | None = None  # e.g. the Debian weak keys (CVE-2008-0166)
    refusal_window: timedelta = timedelta(seconds=60)  # anonymous refusals fold per window
    crl_partitions: PartitionScheme | None = None  # None: certificates name the CA-wide CRL


@dataclass(frozen=True, slots=True)
class Issued:
    """A recorded certificate and its chain (leaf first, up to but excluding the root)."""

    record: CertificateRecord
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]


@dataclass(slots=True)
class SigningCA:
    """A CA that issues here, loaded once and cached for a few seconds."""

    record: CARecord
    certificate: x509.Certificate
    signer: CertificateIssuerPrivateKeyTypes
    loaded_at: float
    chain: tuple[x509.Certificate, ...]  # this CA up to, not including, the root
    issuer_extensions: tuple[x509.ExtensionType, ...]  # AKI, AIA, CRL distribution points


def tbs_builder(
    signing: SigningCA,
    public_key: CertificatePublicKeyTypes,
    decision: policy.Decision,
    config: AuthorityConfig,
) -> x509.CertificateBuilder:
    """The to-be-signed certificate ``signing`` would issue for this key and decision.

    Its CRL distribution point and freshestCRL name the certificate's partition, fixed here.
    """
    ca_cert = signing.certificate
    serial = x509.random_serial_number()
    builder = (
        x509.CertificateBuilder()
        .subject_name(decision.subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(decision.not_before)
        .not_valid_after(decision.not_after)
    )
    for extension, critical in decision.extensions:
        builder = builder.add_extension(extension, critical=critical)
    builder = builder.add_extension(
        x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False
    )
    for extension in partition_extensions(
        signing.issuer_extensions,
        config.crl_partitions,
        base_url=config.public_base_url,
        ca_name=signing.record.name,
        serial=serial,
        not_after=decision.not_after,
    ):
        builder = builder.add_extension(extension, critical=False)
    return builder


class AuthorityBase:
    """State shared by the parts of the authority, its event listeners and its CA reads."""

    def __init__(
        self,
        store: Store,
        key_backends: Mapping[str, KeyBackend],
        config: AuthorityConfig,
        *,
        clock: Clock | None = None,
        linter: Linter | None = None,
        rng: random.Random | None = None,
        rates: RateCounters | None = None,
    ) -> None:
        """``rates`` (shared by the replicas) hold rotation campaigns to their rate; without
        them only the campaigns' windows spread renewals."""
        self._store = store
        self._rates = rates
        self._keys = dict(key_backends)
        self._config = config
        self._clock = clock or SystemClock()
        self._linter = linter
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._signing: dict[str, SigningCA] = {}
        self._lint_keys: dict[KeyAlgorithm, CertificateIssuerPrivateKeyTypes] = {}
        self._templates_checked: set[tuple[str, str]] = set()
        self._listeners: list[EventListener] = []
        self._default_ca: tuple[str, float] | None = None

    def subscribe(self, listener: EventListener) -> None:
        """Call ``listener`` after each committed event (metrics, monitoring)."""
        self._listeners.append(listener)

    def _emit(self, action: str, actor: str, data: dict[str, object]) -> None:
        for listener in self._listeners:
            try:
                listener(action, actor, data)
            except Exception:  # a listener's failure never fails the operation
                log.exception("event listener failed on %s", action)

    @property
    def store(self) -> Store:
        """The store this authority writes to."""
        return self._store

    @property
    def clock(self) -> Clock:
        """The clock this authority reads."""
        return self._clock

    def _backend(self, name: str) -> KeyBackend:
        backend = self._keys.get(name)
        if backend is None:
            raise ConfigError(f"key backend {name!r} is not configured", backend=name)
        return backend

    def _forget_cas(self) -> None:
        """Drop the cached signing CAs and default CA after a CA changed status."""
        with self._lock:
            self._signing.clear()
            self._default_ca = None

    def _profile(self, name: str) -> policy.Profile:
        profile = self._config.profiles.get(name)
        if profile is None:
            raise NotFound(f"no profile named {name!r}", profile=name)
        return profile

    def profile(self, name: str) -> policy.Profile:
        """A configured profile by name."""
        return self._profile(name)

    def label_target(self, label: str | None, protocol: str) -> tuple[str | None, str | None]:
        """(profile, CA) an enrollment path label picks (EST, CMP): a profile name first, then
        a CA name; NotFound ("no <protocol> label") when it is neither."""
        if label is None:
            return None, None
        if label in self._config.profiles:
            return label, None
        try:
            self.get_ca(label)
        except NotFound:
            raise NotFound(f"no {protocol} label {label!r}") from None
        return None, label

    def list_cas(self) -> list[CARecord]:
        """Every CA of the installation."""
        with self._store.transaction(readonly=True) as tx:
            return tx.list_cas()

    def get_ca(self, name: str) -> CARecord:
        """A CA by name."""
        with self._store.transaction(readonly=True) as tx:
            record = tx.get_ca(name)
        if record is None:
            raise NotFound(f"no CA named {name!r}", ca=name)
        return record

    def chain(self, ca_name: str) -> list[x509.Certificate]:
        """The CA's certificate followed by its parents', root last."""
        certs: list[x509.Certificate] = []
        with self._store.transaction(readonly=True) as tx:
            name: str | None = ca_name
            while name is not None:
                record = tx.get_ca(name)
                if record is None or record.certificate_der is None:
                    raise NotFound(f"no active CA named {name!r}", ca=name)
                certs.append(record.certificate)
                name = record.parent
        return certs

    def ca_certificates(self, ca_name: str) -> list[x509.Certificate]:
        """What a device is given to trust (EST ``cacerts``, RFC 7030 section 4.1.3; MQTT
        ``cacerts`` and the trust bundle): the CA's chain, root last, then the other active
        roots and the rollover cross-certificates (issued by this root, or certifying its key:
        new-with-old)."""
        certs = self.chain(ca_name)
        root = certs[-1]
        for record in self.list_cas():
            if record.status is CAStatus.ACTIVE and record.certificate_der is not None:
                cert = record.certificate
                related = root.subject in (cert.issuer, cert.subject)
                if cert not in certs and (related or cert.issuer == cert.subject):
                    certs.append(cert)
        return certs
