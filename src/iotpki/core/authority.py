"""The certificate authority: the only code that signs certificates.

It is synchronous and knows nothing of HTTP; every change it makes is written to the audit log in
the same store transaction as the change, and a certificate is recorded before it is returned.
Refusals are audited in a transaction of their own and change nothing else; refusals of
anonymous requests go through :meth:`Authority.audit_refusal`, which folds repeats from one source
(:func:`iotpki.core.audit.fold_refusal`).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID

from iotpki.core import policy
from iotpki.core.audit import flush_refusals, fold_refusal, source_key
from iotpki.core.encoding import parse_serial
from iotpki.core.keyquality import KeyBlocklist, is_blocklisted
from iotpki.core.keytypes import (
    algorithm_of,
    generate_private_key,
    key_fingerprint,
    signature_hash,
)
from iotpki.core.models import (
    CAKind,
    CARecord,
    CAStatus,
    CertificateQuery,
    CertificateRecord,
    CertStatus,
    DeviceRecord,
    KeyAlgorithm,
    KeyAttestation,
    LintFinding,
    RevocationReason,
)
from iotpki.core.partitions import PartitionScheme, certificate_partition, partition_extensions
from iotpki.core.ports import Clock, KeyBackend, Linter, Store, StoreTransaction, SystemClock
from iotpki.errors import (
    AttestationRejected,
    BadSignature,
    ConfigError,
    Conflict,
    IotpkiError,
    KeyRejected,
    NotFound,
    PolicyViolation,
)

__all__ = ["Authority", "AuthorityConfig", "EventListener", "Issued", "RecordHook", "serial_hex"]

EventListener = Callable[[str, str, dict[str, object]], None]
"""Called after commit with (action, actor, data) for every audited authority event."""

RecordHook = Callable[[StoreTransaction, CertificateRecord], None]
"""Runs inside the transaction that records a new certificate."""

log = logging.getLogger(__name__)
_DER = serialization.Encoding.DER
_LINT_BLOCKING = ("ERROR", "FATAL")
_CA_CACHE_SECONDS = 10.0


def serial_hex(serial: int) -> str:
    """The canonical text form of a serial number: lower-case hex."""
    return format(serial, "x")


def _sans_text(sans: tuple[x509.GeneralName, ...] | list[x509.GeneralName]) -> tuple[str, ...]:
    prefixes = {
        x509.DNSName: "dns",
        x509.IPAddress: "ip",
        x509.UniformResourceIdentifier: "uri",
        x509.RFC822Name: "email",
    }
    return tuple(f"{prefixes.get(type(n), 'other')}:{n.value}" for n in sans)


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
class _SigningCA:
    record: CARecord
    certificate: x509.Certificate
    signer: CertificateIssuerPrivateKeyTypes
    loaded_at: float
    chain: tuple[x509.Certificate, ...]  # this CA up to, not including, the root
    issuer_extensions: tuple[x509.ExtensionType, ...]  # AKI, AIA, CRL distribution points


class Authority:
    """Issue, renew and revoke certificates; create and import CAs."""

    def __init__(
        self,
        store: Store,
        key_backends: Mapping[str, KeyBackend],
        config: AuthorityConfig,
        *,
        clock: Clock | None = None,
        linter: Linter | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._keys = dict(key_backends)
        self._config = config
        self._clock = clock or SystemClock()
        self._linter = linter
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._signing: dict[str, _SigningCA] = {}
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

    # -- audit helpers -------------------------------------------------------------------------

    def record_event(self, actor: str, action: str, target: str, data: dict[str, object]) -> None:
        """Append an event that accompanies no other change (e.g. a refusal)."""
        with self._store.transaction() as tx:
            tx.append_audit(self._clock.now(), actor, action, target, data)
        self._emit(action, actor, data)

    def audit_refusal(
        self,
        exc: IotpkiError,
        *,
        source: str,
        actor: str,
        action: str,
        target: str,
        extra: Mapping[str, object] | None = None,
    ) -> None:
        """Audit the refusal of an anonymous request from ``source`` (once per error).

        The first refusal of a source, action and code in a window is written at once; the
        repeats are counted and written as one summary entry when the window closes.
        """
        if exc.audited:
            return
        exc.audited = True
        data: dict[str, object] = {"reason": exc.message[:512], "code": exc.code, **(extra or {})}
        with self._store.transaction() as tx:
            fold_refusal(
                tx,
                self._clock.now(),
                self._config.refusal_window,
                source=source_key(source),
                actor=actor,
                action=action,
                target=target[:256],
                data=data,
            )
        self._emit(action, actor, data)

    def flush_refusals(self) -> int:
        """Write the summary entry of every closed refusal window; how many were written."""
        with self._store.transaction() as tx:
            return flush_refusals(tx, self._clock.now(), self._config.refusal_window)

    @contextmanager
    def _refusals_audited(self, actor: str, action: str, target: str) -> Iterator[None]:
        try:
            yield
        except IotpkiError as exc:
            if exc.audited:
                raise
            exc.audited = True
            self.record_event(
                actor,
                f"{action}.refused",
                target,
                {"reason": exc.message, "code": exc.code, **_refusal_labels(exc)},
            )
            raise

    # -- CAs ------------------------------------------------------------------------------------

    def list_cas(self) -> list[CARecord]:
        """Every CA of the installation."""
        with self._store.transaction() as tx:
            return tx.list_cas()

    def get_ca(self, name: str) -> CARecord:
        """A CA by name."""
        with self._store.transaction() as tx:
            record = tx.get_ca(name)
        if record is None:
            raise NotFound(f"no CA named {name!r}", ca=name)
        return record

    def default_issuing_ca(self) -> str:
        """The CA used when a request names none (looked up at most every few seconds)."""
        if self._config.default_ca:
            return self._config.default_ca
        now = time.monotonic()
        cached = self._default_ca
        if cached is not None and now - cached[1] < _CA_CACHE_SECONDS:
            return cached[0]
        active = [
            ca
            for ca in self.list_cas()
            if ca.kind is CAKind.ISSUING and ca.status is CAStatus.ACTIVE
        ]
        if not active:
            raise ConfigError("no active issuing CA: run `iotpki init` first")
        self._default_ca = (active[0].name, now)
        return active[0].name

    def chain(self, ca_name: str) -> list[x509.Certificate]:
        """The CA's certificate followed by its parents', root last."""
        certs: list[x509.Certificate] = []
        with self._store.transaction() as tx:
            name: str | None = ca_name
            while name is not None:
                record = tx.get_ca(name)
                if record is None or record.certificate_der is None:
                    raise NotFound(f"no active CA named {name!r}", ca=name)
                certs.append(record.certificate)
                name = record.parent
        return certs

    def _subject_for_ca(self, common_name: str) -> x509.Name:
        attrs = []
        if self._config.organization:
            attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, self._config.organization))
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        return x509.Name(attrs)

    def _backend(self, name: str) -> KeyBackend:
        backend = self._keys.get(name)
        if backend is None:
            raise ConfigError(f"key backend {name!r} is not configured", backend=name)
        return backend

    def create_root(
        self,
        name: str,
        *,
        common_name: str,
        algorithm: KeyAlgorithm,
        lifetime: timedelta,
        backend: str,
        actor: str,
    ) -> CARecord:
        """Create a self-signed root CA (pathLen 1) with a new key."""
        self._require_new_ca(name)
        keys = self._backend(backend)
        key_ref = keys.generate(f"ca-{name}", algorithm)
        signer = keys.signer(key_ref)
        subject = self._subject_for_ca(common_name)
        now = self._clock.now()
        ski = x509.SubjectKeyIdentifier.from_public_key(signer.public_key())
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(signer.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=1))
            .not_valid_after(now + lifetime)
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(_ca_key_usage(), critical=True)
            .add_extension(ski, critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
            )
        )
        cert = builder.sign(signer, signature_hash(signer))
        record = CARecord(
            name=name,
            kind=CAKind.ROOT,
            status=CAStatus.ACTIVE,
            parent=None,
            key_backend=backend,
            key_ref=key_ref,
            certificate_der=cert.public_bytes(_DER),
            created_at=now,
        )
        with self._store.transaction() as tx:
            tx.put_ca(record)
            tx.append_audit(now, actor, "ca.created", name, _ca_audit(record, cert))
        return record

    def create_issuing(
        self,
        name: str,
        *,
        parent: str,
        common_name: str,
        algorithm: KeyAlgorithm,
        lifetime: timedelta,
        backend: str,
        actor: str,
    ) -> CARecord:
        """Create an issuing CA (pathLen 0) signed by a parent whose key is here."""
        csr = self.create_ca_csr(
            name, common_name=common_name, algorithm=algorithm, backend=backend, actor=actor
        )
        cert = self.sign_ca_csr(csr, parent=parent, lifetime=lifetime, actor=actor)
        return self.import_ca(name, cert, actor=actor)

    def _require_new_ca(self, name: str) -> None:
        if not policy.is_valid_name(name):
            raise PolicyViolation(f"not a valid CA name: {name!r}", ca=name)
        with self._store.transaction() as tx:
            if tx.get_ca(name) is not None:
                raise Conflict(f"a CA named {name!r} exists already", ca=name)

    def create_ca_csr(
        self,
        name: str,
        *,
        common_name: str,
        algorithm: KeyAlgorithm,
        backend: str,
        actor: str,
    ) -> x509.CertificateSigningRequest:
        """Create a pending issuing CA: a new key and a CSR for the (offline) parent to sign."""
        self._require_new_ca(name)
        keys = self._backend(backend)
        key_ref = keys.generate(f"ca-{name}", algorithm)
        signer = keys.signer(key_ref)
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(self._subject_for_ca(common_name))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(signer, signature_hash(signer))
        )
        now = self._clock.now()
        record = CARecord(
            name=name,
            kind=CAKind.ISSUING,
            status=CAStatus.PENDING,
            parent=None,
            key_backend=backend,
            key_ref=key_ref,
            certificate_der=None,
            csr_der=csr.public_bytes(_DER),
            created_at=now,
        )
        with self._store.transaction() as tx:
            tx.put_ca(record)
            tx.append_audit(now, actor, "ca.csr_created", name, {"algorithm": str(algorithm)})
        return csr

    def sign_ca_csr(
        self,
        csr: x509.CertificateSigningRequest,
        *,
        parent: str,
        lifetime: timedelta | None = None,
        actor: str,
    ) -> x509.Certificate:
        """Sign a subordinate CA's CSR with a CA whose key is here (the root's machine)."""
        with self._refusals_audited(actor, "ca.sign", parent):
            if not csr.is_signature_valid:
                raise BadSignature("the CA CSR's signature does not verify")
            profile = self._profile("sub-ca")
            signing = self._signing_ca(parent)
            if signing.record.kind is not CAKind.ROOT:
                raise PolicyViolation("only a root CA signs subordinate CAs here", ca=parent)
            decision = policy.decide(
                csr,
                profile,
                now=self._clock.now(),
                lifetime=lifetime,
                ca_not_after=signing.certificate.not_valid_after_utc,
            )
            cert = self._sign(signing, csr.public_key(), decision)
            self._record_issue(signing, cert, decision, profile, actor, kind="ca")
        return cert

    def import_ca(
        self,
        name: str,
        certificate: x509.Certificate,
        *,
        parent_certificate: x509.Certificate | None = None,
        parent_name: str | None = None,
        actor: str,
    ) -> CARecord:
        """Activate a pending CA with the certificate its parent signed."""
        with self._refusals_audited(actor, "ca.import", name):
            with self._store.transaction() as tx:
                pending = tx.get_ca(name)
                parents = tx.list_cas()
            if pending is None or pending.status is not CAStatus.PENDING:
                raise Conflict(f"no pending CA named {name!r} to import into", ca=name)
            if pending.key_backend is None or pending.key_ref is None:
                raise ConfigError(f"pending CA {name!r} has no key", ca=name)
            own_key = self._backend(pending.key_backend).public_key(pending.key_ref)
            if key_fingerprint(certificate.public_key()) != key_fingerprint(own_key):
                raise PolicyViolation("the certificate is not for this CA's key", ca=name)
            parent = _find_parent(certificate, parents, parent_certificate)
            now = self._clock.now()
            with self._store.transaction() as tx:
                if parent is None:
                    if parent_certificate is None:
                        raise PolicyViolation("the parent CA certificate is needed")
                    parent = CARecord(
                        name=parent_name or "root",
                        kind=CAKind.ROOT,
                        status=CAStatus.ACTIVE,
                        parent=None,
                        key_backend=None,
                        key_ref=None,
                        certificate_der=parent_certificate.public_bytes(_DER),
                        created_at=now,
                    )
                    if tx.get_ca(parent.name) is not None:
                        raise Conflict(f"a CA named {parent.name!r} exists already", ca=parent.name)
                    tx.put_ca(parent)
                    tx.append_audit(now, actor, "ca.imported", parent.name, {"offline": True})
                record = CARecord(
                    name=name,
                    kind=CAKind.ISSUING,
                    status=CAStatus.ACTIVE,
                    parent=parent.name,
                    key_backend=pending.key_backend,
                    key_ref=pending.key_ref,
                    certificate_der=certificate.public_bytes(_DER),
                    csr_der=pending.csr_der,
                    created_at=pending.created_at,
                )
                tx.put_ca(record)
                tx.append_audit(now, actor, "ca.activated", name, _ca_audit(record, certificate))
        return record

    def _renewing_ca(self, name: str) -> _SigningCA:
        """The CA that renews certificates of ``name``: itself, or once a rollover retired it
        (``core.rollover``), the CA that issues now."""
        try:
            return self._signing_ca(name)
        except Conflict:
            if self.get_ca(name).status is not CAStatus.RETIRED:
                raise
            return self._signing_ca(self.default_issuing_ca())

    def set_ca_status(self, name: str, status: CAStatus, *, actor: str, reason: str) -> CARecord:
        """Retire (or reactivate) a CA; a retired CA issues nothing but still signs its CRLs."""
        record = self.get_ca(name)
        if record.status in (CAStatus.PENDING, CAStatus.REVOKED):
            raise Conflict(f"CA {name!r} is {record.status}", ca=name)
        changed = CARecord(
            name=record.name,
            kind=record.kind,
            status=status,
            parent=record.parent,
            key_backend=record.key_backend,
            key_ref=record.key_ref,
            certificate_der=record.certificate_der,
            csr_der=record.csr_der,
            created_at=record.created_at,
        )
        now = self._clock.now()
        with self._store.transaction() as tx:
            tx.put_ca(changed)
            tx.append_audit(now, actor, f"ca.{status}", name, {"reason": reason})
        with self._lock:
            self._signing.clear()
            self._default_ca = None
        self._emit(f"ca.{status}", actor, {"ca": name, "reason": reason})
        return changed

    def cross_certify(
        self,
        subject_ca: str,
        *,
        issuer_ca: str,
        name: str,
        not_after: datetime,
        actor: str,
    ) -> CARecord:
        """Certify ``subject_ca``'s key with ``issuer_ca``'s key (a rollover cross-certificate,
        RFC 4210 section 4.4) and keep it as the keyless CA record ``name``."""
        self._require_new_ca(name)
        subject = self.get_ca(subject_ca).certificate
        issuer_record, issuer_key = self.crl_signer(issuer_ca)
        issuer = issuer_record.certificate
        if issuer_record.status is not CAStatus.ACTIVE:
            raise Conflict(f"CA {issuer_ca!r} is {issuer_record.status}", ca=issuer_ca)
        constraints = subject.extensions.get_extension_for_class(x509.BasicConstraints).value
        now = self._clock.now()
        ski = subject.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject.subject)
            .issuer_name(issuer.subject)
            .public_key(subject.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=1))
            .not_valid_after(
                min(not_after, subject.not_valid_after_utc, issuer.not_valid_after_utc)
            )
            .add_extension(constraints, critical=True)
            .add_extension(_ca_key_usage(), critical=True)
            .add_extension(ski, critical=False)
            .add_extension(_aki(issuer), critical=False)
            .sign(issuer_key, signature_hash(issuer_key))
        )
        record = CARecord(
            name=name,
            kind=CAKind.ROOT,
            status=CAStatus.ACTIVE,
            parent=issuer_ca,
            key_backend=None,  # the key is the subject CA's; this record only carries the cert
            key_ref=None,
            certificate_der=cert.public_bytes(_DER),
            created_at=now,
        )
        with self._store.transaction() as tx:
            tx.put_ca(record)
            data = {**_ca_audit(record, cert), "subject_ca": subject_ca, "issuer_ca": issuer_ca}
            tx.append_audit(now, actor, "ca.cross_certified", name, data)
        self._emit("ca.cross_certified", actor, {"ca": name})
        return record

    def _signing_ca(self, name: str) -> _SigningCA:
        now = time.monotonic()
        with self._lock:
            cached = self._signing.get(name)
        if cached is not None and now - cached.loaded_at < _CA_CACHE_SECONDS:
            return cached
        record = self.get_ca(name)
        if record.status is not CAStatus.ACTIVE:
            raise Conflict(f"CA {name!r} is {record.status}, it does not issue", ca=name)
        if record.key_backend is None or record.key_ref is None:
            raise ConfigError(f"the key of CA {name!r} is not held here (offline CA)", ca=name)
        signer = self._backend(record.key_backend).signer(record.key_ref)
        chain = tuple(self.chain(name)[:-1])
        certificate = record.certificate
        issuer_extensions = (_aki(certificate), *self.revocation_extensions(name))
        signing = _SigningCA(record, certificate, signer, now, chain, issuer_extensions)
        with self._lock:
            self._signing[name] = signing
        return signing

    # -- end-entity certificates ---------------------------------------------------------------

    def _profile(self, name: str) -> policy.Profile:
        profile = self._config.profiles.get(name)
        if profile is None:
            raise NotFound(f"no profile named {name!r}", profile=name)
        return profile

    def profile(self, name: str) -> policy.Profile:
        """A configured profile by name."""
        return self._profile(name)

    def issue(
        self,
        csr: x509.CertificateSigningRequest,
        *,
        profile: str,
        actor: str,
        ca: str | None = None,
        device_id: str | None = None,
        lifetime: timedelta | None = None,
        within: RecordHook | None = None,
        attestation: KeyAttestation | None = None,
    ) -> Issued:
        """Issue a certificate for a CSR under a profile, record it, then return it.

        ``within`` runs in the transaction that records the certificate (e.g. to consume a
        one-time secret): if it raises, nothing is recorded and nothing is returned.
        ``attestation`` is the verified TPM attestation of the CSR's key; it is recorded with
        the certificate, and a profile that ``require_attestation`` refuses a key without one.
        """
        target = device_id or _cn_or_blank(csr)
        with self._refusals_audited(actor, "certificate.issue", target):
            prof = self._profile(profile)
            if prof.identity == "ca":
                raise PolicyViolation("CA certificates are made with `iotpki ca`, not issued")
            signing = self._signing_ca(ca or self.default_issuing_ca())
            # A root signs OCSP responder certificates too: it answers for its issuing CAs.
            if signing.record.kind is not CAKind.ISSUING and prof.identity != "responder":
                raise PolicyViolation("end-entity certificates come from an issuing CA")
            if not csr.is_signature_valid:
                raise BadSignature("the CSR's signature does not verify")
            self._check_template(prof, signing)
            decision = policy.decide(
                csr,
                prof,
                now=self._clock.now(),
                device_id=device_id,
                lifetime=lifetime,
                ca_not_after=signing.certificate.not_valid_after_utc,
            )
            _check_attestation(prof, csr.public_key(), attestation)
            cert = self._sign(signing, csr.public_key(), decision)
            self._pre_issuance_lint(prof, signing, csr.public_key(), decision)
            record = self._record_issue(
                signing,
                cert,
                decision,
                prof,
                actor,
                kind="issued",
                within=within,
                attestation=attestation,
            )
        return Issued(record, cert, (cert, *signing.chain))

    def issue_attestation_key(
        self,
        ak_public_key: CertificatePublicKeyTypes,
        decision: policy.Decision,
        profile: policy.Profile,
        *,
        actor: str,
        ca: str | None = None,
    ) -> Issued:
        """Sign and record a TPM attestation-key certificate whose content ``core.akca`` decided
        after credential activation (there is no CSR: a restricted AK cannot sign one)."""
        with self._refusals_audited(actor, "certificate.issue", decision.subject.rfc4514_string()):
            signing = self._signing_ca(ca or self.default_issuing_ca())
            if signing.record.kind is not CAKind.ISSUING:
                raise PolicyViolation("attestation-key certificates come from an issuing CA")
            cert = self._sign(signing, ak_public_key, decision)
            record = self._record_issue(signing, cert, decision, profile, actor, kind="issued")
        return Issued(record, cert, (cert, *signing.chain))

    def renew(
        self,
        serial: str,
        *,
        actor: str,
        csr: x509.CertificateSigningRequest | None = None,
        ca: str | None = None,
        lifetime: timedelta | None = None,
        within: RecordHook | None = None,
        attestation: KeyAttestation | None = None,
    ) -> Issued:
        """A new certificate with the same identity; a CSR brings a new key (rekey).

        ``within`` runs in the transaction that records the new certificate, as for ``issue``.
        Without ``attestation`` the old certificate's attestation carries over when the key
        stays the same; a new key under a profile that requires attestation is refused.
        """
        with self._refusals_audited(actor, "certificate.renew", serial):
            old = self.get(serial, ca=ca)
            if old.status is CertStatus.REVOKED:
                raise Conflict(f"certificate {serial} is revoked and cannot be renewed")
            prof = self._profile(old.profile)
            signing = self._renewing_ca(old.ca_name)
            now = self._clock.now()
            old_cert = old.certificate
            if csr is None:
                decision = policy.decide_renewal(
                    old_cert,
                    prof,
                    now=now,
                    lifetime=lifetime,
                    ca_not_after=signing.certificate.not_valid_after_utc,
                )
                public_key: CertificatePublicKeyTypes = old_cert.public_key()
            else:
                if not csr.is_signature_valid:
                    raise BadSignature("the CSR's signature does not verify")
                decision = policy.decide(
                    csr,
                    prof,
                    now=now,
                    device_id=old.device_id,
                    lifetime=lifetime,
                    ca_not_after=signing.certificate.not_valid_after_utc,
                )
                if _sans_text(decision.sans) != old.sans or decision.subject != old_cert.subject:
                    raise PolicyViolation(
                        "a renewal must keep the identity: subject and names differ", serial=serial
                    )
                public_key = csr.public_key()
            if attestation is None:
                attestation = self._carried_attestation(old, public_key)
            _check_attestation(prof, public_key, attestation)
            cert = self._sign(signing, public_key, decision)
            record = self._record_issue(
                signing,
                cert,
                decision,
                prof,
                actor,
                kind="renewed",
                renewed_from=serial,
                within=within,
                attestation=attestation,
            )
        return Issued(record, cert, (cert, *signing.chain))

    def revoke(
        self,
        serial: str,
        *,
        reason: RevocationReason,
        actor: str,
        ca: str | None = None,
        invalidity_date: datetime | None = None,
    ) -> CertificateRecord:
        """Mark a certificate revoked (RFC 5280 reason); keyCompromise also blocks its key."""
        with self._refusals_audited(actor, "certificate.revoke", serial):
            now = self._clock.now()
            with self._store.transaction() as tx:
                record = _one_certificate(tx, ca, serial)
                if record.status is CertStatus.REVOKED:
                    raise Conflict(f"certificate {serial} is already revoked", serial=serial)
                tx.mark_revoked(record.ca_name, record.serial, now, reason, invalidity_date)
                if reason is RevocationReason.KEY_COMPROMISE:
                    tx.block_key(record.key_fingerprint, f"revoked {record.serial}", now)
                tx.append_audit(
                    now,
                    actor,
                    "certificate.revoked",
                    record.serial,
                    {"ca": record.ca_name, "reason": str(reason), "device": record.device_id},
                )
                revoked = tx.get_certificate(record.ca_name, record.serial)
                assert revoked is not None
                if record.profile == "sub-ca":
                    _revoke_child_ca(tx, record, now, actor)
                    with self._lock:
                        self._signing.clear()
                        self._default_ca = None
        self._emit(
            "certificate.revoked",
            actor,
            {
                "ca": record.ca_name,
                "profile": record.profile,
                "reason": str(reason),
                "serial": record.serial,
            },
        )
        return revoked

    def _carried_attestation(
        self, old: CertificateRecord, public_key: CertificatePublicKeyTypes
    ) -> KeyAttestation | None:
        """The old certificate's key attestation, when the renewal keeps that key."""
        previous = self.attestation(old.serial, ca=old.ca_name)
        if previous is None or previous.key_fingerprint != key_fingerprint(public_key):
            return None
        return previous

    def attestation(self, serial: str, *, ca: str | None = None) -> KeyAttestation | None:
        """The TPM attestation recorded for a certificate's key, if any."""
        record = self.get(serial, ca=ca)
        with self._store.transaction(readonly=True) as tx:
            return tx.get_key_attestation(record.ca_name, record.serial)

    def attested(self, records: list[CertificateRecord]) -> set[tuple[str, str]]:
        """The (CA name, serial) pairs among ``records`` whose key was TPM-attested."""
        if not records:
            return set()
        with self._store.transaction(readonly=True) as tx:
            return tx.attested_serials((r.ca_name, r.serial) for r in records)

    def get(self, serial: str, *, ca: str | None = None) -> CertificateRecord:
        """A certificate by serial (hex), optionally within one CA."""
        with self._store.transaction() as tx:
            return _one_certificate(tx, ca, serial)

    def search(self, query: CertificateQuery) -> list[CertificateRecord]:
        """Certificates matching the query, newest first."""
        with self._store.transaction() as tx:
            return tx.list_certificates(query, self._clock.now())

    # -- signing ----------------------------------------------------------------------------

    def _builder(
        self,
        signing: _SigningCA,
        public_key: CertificatePublicKeyTypes,
        decision: policy.Decision,
    ) -> x509.CertificateBuilder:
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
            self._config.crl_partitions,
            base_url=self._config.public_base_url,
            ca_name=signing.record.name,
            serial=serial,
            not_after=decision.not_after,
        ):
            builder = builder.add_extension(extension, critical=False)
        return builder

    def crl_signer(self, name: str) -> tuple[CARecord, CertificateIssuerPrivateKeyTypes]:
        """A CA held here and its signing key, for CRLs (``core.publication`` signs them).

        Unlike issuance, a revoked or retired CA still signs CRLs for what it issued.
        """
        record = self.get_ca(name)
        if record.certificate_der is None:
            raise Conflict(f"CA {name!r} has no certificate yet", ca=name)
        if record.key_backend is None or record.key_ref is None:
            raise ConfigError(f"the key of CA {name!r} is not held here (offline CA)", ca=name)
        return record, self._backend(record.key_backend).signer(record.key_ref)

    def revocation_extensions(self, ca_name: str) -> list[x509.ExtensionType]:
        """AIA (OCSP, caIssuers), CRL distribution point and freshest (delta) CRL of this CA."""
        base = self._config.public_base_url.rstrip("/")
        return [
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.OCSP,
                        x509.UniformResourceIdentifier(f"{base}/ocsp"),
                    ),
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.CA_ISSUERS,
                        x509.UniformResourceIdentifier(f"{base}/ca/{ca_name}.crt"),
                    ),
                ]
            ),
            x509.CRLDistributionPoints(
                [
                    x509.DistributionPoint(
                        full_name=[x509.UniformResourceIdentifier(f"{base}/crl/{ca_name}.crl")],
                        relative_name=None,
                        reasons=None,
                        crl_issuer=None,
                    )
                ]
            ),
            # RFC 5280 section 4.2.1.15: where the delta CRLs of this CA are found.
            x509.FreshestCRL(
                [
                    x509.DistributionPoint(
                        full_name=[
                            x509.UniformResourceIdentifier(f"{base}/crl/{ca_name}-delta.crl")
                        ],
                        relative_name=None,
                        reasons=None,
                        crl_issuer=None,
                    )
                ]
            ),
        ]

    def _sign(
        self,
        signing: _SigningCA,
        public_key: CertificatePublicKeyTypes,
        decision: policy.Decision,
    ) -> x509.Certificate:
        if is_blocklisted(public_key, self._config.key_blocklist):
            raise KeyRejected(
                "this key is on the weak-key blocklist", key=key_fingerprint(public_key)
            )
        builder = self._builder(signing, public_key, decision)
        return builder.sign(signing.signer, signature_hash(signing.signer))

    def _lint_key(self, signing: _SigningCA) -> CertificateIssuerPrivateKeyTypes:
        algorithm = algorithm_of(signing.certificate.public_key())
        if algorithm is None:
            raise ConfigError(f"CA {signing.record.name!r} has a key type iotpki cannot lint")
        with self._lock:
            key = self._lint_keys.get(algorithm)
            if key is None:
                key = self._lint_keys[algorithm] = generate_private_key(algorithm)
        return key

    def _lint_findings(
        self,
        signing: _SigningCA,
        public_key: CertificatePublicKeyTypes,
        decision: policy.Decision,
    ) -> list[LintFinding]:
        """Lint the certificate as it would be issued, signed by a throwaway key, not the CA's."""
        assert self._linter is not None
        lint_key = self._lint_key(signing)
        builder = self._builder(signing, public_key, decision)
        draft = builder.sign(lint_key, signature_hash(lint_key))
        return [
            f for f in self._linter.lint(draft.public_bytes(_DER)) if f.severity in _LINT_BLOCKING
        ]

    def _pre_issuance_lint(
        self,
        profile: policy.Profile,
        signing: _SigningCA,
        public_key: CertificatePublicKeyTypes,
        decision: policy.Decision,
    ) -> None:
        if self._linter is None or profile.lint == "off":
            return
        if profile.lint == "sample" and self._rng.random() >= profile.lint_sample_rate:
            return
        errors = self._lint_findings(signing, public_key, decision)
        if errors:
            raise PolicyViolation(
                f"pre-issuance lint failed: {errors[0].code}",
                findings=[f.code for f in errors],
            )

    def _check_template(self, profile: policy.Profile, signing: _SigningCA) -> None:
        """Lint a sample certificate of this profile from this CA once, before first use."""
        key = (profile.name, signing.record.name)
        if self._linter is None or key in self._templates_checked:
            return
        errors = self._lint_findings(signing, *policy.template_request(profile, self._clock.now()))
        if errors:
            raise ConfigError(
                f"profile {profile.name} fails lint with CA {signing.record.name}: "
                + ", ".join(f.code for f in errors),
                profile=profile.name,
            )
        with self._lock:
            self._templates_checked.add(key)

    def _record_issue(
        self,
        signing: _SigningCA,
        cert: x509.Certificate,
        decision: policy.Decision,
        profile: policy.Profile,
        actor: str,
        *,
        kind: str,
        renewed_from: str | None = None,
        within: RecordHook | None = None,
        attestation: KeyAttestation | None = None,
    ) -> CertificateRecord:
        public_key = cert.public_key()
        fingerprint = key_fingerprint(public_key)
        now = self._clock.now()
        record = CertificateRecord(
            serial=serial_hex(cert.serial_number),
            ca_name=signing.record.name,
            profile=profile.name,
            device_id=decision.device_id,
            subject=cert.subject.rfc4514_string(),
            sans=_sans_text(decision.sans),
            not_before=decision.not_before,
            not_after=decision.not_after,
            key_fingerprint=fingerprint,
            key_algorithm=str(algorithm_of(public_key) or "other"),
            der=cert.public_bytes(_DER),
            issued_at=now,
            crl_partition=certificate_partition(cert),
        )
        with self._store.transaction() as tx:
            _check_key_reuse(tx, fingerprint, decision.device_id, record.subject)
            if decision.device_id is not None:
                _ensure_device(tx, decision.device_id, now)
            tx.add_certificate(record)
            if attestation is not None:
                tx.add_key_attestation(
                    replace(attestation, ca_name=record.ca_name, serial=record.serial)
                )
            if within is not None:
                within(tx, record)
            data: dict[str, object] = {
                "ca": record.ca_name,
                "profile": record.profile,
                "device": record.device_id,
                "subject": record.subject,
                "not_after": record.not_after.isoformat(),
                "key": fingerprint,
            }
            if attestation is not None:
                data["attested"] = attestation.method
            if renewed_from:
                data["renewed_from"] = renewed_from
            tx.append_audit(now, actor, f"certificate.{kind}", record.serial, data)
        self._emit(f"certificate.{kind}", actor, data)
        return record

    # -- background lint -------------------------------------------------------------------

    def lint_pending(self, limit: int = 200) -> int:
        """Lint certificates not linted yet and keep the findings; returns how many."""
        if self._linter is None:
            return 0
        pending = self._store.certificates_to_lint(limit)
        for record in pending:
            self._store.record_lint(record.ca_name, record.serial, self._linter.lint(record.der))
        return len(pending)


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _aki(ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key())  # type: ignore[arg-type]
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _ca_audit(record: CARecord, cert: x509.Certificate) -> dict[str, object]:
    return {
        "kind": str(record.kind),
        "subject": cert.subject.rfc4514_string(),
        "serial": serial_hex(cert.serial_number),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "key_backend": record.key_backend,
    }


def _cn_or_blank(csr: x509.CertificateSigningRequest) -> str:
    values = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else ""


def _find_parent(
    cert: x509.Certificate, cas: list[CARecord], parent_certificate: x509.Certificate | None
) -> CARecord | None:
    """The known CA that signed ``cert``, or None when the given external parent did."""
    candidates = [(ca, ca.certificate) for ca in cas if ca.certificate_der is not None]
    for record, candidate in candidates:
        if _issued_by(cert, candidate):
            return record
    if parent_certificate is not None and _issued_by(cert, parent_certificate):
        return None
    raise PolicyViolation(
        "the certificate was not signed by a known CA; pass its parent certificate"
    )


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _one_certificate(tx: StoreTransaction, ca: str | None, serial: str) -> CertificateRecord:
    serial = parse_serial(serial)
    record = tx.get_certificate(ca, serial)
    if record is None:
        raise NotFound(f"no certificate with serial {serial}", serial=serial)
    return record


def _check_key_reuse(
    tx: StoreTransaction, fingerprint: str, device_id: str | None, subject: str
) -> None:
    if tx.is_key_blocked(fingerprint):
        raise KeyRejected("this key was revoked for key compromise", key=fingerprint)
    for other_serial, other_device, other_subject in tx.key_holders(fingerprint):
        same_owner = other_device == device_id if device_id else other_subject == subject
        if not same_owner:
            raise KeyRejected(
                "this public key is already certified for another identity",
                key=fingerprint,
                other_serial=other_serial,
            )


def _check_attestation(
    profile: policy.Profile,
    public_key: CertificatePublicKeyTypes,
    attestation: KeyAttestation | None,
) -> None:
    """The attestation, if any, is of this very key; a profile may demand one (issue 9)."""
    if attestation is not None and attestation.key_fingerprint != key_fingerprint(public_key):
        raise AttestationRejected(
            "the certificate's key is not the key the TPM attested", check="csr_key"
        )
    if attestation is None and profile.require_attestation:
        raise PolicyViolation(
            f"profile {profile.name} requires a TPM-attested key (ACME device-attest-01)",
            profile=profile.name,
        )


def _ensure_device(tx: StoreTransaction, device_id: str, now: datetime) -> None:
    status = tx.device_status(device_id)
    if status is None:
        tx.add_device(DeviceRecord(device_id=device_id, created_at=now))
    elif status != "active":
        raise PolicyViolation(f"device {device_id} is {status}", device_id=device_id)


def _revoke_child_ca(
    tx: StoreTransaction, record: CertificateRecord, now: datetime, actor: str
) -> None:
    """Revoking a subordinate CA's certificate stops that CA from issuing."""
    for ca in tx.list_cas():
        if ca.certificate_der is not None and ca.certificate_der == record.der:
            tx.put_ca(
                CARecord(
                    name=ca.name,
                    kind=ca.kind,
                    status=CAStatus.REVOKED,
                    parent=ca.parent,
                    key_backend=ca.key_backend,
                    key_ref=ca.key_ref,
                    certificate_der=ca.certificate_der,
                    csr_der=ca.csr_der,
                    created_at=ca.created_at,
                )
            )
            tx.append_audit(now, actor, "ca.revoked", ca.name, {"serial": record.serial})


def _refusal_labels(exc: IotpkiError) -> dict[str, object]:
    return {k: v for k, v in exc.data.items() if k in ("profile", "ca", "serial", "device_id")}
