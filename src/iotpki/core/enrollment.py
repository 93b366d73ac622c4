"""Device enrollment: the registry of who may enroll, and enrollment on top of it.

The registry: bootstrap CAs whose IDevIDs (IEEE 802.1AR) may enroll, devices, one-time
enrollment secrets and approvals. Who a request is, is decided by
:class:`iotpki.core.authenticators.Authenticators`; this module issues for the
:class:`~iotpki.core.authenticators.Authorization` it returns. An enrollment may wait for an
operator's approval (RFC 7030 section 4.2.3: ``202`` with ``Retry-After`` until then). Every
state change is audited; so is every refusal of an operator's request.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from iotpki.core.authenticators import (
    Authenticators,
    Authorization,
    SecretLimits,
    derived_secret,
    secret_hash,
)
from iotpki.core.authority import Authority, Issued, RecordHook
from iotpki.core.csr import KeyRequest
from iotpki.core.device_id import check_device_id
from iotpki.core.keytypes import algorithm_of, generate_private_key, signature_hash
from iotpki.core.models import (
    ApprovalRecord,
    ApprovalStatus,
    BootstrapCARecord,
    BootstrapCAStatus,
    BootstrapKind,
    CertificateRecord,
    DeviceRecord,
    DeviceStatus,
    EnrollmentSecretRecord,
    EnrollMethod,
    EnrollPolicy,
    IdevidBinding,
    KeyAlgorithm,
)
from iotpki.core.ports import StoreTransaction
from iotpki.errors import (
    Conflict,
    Forbidden,
    IotpkiError,
    NotFound,
    PolicyViolation,
    RequestError,
)

__all__ = [
    "ENROLL_POLICIES",
    "Enrollment",
    "EnrollmentConfig",
    "Pending",
]

ENROLL_POLICIES = tuple(EnrollPolicy)
_REGISTRY_ACTIONS = {BootstrapKind.IDEVID: "est.bootstrap_ca", BootstrapKind.CLAIM: "mqtt.claim_ca"}
_DER = serialization.Encoding.DER


@dataclass(frozen=True, slots=True)
class EnrollmentConfig:
    """Limits of enrollment: secret guessing, approval polling, secret lifetime."""

    max_secret_failures: int = 5  # per device and source address
    max_device_failures: int = 100  # per device from every source: stops distributed guessing
    lockout: timedelta = timedelta(minutes=15)
    retry_after: int = 60
    default_secret_lifetime: timedelta = timedelta(days=7)

    @property
    def secret_limits(self) -> SecretLimits:
        """The guessing limits of one-time secrets."""
        return SecretLimits(self.max_secret_failures, self.max_device_failures, self.lockout)


@dataclass(frozen=True, slots=True)
class Pending:
    """The enrollment waits for an operator; ask again after ``retry_after`` seconds."""

    request_id: str
    retry_after: int


class Enrollment:
    """Registry of bootstrap CAs, devices, secrets and approvals; enrollment on top of them."""

    def __init__(
        self,
        authority: Authority,
        config: EnrollmentConfig | None = None,
        secret_key: bytes | None = None,
    ) -> None:
        """``secret_key`` is the installation's enrollment key: secrets made under it can also
        key a message MAC (CMP); without it they are random and good for EST only."""
        self.authority = authority
        self.config = config or EnrollmentConfig()
        self._store = authority.store
        self._secret_key = secret_key
        self.authenticators = Authenticators(authority, self.config.secret_limits, secret_key)

    def _now(self) -> datetime:
        return self.authority.clock.now()

    @contextmanager
    def _audited(self, actor: str, action: str, target: str) -> Iterator[None]:
        """Audit an operator's request refused inside as ``<action>.refused`` (once)."""
        try:
            yield
        except IotpkiError as exc:
            if not exc.audited:
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
        kind: BootstrapKind = BootstrapKind.IDEVID,
        device_pattern: str | None = None,
    ) -> BootstrapCARecord:
        """Trust a manufacturer CA's IDevIDs, or a claim CA's batch certificates, for
        enrollment (or update its policy). ``device_pattern`` (claim CAs) is the regular
        expression the device IDs its batches ask for must match in full."""
        prefix = _REGISTRY_ACTIONS[kind]
        with self._audited(actor, f"{prefix}.add", name):
            if enroll_policy not in ENROLL_POLICIES:
                raise RequestError(f"policy must be one of {', '.join(ENROLL_POLICIES)}")
            if profile is not None:
                self._device_profile(profile)
            if device_pattern is not None:
                if kind is not BootstrapKind.CLAIM:
                    raise RequestError("only a claim CA takes a device ID pattern")
                try:
                    re.compile(device_pattern)
                except re.error as exc:
                    raise RequestError(f"bad device ID pattern: {exc}") from exc
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
                kind=kind,
                device_pattern=device_pattern,
            )
            with self._store.transaction() as tx:
                tx.put_bootstrap_ca(record)
                tx.append_audit(
                    now,
                    actor,
                    f"{prefix}.added",
                    name,
                    {
                        "subject": certificate.subject.rfc4514_string(),
                        "fingerprint": record.fingerprint,
                        "policy": enroll_policy,
                        "profile": profile,
                        "approval": approval,
                        "kind": str(kind),
                        "device_pattern": device_pattern,
                    },
                )
        return record

    def revoke_bootstrap_ca(self, name: str, *, actor: str) -> BootstrapCARecord:
        """Stop trusting a bootstrap CA: its IDevIDs (or claim certificates) no longer enroll."""
        with self._audited(actor, "est.bootstrap_ca.revoke", name):
            now = self._now()
            with self._store.transaction() as tx:
                record = tx.get_bootstrap_ca(name)
                if record is None:
                    raise NotFound(f"no bootstrap CA named {name!r}")
                revoked = replace(record, status=BootstrapCAStatus.REVOKED)
                tx.put_bootstrap_ca(revoked)
                action = f"{_REGISTRY_ACTIONS[record.kind]}.revoked"
                tx.append_audit(now, actor, action, name, {})
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
            secret_id = secrets.token_hex(8)
            if self._secret_key is None:
                secret = secrets.token_urlsafe(24)
            else:
                secret = derived_secret(self._secret_key, secret_id)
            now = self._now()
            record = EnrollmentSecretRecord(
                secret_id=secret_id,
                device_id=device_id,
                secret_hash=secret_hash(secret),
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

    # -- device side: enrollment ---------------------------------------------------------

    def _device_profile(self, name: str) -> str:
        profile = self.authority.profile(name)
        if profile.identity != "device":
            raise PolicyViolation(f"profile {name} does not issue device certificates")
        return name

    def enroll(
        self,
        authorization: Authorization,
        csr: KeyRequest,
        *,
        profile: str | None = None,
        ca: str | None = None,
        server_key: bool = False,
        within: RecordHook | None = None,
    ) -> Issued | Pending | tuple[Issued, CertificateIssuerPrivateKeyTypes]:
        """Issue a device certificate, or wait for approval when the credential asks for it.

        With ``server_key`` (RFC 7030 section 4.4) a new key is made here for the CSR's
        identity; the result is the certificate and that key. ``csr`` is as
        :func:`iotpki.core.csr.decode_csr` returns it: read through, its signature verified.
        ``within`` runs in the transaction that records the certificate, after the enrollment's
        own bookkeeping.
        """
        bound = authorization.profile
        if bound is not None and profile not in (None, bound):
            raise Forbidden(f"this credential enrolls for profile {bound} only")
        chosen = self._device_profile(profile or bound or "device")
        approval: ApprovalRecord | None = None
        if authorization.approval:
            gate = self._approval_gate(authorization, csr, chosen, ca)
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
            device_id=authorization.device_id,
            actor=authorization.actor,
            within=self.authenticators.within(
                authorization, self._on_issue(authorization, approval, within)
            ),
        )
        return issued if key is None else (issued, key)

    def _approval_gate(
        self,
        authorization: Authorization,
        csr: KeyRequest,
        profile: str,
        ca: str | None,
    ) -> ApprovalRecord | Pending:
        fingerprint = _request_fingerprint(csr)
        now = self._now()
        with self._store.transaction() as tx:
            record = tx.find_approval(authorization.device, fingerprint)
            if record is None or record.status == "issued":
                record = ApprovalRecord(
                    request_id=secrets.token_hex(8),
                    device_id=authorization.device,
                    method=authorization.method,
                    profile=profile,
                    ca_name=ca,
                    csr_fingerprint=fingerprint,
                    status=ApprovalStatus.PENDING,
                    created_at=now,
                )
                tx.add_approval(record)
                tx.append_audit(
                    now,
                    authorization.actor,
                    f"{authorization.protocol}.approval.requested",
                    record.request_id,
                    {
                        "device": authorization.device_id,
                        "profile": profile,
                        "method": str(authorization.method),
                    },
                )
        if record.status == "pending":
            return Pending(record.request_id, self.config.retry_after)
        if record.status == "rejected":
            raise Forbidden("an operator rejected this enrollment", request=record.request_id)
        return record

    def _on_issue(
        self,
        authorization: Authorization,
        approval: ApprovalRecord | None,
        then: RecordHook | None = None,
    ) -> RecordHook:
        """Close the approval and audit the enrollment in the certificate's own transaction."""
        now = self._now()

        def hook(tx: StoreTransaction, record: CertificateRecord) -> None:
            data: dict[str, object] = {"serial": record.serial, "method": str(authorization.method)}
            use = authorization.use
            if use is not None and use.method is EnrollMethod.SECRET:
                data["secret_id"] = use.credential_id
            if approval is not None:
                tx.update_approval(
                    replace(approval, status=ApprovalStatus.ISSUED, serial=record.serial)
                )
                data["request"] = approval.request_id
            if authorization.bootstrap_ca is not None:
                data["bootstrap_ca"] = authorization.bootstrap_ca
            tx.append_audit(
                now,
                authorization.actor,
                f"{authorization.protocol}.enrolled",
                authorization.device,
                data,
            )
            if then is not None:
                then(tx, record)

        return hook

    def reenroll(
        self, authorization: Authorization, csr: KeyRequest, within: RecordHook | None = None
    ) -> Issued:
        """RFC 7030 section 4.2.2: a new certificate for the same identity (a new key: rekey).
        ``within`` runs in the transaction that records it."""
        current = authorization.current
        if current is None:
            raise Forbidden("re-enrollment needs the current certificate")
        return self.authority.renew(
            current.serial, ca=current.ca_name, csr=csr, actor=authorization.actor, within=within
        )


def _request_fingerprint(csr: KeyRequest) -> str:
    """What identifies a request waiting for approval: a CSR's DER, else its key and subject."""
    if isinstance(csr, x509.CertificateSigningRequest):
        data = csr.public_bytes(_DER)
    else:
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        data = csr.public_key().public_bytes(_DER, spki) + csr.subject.public_bytes()
    return hashlib.sha256(data).hexdigest()


def _server_generated(
    csr: KeyRequest,
) -> tuple[CertificateIssuerPrivateKeyTypes, x509.CertificateSigningRequest]:
    """A new key of the CSR's key type (P-256 if unknown) and the CSR remade with it."""
    algorithm = algorithm_of(csr.public_key()) or KeyAlgorithm.P256
    key = generate_private_key(algorithm)
    builder = x509.CertificateSigningRequestBuilder().subject_name(csr.subject)
    for extension in csr.extensions:
        builder = builder.add_extension(extension.value, critical=extension.critical)
    return key, builder.sign(key, signature_hash(key))
