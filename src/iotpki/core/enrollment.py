"""Device enrollment: who may obtain a certificate, and how (the EST adapter's core).

Three ways to authenticate an enrolling device, each mapped to a device of the registry:

- an IDevID (IEEE 802.1AR) issued by a bootstrap CA the operator registered; its subject
  ``serialNumber`` (else its commonName) names the device, and the bootstrap CA's policy says
  whether only devices bound to it beforehand (``registered``) or any of its devices (``any``)
  may enroll;
- a one-time enrollment secret made for one device, with an expiry; it is consumed in the
  transaction that records the certificate. Failed guesses lock the device's secrets for a while
  for the source address they came from, so that a stranger elsewhere cannot lock a device out,
  and for every source once a much higher per-device ceiling is reached (distributed guessing);
- for renewal, the device's current certificate from this installation: valid, unrevoked and
  stored exactly as presented.

An enrollment may wait for an operator's approval (RFC 7030 section 4.2.3: ``202`` with
``Retry-After`` until then). Every state change and every refusal is audited.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import NoReturn

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID

from iotpki.core.audit import source_key
from iotpki.core.authority import Authority, Issued, RecordHook, serial_hex
from iotpki.core.device_id import check_device_id, is_device_id
from iotpki.core.keytypes import algorithm_of, generate_private_key, signature_hash
from iotpki.core.models import (
    ApprovalRecord,
    ApprovalStatus,
    BootstrapCARecord,
    BootstrapCAStatus,
    CertificateRecord,
    CertStatus,
    DeviceRecord,
    DeviceStatus,
    EnrollmentSecretRecord,
    EnrollMethod,
    EnrollPolicy,
    IdevidBinding,
    KeyAlgorithm,
    SecretLockout,
)
from iotpki.core.ports import StoreTransaction
from iotpki.errors import (
    AuthError,
    Conflict,
    Forbidden,
    IotpkiError,
    NotFound,
    PolicyViolation,
    RateLimited,
    RequestError,
)

__all__ = [
    "ENROLL_POLICIES",
    "Enrollee",
    "Enrollment",
    "EnrollmentConfig",
    "Pending",
    "idevid_identity",
]

ENROLL_POLICIES = tuple(EnrollPolicy)
_DER = serialization.Encoding.DER


@dataclass(frozen=True, slots=True)
class EnrollmentConfig:
    """Limits of enrollment: secret guessing, approval polling, secret lifetime."""

    max_secret_failures: int = 5  # per device and source address
    max_device_failures: int = 100  # per device from every source: stops distributed guessing
    lockout: timedelta = timedelta(minutes=15)
    retry_after: int = 60
    default_secret_lifetime: timedelta = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class Enrollee:
    """An authenticated enrolling device and what its credential allows."""

    device_id: str
    method: EnrollMethod
    profile: str | None = None  # the profile the credential is bound to, if any
    approval: bool = False
    secret_id: str | None = None
    bootstrap_ca: str | None = None

    @property
    def actor(self) -> str:
        """The audit actor for this device's requests."""
        return f"est:{self.method}:{self.device_id}"


@dataclass(frozen=True, slots=True)
class Pending:
    """The enrollment waits for an operator; ask again after ``retry_after`` seconds."""

    request_id: str
    retry_after: int


def idevid_identity(cert: x509.Certificate) -> str | None:
    """The device identity an IDevID carries: subject serialNumber, else commonName."""
    for oid in (NameOID.SERIAL_NUMBER, NameOID.COMMON_NAME):
        values = cert.subject.get_attributes_for_oid(oid)
        if values:
            return str(values[0].value)
    return None


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


class Enrollment:
    """Registry of bootstrap CAs, devices, secrets and approvals; enrollment on top of them."""

    def __init__(self, authority: Authority, config: EnrollmentConfig | None = None) -> None:
        self.authority = authority
        self.config = config or EnrollmentConfig()
        self._store = authority.store

    def _now(self) -> datetime:
        return self.authority.clock.now()

    @contextmanager
    def _audited(
        self, actor: str, action: str, target: str, source: str | None = None
    ) -> Iterator[None]:
        """Audit an ``IotpkiError`` raised inside as ``<action>.refused`` (once).

        With the ``source`` of an anonymous request, repeats fold per source and window.
        """
        try:
            yield
        except IotpkiError as exc:
            if source is not None:
                self.authority.audit_refusal(
                    exc, source=source, actor=actor, action=f"{action}.refused", target=target
                )
            elif not exc.audited:
                exc.audited = True
                self.authority.record_event(
                    actor, f"{action}.refused", target, {"reason": exc.message, "code": exc.code}
                )
            raise

    # -- operator side: bootstrap CAs -------------------------------------------------------

    def add_bootstrap_ca(
        self,
        name: str,
        certificate: x509.Certificate,
        *,
        enroll_policy: str,
        actor: str,
        profile: str | None = None,
        approval: bool = False,
    ) -> BootstrapCARecord:
        """Trust a manufacturer CA's IDevIDs for enrollment (or update its policy)."""
        with self._audited(actor, "est.bootstrap_ca.add", name):
            if enroll_policy not in ENROLL_POLICIES:
                raise RequestError(f"policy must be one of {', '.join(ENROLL_POLICIES)}")
            if profile is not None:
                self._device_profile(profile)
            try:
                constraints = certificate.extensions.get_extension_for_class(
                    x509.BasicConstraints
                ).value
            except x509.ExtensionNotFound:
                constraints = None
            if constraints is None or not constraints.ca:
                raise PolicyViolation("a bootstrap CA certificate must be a CA (basicConstraints)")
            der = certificate.public_bytes(_DER)
            now = self._now()
            record = BootstrapCARecord(
                name=name,
                certificate_der=der,
                fingerprint=hashlib.sha256(der).hexdigest(),
                enroll_policy=EnrollPolicy(enroll_policy),
                profile=profile,
                approval=approval,
                status=BootstrapCAStatus.ACTIVE,
                created_at=now,
            )
            with self._store.transaction() as tx:
                tx.put_bootstrap_ca(record)
                tx.append_audit(
                    now,
                    actor,
                    "est.bootstrap_ca.added",
                    name,
                    {
                        "subject": certificate.subject.rfc4514_string(),
                        "fingerprint": record.fingerprint,
                        "policy": enroll_policy,
                        "profile": profile,
                        "approval": approval,
                    },
                )
        return record

    def revoke_bootstrap_ca(self, name: str, *, actor: str) -> BootstrapCARecord:
        """Stop trusting a bootstrap CA: its IDevIDs can no longer enroll."""
        with self._audited(actor, "est.bootstrap_ca.revoke", name):
            now = self._now()
            with self._store.transaction() as tx:
                record = tx.get_bootstrap_ca(name)
                if record is None:
                    raise NotFound(f"no bootstrap CA named {name!r}")
                revoked = replace(record, status=BootstrapCAStatus.REVOKED)
                tx.put_bootstrap_ca(revoked)
                tx.append_audit(now, actor, "est.bootstrap_ca.revoked", name, {})
        return revoked

    def list_bootstrap_cas(self) -> list[BootstrapCARecord]:
        """Every registered bootstrap CA."""
        with self._store.transaction(readonly=True) as tx:
            return tx.list_bootstrap_cas()

    # -- operator side: devices and secrets ---------------------------------------------------

    def register_device(
        self,
        device_id: str,
        *,
        actor: str,
        bootstrap_ca: str | None = None,
        idevid: str | None = None,
    ) -> DeviceRecord:
        """Add a device to the registry, optionally bound to its IDevID."""
        with self._audited(actor, "est.device.register", device_id):
            check_device_id(device_id)
            if (bootstrap_ca is None) != (idevid is None):
                raise RequestError("name both the bootstrap CA and the IDevID, or neither")
            now = self._now()
            with self._store.transaction() as tx:
                device = tx.get_device(device_id) or DeviceRecord(device_id, created_at=now)
                tx.put_device(device)
                data: dict[str, object] = {}
                if bootstrap_ca is not None and idevid is not None:
                    if tx.get_bootstrap_ca(bootstrap_ca) is None:
                        raise NotFound(f"no bootstrap CA named {bootstrap_ca!r}")
                    tx.put_idevid_binding(IdevidBinding(bootstrap_ca, idevid, device_id, now))
                    data = {"bootstrap_ca": bootstrap_ca, "idevid": idevid}
                tx.append_audit(now, actor, "est.device.registered", device_id, data)
        return device

    def set_device_status(self, device_id: str, status: str, *, actor: str) -> DeviceRecord:
        """Enable (``active``) or disable (``disabled``) a device's enrollment and renewal."""
        with self._audited(actor, "est.device.status", device_id):
            if status not in ("active", "disabled"):
                raise RequestError("status must be active or disabled")
            now = self._now()
            with self._store.transaction() as tx:
                device = tx.get_device(device_id)
                if device is None:
                    raise NotFound(f"no device {device_id!r}")
                device = replace(device, status=DeviceStatus(status))
                tx.put_device(device)
                tx.append_audit(now, actor, "est.device.status", device_id, {"status": status})
        return device

    def create_secret(
        self,
        device_id: str,
        *,
        actor: str,
        lifetime: timedelta | None = None,
        profile: str | None = None,
        approval: bool = False,
    ) -> tuple[str, EnrollmentSecretRecord]:
        """A one-time enrollment secret for one device; the string is shown once only."""
        with self._audited(actor, "est.secret.create", device_id):
            check_device_id(device_id)
            if profile is not None:
                self._device_profile(profile)
            lifetime = lifetime or self.config.default_secret_lifetime
            if lifetime <= timedelta(0):
                raise RequestError("the secret's lifetime must be positive")
            secret = secrets.token_urlsafe(24)
            now = self._now()
            record = EnrollmentSecretRecord(
                secret_id=secrets.token_hex(8),
                device_id=device_id,
                secret_hash=_hash(secret),
                created_at=now,
                expires_at=now + lifetime,
                profile=profile,
                approval=approval,
            )
            with self._store.transaction() as tx:
                device = tx.get_device(device_id)
                if device is None:
                    tx.put_device(DeviceRecord(device_id, created_at=now))
                tx.add_enrollment_secret(record)
                tx.append_audit(
                    now,
                    actor,
                    "est.secret.created",
                    device_id,
                    {
                        "secret_id": record.secret_id,
                        "expires_at": record.expires_at.isoformat(),
                        "profile": profile,
                        "approval": approval,
                    },
                )
        return secret, record

    # -- operator side: approvals ------------------------------------------------------------

    def list_approvals(self, status: str | None = "pending") -> list[ApprovalRecord]:
        """Approval requests, newest first."""
        with self._store.transaction(readonly=True) as tx:
            return tx.list_approvals(status)

    def decide(self, request_id: str, *, approve: bool, actor: str) -> ApprovalRecord:
        """Approve or reject a pending enrollment."""
        verb = "approve" if approve else "reject"
        with self._audited(actor, f"est.approval.{verb}", request_id):
            now = self._now()
            with self._store.transaction() as tx:
                record = tx.get_approval(request_id)
                if record is None:
                    raise NotFound(f"no enrollment request {request_id!r}")
                if record.status != "pending":
                    raise Conflict(f"enrollment request {request_id} is {record.status}")
                decided = replace(
                    record,
                    status=ApprovalStatus.APPROVED if approve else ApprovalStatus.REJECTED,
                    decided_at=now,
                    decided_by=actor,
                )
                tx.update_approval(decided)
                tx.append_audit(
                    now,
                    actor,
                    f"est.approval.{decided.status}",
                    request_id,
                    {"device": record.device_id, "profile": record.profile},
                )
        return decided

    # -- device side: authentication ------------------------------------------------------

    def authenticate_idevid(self, cert: x509.Certificate) -> Enrollee:
        """The device an IDevID stands for, if a registered bootstrap CA allows it to enroll."""
        identity = idevid_identity(cert) or ""
        with (
            self._audited(f"est:idevid:{identity}", "est.authenticate", identity),
            self._store.transaction(readonly=True) as tx,
        ):
            issuer = next(
                (b for b in tx.list_bootstrap_cas() if _issued_by(cert, b.certificate)), None
            )
            if issuer is None:
                raise AuthError("the client certificate is not from a trusted bootstrap CA")
            if issuer.status != "active":
                raise Forbidden(f"bootstrap CA {issuer.name} is revoked")
            now = self._now()
            if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
                raise AuthError("the IDevID is expired or not yet valid")
            if not identity:
                raise AuthError("the IDevID names no device (no serialNumber or CN)")
            binding = tx.get_idevid_binding(issuer.name, identity)
            if binding is not None:
                device_id = binding.device_id
            elif issuer.enroll_policy == "any":
                device_id = identity
            else:
                raise Forbidden(f"device {identity} is not registered with {issuer.name}")
            _check_active(tx, device_id)
        return Enrollee(
            device_id=device_id,
            method=EnrollMethod.IDEVID,
            profile=issuer.profile,
            approval=issuer.approval,
            bootstrap_ca=issuer.name,
        )

    def authenticate_secret(self, device_id: str, secret: str, source: str = "unknown") -> Enrollee:
        """The device, if ``secret`` is its unused, unexpired enrollment secret.

        Failed guesses from one ``source`` address lock the device's secrets for that source
        after ``max_secret_failures``, and for every source after ``max_device_failures``, for
        ``lockout`` (``RateLimited``).
        """
        actor = f"est:secret:{device_id[:128]}"
        source = source_key(source)
        with self._audited(actor, "est.authenticate", device_id[:128], source):
            if not is_device_id(device_id):
                raise AuthError("the user name is not a valid device ID")
            now = self._now()
            with self._store.transaction(readonly=True) as tx:
                stored = tx.enrollment_secrets(device_id)
                mine = tx.secret_lockout(device_id, source)
            live = [s for s in stored if s.used_at is None and s.expires_at > now]
            locked = [s.locked_until for s in live if s.locked_until and s.locked_until > now]
            if mine is not None and mine.locked_until is not None and mine.locked_until > now:
                locked.append(mine.locked_until)
            if locked:
                wait = int((max(locked) - now).total_seconds()) + 1
                raise RateLimited("too many failed attempts: enrollment locked", retry_after=wait)
            digest = _hash(secret)
            match = next((s for s in stored if hmac.compare_digest(s.secret_hash, digest)), None)
            if match is None:
                self._count_failure(actor, device_id, source, live, now)
            if match.used_at is not None:
                raise AuthError("the enrollment secret was already used")
            if match.expires_at <= now:
                raise AuthError("the enrollment secret has expired")
            with self._store.transaction(readonly=True) as tx:
                _check_active(tx, device_id)
        return Enrollee(
            device_id=device_id,
            method=EnrollMethod.SECRET,
            profile=match.profile,
            approval=match.approval,
            secret_id=match.secret_id,
        )

    def _count_failure(
        self,
        actor: str,
        device_id: str,
        source: str,
        live: list[EnrollmentSecretRecord],
        now: datetime,
    ) -> NoReturn:
        """Count a wrong guess per device and source, lock where a limit is reached, refuse."""
        until = now + self.config.lockout
        locked: list[str] = []
        with self._store.transaction() as tx:
            for record in live:
                failures = record.failed_attempts + 1
                locked_until = record.locked_until
                if failures >= self.config.max_device_failures:
                    failures, locked_until = 0, until
                    locked.append("device")
                tx.update_enrollment_secret(
                    replace(record, failed_attempts=failures, locked_until=locked_until)
                )
            if live:  # a device without live secrets has nothing to guess, nor to lock
                tx.prune_secret_lockouts(device_id, now - self.config.lockout)
                previous = tx.secret_lockout(device_id, source)
                failures = previous.failures + 1 if previous else 1
                locked_until = previous.locked_until if previous else None
                if failures >= self.config.max_secret_failures:
                    failures, locked_until = 0, until
                    locked.append("source")
                tx.put_secret_lockout(SecretLockout(device_id, source, failures, now, locked_until))
            for scope in sorted(set(locked)):
                data: dict[str, object] = {"source": source, "scope": scope, "until": str(until)}
                tx.append_audit(now, actor, "est.secret.locked", device_id[:128], data)
        error = AuthError("wrong or unknown enrollment secret")
        self.authority.audit_refusal(
            error,
            source=source,
            actor=actor,
            action="est.authenticate.refused",
            target=device_id[:128],
            extra={"locked": bool(locked)},
        )
        raise error

    def authenticate_current(self, cert: x509.Certificate) -> CertificateRecord:
        """The stored record of a device's current certificate, if valid and unrevoked."""
        serial = serial_hex(cert.serial_number)
        with self._audited("est:reenroll", "est.authenticate", serial):
            with self._store.transaction(readonly=True) as tx:
                issuer = next(
                    (
                        ca
                        for ca in tx.list_cas()
                        if ca.certificate_der is not None and _issued_by(cert, ca.certificate)
                    ),
                    None,
                )
                record = tx.get_certificate(issuer.name, serial) if issuer else None
            if record is None or record.der != cert.public_bytes(_DER):
                raise AuthError("the client certificate was not issued here")
            if record.status is CertStatus.REVOKED:
                raise Forbidden(f"certificate {serial} is revoked", serial=serial)
            if not record.not_before <= self._now() <= record.not_after:
                raise AuthError(f"certificate {serial} is expired", serial=serial)
            if record.device_id is None:
                raise Forbidden("the client certificate is not a device certificate")
        return record

    # -- device side: enrollment ---------------------------------------------------------

    def _device_profile(self, name: str) -> str:
        profile = self.authority.profile(name)
        if profile.identity != "device":
            raise PolicyViolation(f"profile {name} does not issue device certificates")
        return name

    def enroll(
        self,
        enrollee: Enrollee,
        csr: x509.CertificateSigningRequest,
        *,
        profile: str | None = None,
        ca: str | None = None,
        server_key: bool = False,
    ) -> Issued | Pending | tuple[Issued, CertificateIssuerPrivateKeyTypes]:
        """Issue a device certificate, or wait for approval when the credential asks for it.

        With ``server_key`` (RFC 7030 section 4.4) a new key is made here for the CSR's
        identity; the result is the certificate and that key. ``csr`` is as
        :func:`iotpki.core.csr.decode_csr` returns it: read through, its signature verified.
        """
        actor = enrollee.actor
        with self._audited(actor, "est.enroll", enrollee.device_id):
            if enrollee.profile is not None and profile not in (None, enrollee.profile):
                raise Forbidden(f"this credential enrolls for profile {enrollee.profile} only")
            chosen = self._device_profile(profile or enrollee.profile or "device")
            approval: ApprovalRecord | None = None
            if enrollee.approval:
                gate = self._approval_gate(enrollee, csr, chosen, ca)
                if isinstance(gate, Pending):
                    return gate
                approval = gate
            key: CertificateIssuerPrivateKeyTypes | None = None
            if server_key:
                key, csr = _server_generated(csr)
            issued = self.authority.issue(
                csr,
                profile=chosen,
                ca=ca,
                device_id=enrollee.device_id,
                actor=actor,
                within=self._on_issue(enrollee, approval),
            )
        return issued if key is None else (issued, key)

    def _approval_gate(
        self,
        enrollee: Enrollee,
        csr: x509.CertificateSigningRequest,
        profile: str,
        ca: str | None,
    ) -> ApprovalRecord | Pending:
        fingerprint = hashlib.sha256(csr.public_bytes(_DER)).hexdigest()
        now = self._now()
        with self._store.transaction() as tx:
            record = tx.find_approval(enrollee.device_id, fingerprint)
            if record is None or record.status == "issued":
                record = ApprovalRecord(
                    request_id=secrets.token_hex(8),
                    device_id=enrollee.device_id,
                    method=enrollee.method,
                    profile=profile,
                    ca_name=ca,
                    csr_fingerprint=fingerprint,
                    status=ApprovalStatus.PENDING,
                    created_at=now,
                )
                tx.add_approval(record)
                tx.append_audit(
                    now,
                    enrollee.actor,
                    "est.approval.requested",
                    record.request_id,
                    {"device": enrollee.device_id, "profile": profile, "method": enrollee.method},
                )
        if record.status == "pending":
            return Pending(record.request_id, self.config.retry_after)
        if record.status == "rejected":
            raise Forbidden("an operator rejected this enrollment", request=record.request_id)
        return record

    def _on_issue(self, enrollee: Enrollee, approval: ApprovalRecord | None) -> RecordHook:
        """Consume the secret and close the approval in the certificate's own transaction."""
        now = self._now()

        def hook(tx: StoreTransaction, record: CertificateRecord) -> None:
            data: dict[str, object] = {"serial": record.serial, "method": enrollee.method}
            if enrollee.secret_id is not None:
                secret = next(
                    (
                        s
                        for s in tx.enrollment_secrets(enrollee.device_id)
                        if s.secret_id == enrollee.secret_id
                    ),
                    None,
                )
                if secret is None or not tx.update_enrollment_secret(replace(secret, used_at=now)):
                    raise AuthError("the enrollment secret was already used")
                data["secret_id"] = secret.secret_id
            if approval is not None:
                tx.update_approval(
                    replace(approval, status=ApprovalStatus.ISSUED, serial=record.serial)
                )
                data["request"] = approval.request_id
            if enrollee.bootstrap_ca is not None:
                data["bootstrap_ca"] = enrollee.bootstrap_ca
            tx.append_audit(now, enrollee.actor, "est.enrolled", enrollee.device_id, data)

        return hook

    def reenroll(self, current: CertificateRecord, csr: x509.CertificateSigningRequest) -> Issued:
        """RFC 7030 section 4.2.2: a new certificate for the same identity (a new key: rekey)."""
        actor = f"est:reenroll:{current.device_id}"
        with self._audited(actor, "est.reenroll", current.serial):
            return self.authority.renew(current.serial, ca=current.ca_name, csr=csr, actor=actor)


def _check_active(tx: StoreTransaction, device_id: str) -> None:
    device = tx.get_device(device_id)
    if device is not None and device.status != "active":
        raise Forbidden(f"device {device_id} is {device.status}", device_id=device_id)


def _server_generated(
    csr: x509.CertificateSigningRequest,
) -> tuple[CertificateIssuerPrivateKeyTypes, x509.CertificateSigningRequest]:
    """A new key of the CSR's key type (P-256 if unknown) and the CSR remade with it."""
    algorithm = algorithm_of(csr.public_key()) or KeyAlgorithm.P256
    key = generate_private_key(algorithm)
    builder = x509.CertificateSigningRequestBuilder().subject_name(csr.subject)
    for extension in csr.extensions:
        builder = builder.add_extension(extension.value, critical=extension.critical)
    return key, builder.sign(key, signature_hash(key))
