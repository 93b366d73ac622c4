"""Plain records the core passes to and from its ports.

Certificates travel as DER inside records; callers parse them with cryptography when they need
the object (``x509.load_der_x509_certificate``), so nothing here wraps cryptography's types.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509


class KeyAlgorithm(enum.StrEnum):
    """Key types a CA or a device may hold."""

    P256 = "p256"
    P384 = "p384"
    RSA2048 = "rsa2048"
    RSA3072 = "rsa3072"
    RSA4096 = "rsa4096"
    ED25519 = "ed25519"
    MLDSA44 = "mldsa44"
    MLDSA65 = "mldsa65"


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

    @property
    def certificate(self) -> x509.Certificate:
        """The certificate, parsed."""
        return x509.load_der_x509_certificate(self.der)


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """A device of the registry."""

    device_id: str
    status: str = "active"
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
