"""Plain records the core passes to and from its ports.

Certificates travel as DER inside records; callers parse them with cryptography when they need
the object (``x509.load_der_x509_certificate``), so nothing here wraps cryptography's types.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509


class KeyType(enum.StrEnum):
    """The key families a profile accepts: the one vocabulary of key types.

    Each :class:`KeyAlgorithm` is one of these at one size (:attr:`KeyAlgorithm.key_type`);
    other spellings found in settings are read by :func:`iotpki.core.keytypes.parse_key_type`.
    """

    P256 = "p256"
    P384 = "p384"
    RSA = "rsa"  # any size from the profile's min_rsa_bits
    ED25519 = "ed25519"
    MLDSA44 = "mldsa44"
    MLDSA65 = "mldsa65"


class KeyAlgorithm(enum.StrEnum):
    """Keys a CA or a device may hold: a key type at one size, named as the type if it has one."""

    P256 = "p256"
    P384 = "p384"
    RSA2048 = "rsa2048"
    RSA3072 = "rsa3072"
    RSA4096 = "rsa4096"
    ED25519 = "ed25519"
    MLDSA44 = "mldsa44"
    MLDSA65 = "mldsa65"

    @property
    def key_type(self) -> KeyType:
        """The key type this algorithm is one size of."""
        return KeyType.RSA if self.value.startswith("rsa") else KeyType(self.value)


class CAKind(enum.StrEnum):
    """Where a CA stands in the hierarchy."""

    ROOT = "root"
    ISSUING = "issuing"


class CAStatus(enum.StrEnum):
    """Life-cycle state of a CA."""

    PENDING = "pending"  # key and CSR made, waiting for the parent's certificate
    ACTIVE = "active"
    RETIRED = "retired"
    REVOKED = "revoked"


class CertStatus(enum.StrEnum):
    """State of an issued certificate (expiry is derived from not_after, not stored)."""

    VALID = "valid"
    REVOKED = "revoked"


class RevocationReason(enum.StrEnum):
    """RFC 5280 section 5.3.1 reason codes, by their ASN.1 names."""

    UNSPECIFIED = "unspecified"
    KEY_COMPROMISE = "keyCompromise"
    CA_COMPROMISE = "cACompromise"
    AFFILIATION_CHANGED = "affiliationChanged"
    SUPERSEDED = "superseded"
    CESSATION_OF_OPERATION = "cessationOfOperation"
    CERTIFICATE_HOLD = "certificateHold"
    PRIVILEGE_WITHDRAWN = "privilegeWithdrawn"
    AA_COMPROMISE = "aACompromise"

    @property
    def x509_flag(self) -> x509.ReasonFlags:
        """The matching cryptography ``ReasonFlags`` member."""
        return _REASON_FLAGS[self]


_REASON_FLAGS = {
    RevocationReason.UNSPECIFIED: x509.ReasonFlags.unspecified,
    RevocationReason.KEY_COMPROMISE: x509.ReasonFlags.key_compromise,
    RevocationReason.CA_COMPROMISE: x509.ReasonFlags.ca_compromise,
    RevocationReason.AFFILIATION_CHANGED: x509.ReasonFlags.affiliation_changed,
    RevocationReason.SUPERSEDED: x509.ReasonFlags.superseded,
    RevocationReason.CESSATION_OF_OPERATION: x509.ReasonFlags.cessation_of_operation,
    RevocationReason.CERTIFICATE_HOLD: x509.ReasonFlags.certificate_hold,
    RevocationReason.PRIVILEGE_WITHDRAWN: x509.ReasonFlags.privilege_withdrawn,
    RevocationReason.AA_COMPROMISE: x509.ReasonFlags.aa_compromise,
}


class Role(enum.StrEnum):
    """Roles an API token or user can hold."""

    ADMIN = "admin"
    OPERATOR = "operator"
    AUDITOR = "auditor"
    PROVISIONER = "provisioner"
    REPORTER = "reporter"  # brokers and gateways that report certificate usage


class DeviceStatus(enum.StrEnum):
    """Whether a registered device may enroll."""

    ACTIVE = "active"
    DISABLED = "disabled"


class BootstrapKind(enum.StrEnum):
    """What a registered bootstrap CA's certificates stand for."""

    IDEVID = "idevid"  # one certificate per device: the certificate names the device
    CLAIM = "claim"  # one certificate per production batch: the request names the device


class BootstrapCAStatus(enum.StrEnum):
    """Whether a manufacturer (IDevID) CA is trusted for enrollment."""

    ACTIVE = "active"
    REVOKED = "revoked"


class EnrollPolicy(enum.StrEnum):
    """Which IDevIDs of a bootstrap CA may enroll."""

    REGISTERED = "registered"  # only devices bound to their IDevID in the registry
    ANY = "any"  # any device holding an IDevID of this CA


class EnrollMethod(enum.StrEnum):
    """How an enrolling device authenticated (part of its audit actor and of an approval)."""

    SECRET = "secret"
    IDEVID = "idevid"
    CURRENT = "reenroll"
    CHALLENGE = "challenge"
    CLAIM = "claim"  # a batch's claim certificate (provisioning over MQTT)
    ACME = "acme"  # an ACME account with valid authorizations for its order


class ApprovalStatus(enum.StrEnum):
    """Where an enrollment waiting for an operator stands."""

    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    ISSUED = "issued"


class ScepTransactionKind(enum.StrEnum):
    """What a SCEP transaction asks for (RFC 8894 PKCSReq or RenewalReq)."""

    ENROLL = "enroll"
    RENEW = "renew"


class ScepTransactionStatus(enum.StrEnum):
    """A SCEP transaction's pkiStatus (RFC 8894 section 3.2.1.3), by name."""

    PENDING = "pending"
    SUCCESS = "success"
    FAILURE = "failure"


@dataclass(frozen=True, slots=True)
class CARecord:
    """A CA of this installation (or an external parent known only by its certificate)."""

    name: str
    kind: CAKind
    status: CAStatus
    parent: str | None
    key_backend: str | None  # None: the key is held elsewhere (an offline root)
    key_ref: str | None
    certificate_der: bytes | None  # None while PENDING
    csr_der: bytes | None = None
    created_at: datetime | None = None

    @property
    def certificate(self) -> x509.Certificate:
        """The CA certificate, parsed."""
        if self.certificate_der is None:
            raise ValueError(f"CA {self.name!r} has no certificate yet")
        return x509.load_der_x509_certificate(self.certificate_der)


@dataclass(frozen=True, slots=True)
class CertificateRecord:
    """An issued certificate as the store keeps it."""

    serial: str  # lower-case hex, no leading zeros
    ca_name: str
    profile: str
    device_id: str | None
    subject: str
    sans: tuple[str, ...]
    not_before: datetime
    not_after: datetime
    key_fingerprint: str  # SHA-256 of the SubjectPublicKeyInfo, hex
    key_algorithm: str
    der: bytes
    status: CertStatus = CertStatus.VALID
    revoked_at: datetime | None = None
    revocation_reason: RevocationReason | None = None
    invalidity_date: datetime | None = None
    issued_at: datetime | None = None
    lint_status: str | None = None  # None: not linted yet; "pass", "warn", "error"
    crl_partition: str | None = None  # None: the CA-wide CRL (``core.partitions``)

    @property
    def certificate(self) -> x509.Certificate:
        """The certificate, parsed."""
        return x509.load_der_x509_certificate(self.der)


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """A device of the registry."""

    device_id: str
    status: DeviceStatus = DeviceStatus.ACTIVE
    metadata: dict[str, str] = field(default_factory=dict)
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ApiTokenRecord:
    """An API token; only the SHA-256 of its secret is stored."""

    token_id: str
    role: Role
    description: str
    secret_hash: str
    created_at: datetime
    expires_at: datetime | None = None
    revoked: bool = False


@dataclass(frozen=True, slots=True)
class UserRecord:
    """A dashboard user; only an scrypt hash of the password is stored."""

    username: str
    role: Role
    password_hash: str
    created_at: datetime
    disabled: bool = False


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A server-side dashboard session; the cookie carries the id, the store its SHA-256."""

    session_hash: str
    subject: str  # "token:<id>" or "user:<name>"
    role: Role
    csrf: str
    created_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class ThrottleRecord:
    """Failed sign-ins counted under one key (an account or a source address)."""

    key: str  # "account:<name>", "token:<id>" or "source:<address>"
    failures: int
    last_failure: datetime
    blocked_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One entry of the hash-chained audit log."""

    seq: int
    time: datetime
    actor: str
    action: str
    target: str
    data: dict[str, object]
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class RefusalCounter:
    """Repeated anonymous refusals of one source, action and code within one window.

    The window's first refusal is in the audit chain; ``count`` more arrived after it and are
    written as one summary entry when the window closes.
    """

    source: str
    action: str
    code: str
    actor: str
    window_start: datetime
    last_time: datetime
    count: int = 0
    target: str = ""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class LintFinding:
    """One pkilint finding on a certificate."""

    severity: str  # "FATAL", "ERROR", "WARNING", "NOTICE", "INFO"
    code: str
    node: str
    message: str


@dataclass(frozen=True, slots=True)
class CertificateQuery:
    """Filters for listing certificates; every field is optional."""

    status: CertStatus | None = None
    ca_name: str | None = None
    profile: str | None = None
    device_id: str | None = None
    subject_contains: str | None = None
    expiring_before: datetime | None = None
    include_expired: bool = True
    limit: int = 100
    offset: int = 0


@dataclass(frozen=True, slots=True)
class BootstrapCARecord:
    """A CA whose IDevIDs (IEEE 802.1AR) or batch claim certificates may enroll."""

    name: str
    certificate_der: bytes
    fingerprint: str  # SHA-256 of the certificate DER, hex
    enroll_policy: EnrollPolicy
    profile: str | None = None  # the profile its devices get when the request names none
    approval: bool = False  # enrollments wait for an operator's approval
    status: BootstrapCAStatus = BootstrapCAStatus.ACTIVE
    created_at: datetime | None = None
    kind: BootstrapKind = BootstrapKind.IDEVID
    device_pattern: str | None = None  # a claim CA: the device IDs its batches may request

    @property
    def certificate(self) -> x509.Certificate:
        """The bootstrap CA certificate, parsed."""
        return x509.load_der_x509_certificate(self.certificate_der)


@dataclass(frozen=True, slots=True)
class IdevidBinding:
    """Which registry device an IDevID (bootstrap CA, IDevID identity) stands for."""

    bootstrap_ca: str
    idevid: str  # the IDevID subject's serialNumber, else its commonName
    device_id: str
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class EnrollmentSecretRecord:
    """A one-time enrollment secret for one device; only its SHA-256 is stored."""

    secret_id: str
    device_id: str
    secret_hash: str
    created_at: datetime
    expires_at: datetime
    profile: str | None = None
    approval: bool = False
    used_at: datetime | None = None
    failed_attempts: int = 0
    locked_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class SecretLockout:
    """Failed enrollment-secret guesses at one device from one source address."""

    device_id: str
    source: str
    failures: int
    updated_at: datetime
    locked_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class ApprovalRecord:
    """An enrollment waiting for, or decided by, an operator."""

    request_id: str
    device_id: str
    method: EnrollMethod
    profile: str
    ca_name: str | None
    csr_fingerprint: str  # SHA-256 of the CSR DER, hex
    status: ApprovalStatus
    created_at: datetime
    decided_at: datetime | None = None
    decided_by: str | None = None
    serial: str | None = None


@dataclass(frozen=True, slots=True)
class ScepChallengeRecord:
    """A one-time SCEP challenge password for one device; only its SHA-256 is stored."""

    challenge_id: str
    device_id: str
    secret_hash: str
    created_at: datetime
    expires_at: datetime
    profile: str = "device"
    ca_name: str | None = None
    approval: bool = False  # the enrollment waits for an operator (SCEP PENDING)
    used_at: datetime | None = None
    transaction_id: str | None = None


@dataclass(frozen=True, slots=True)
class ScepTransactionRecord:
    """A SCEP transaction (RFC 8894 section 3.2.1.1 transactionID) and where it stands."""

    ca_name: str
    transaction_id: str
    kind: ScepTransactionKind
    status: ScepTransactionStatus
    key_fingerprint: str  # SHA-256 of the requested SubjectPublicKeyInfo, hex
    csr_der: bytes | None  # a pending request stored before scep_0002; None since
    device_id: str | None
    profile: str
    created_at: datetime
    updated_at: datetime
    serial: str | None = None
    fail_info: str | None = None
    renewed_from: str | None = None
    challenge_id: str | None = None
    decided_by: str | None = None
    sealed_csr: bytes | None = None  # a pending request's CSR, encrypted to the RA
    sealed_by: str | None = None  # the serial of the RA certificate it is encrypted to


@dataclass(frozen=True, slots=True)
class ScepRaRecord:
    """A SCEP registration-authority certificate of a CA; its RSA key stays in its backend."""

    ca_name: str
    serial: str
    key_backend: str
    key_ref: str
    certificate_der: bytes
    created_at: datetime

    @property
    def certificate(self) -> x509.Certificate:
        """The RA certificate, parsed."""
        return x509.load_der_x509_certificate(self.certificate_der)


@dataclass(frozen=True, slots=True)
class KeyAttestation:
    """Proof that a key was generated in a TPM: what a verified attestation statement showed.

    ``ca_name`` and ``serial`` name the certificate of the key once it is issued; before that
    (an ACME order between device-attest-01 and finalize) they are None.
    """

    key_fingerprint: str  # SHA-256 of the attested SubjectPublicKeyInfo, hex
    method: str  # "tpm": a WebAuthn tpm statement (draft-ietf-acme-device-attest)
    attested_at: datetime
    device_identity: str | None  # the permanent identifier / hardware module the AK names
    ak_fingerprint: str  # SHA-256 of the attestation-key certificate, hex
    ak_issuer: str
    root_fingerprint: str  # SHA-256 of the trusted root the AK chained to, hex
    root_subject: str
    ca_name: str | None = None
    serial: str | None = None


class CampaignStatus(enum.StrEnum):
    """Where a rotation campaign stands."""

    ACTIVE = "active"
    PAUSED = "paused"  # its members renew as they would without it
    CANCELLED = "cancelled"
    FINISHED = "finished"  # the deadline passed; what was not replaced is reported


class MemberState(enum.StrEnum):
    """Where one certificate of a campaign stands."""

    PENDING = "pending"
    REPLACED = "replaced"
    MISSED = "missed"  # not replaced by the deadline
    REVOKED = "revoked"  # missed, and revoked as superseded (``revoke_after``)


@dataclass(frozen=True, slots=True)
class CampaignRecord:
    """A rotation campaign: the certificates selected must be replaced before the deadline,
    under the target CA, profile and key type, at no more than ``max_rate`` per second."""

    campaign_id: str
    name: str
    selector: str  # the ``key=value`` filters it was created with
    deadline: datetime
    max_rate: float
    status: CampaignStatus
    created_at: datetime
    created_by: str
    target_ca: str | None = None
    profile: str | None = None
    key_type: KeyType | None = None
    revoke_after: bool = False
    members: int = 0


@dataclass(frozen=True, slots=True)
class CampaignMember:
    """One certificate a campaign replaces, and the window it is asked to renew in."""

    campaign_id: str
    ca_name: str
    serial: str
    device_id: str | None
    window_start: datetime
    window_end: datetime
    state: MemberState = MemberState.PENDING
    replaced_by: str | None = None
    replaced_at: datetime | None = None
