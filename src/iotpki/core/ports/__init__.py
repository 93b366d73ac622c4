"""The contracts the core needs from the outside: keys, storage, time and linting.

``iotpki.keys`` and ``iotpki.store`` implement these; the core imports nothing but them. The
store is seen through one small Protocol per concern (``CaTx``, ``CertificateTx``, ``AuditTx``,
...); a function asks for the narrowest it needs, and ``StoreTransaction`` combines them all.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificateIssuerPublicKeyTypes,
)

from iotpki.core.models import AuditEvent, CertificateRecord, KeyAlgorithm, LintFinding
from iotpki.core.ports.access import SessionTx, TokenTx
from iotpki.core.ports.audit import AbuseTx, AuditTx
from iotpki.core.ports.campaigns import CampaignTx
from iotpki.core.ports.certificates import (
    AttestationTx,
    CaTx,
    CertificateTx,
    DeviceTx,
    RevocationTx,
)
from iotpki.core.ports.credentials import ApprovalTx, CredentialTx, ProvisioningTx, ScepTx

__all__ = [
    "AbuseTx",
    "ApprovalTx",
    "AttestationTx",
    "AuditTx",
    "CaTx",
    "CampaignTx",
    "CertificateTx",
    "Clock",
    "CredentialTx",
    "DeviceTx",
    "KeyBackend",
    "Linter",
    "ProvisioningTx",
    "RevocationTx",
    "ScepTx",
    "SessionTx",
    "Store",
    "StoreTransaction",
    "SystemClock",
    "TokenTx",
]


class Clock(Protocol):
    """Source of the current time (UTC, timezone-aware)."""

    def now(self) -> datetime:
        """The current time."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        """The current UTC time, truncated to whole seconds as X.509 encodes it."""
        return datetime.now(UTC).replace(microsecond=0)


class KeyBackend(Protocol):
    """Holds CA private keys; keys never leave it, signatures are made inside it."""

    name: str

    def generate(self, label: str, algorithm: KeyAlgorithm) -> str:
        """Create a new key pair and return the reference that finds it again."""
        ...

    def signer(self, key_ref: str) -> CertificateIssuerPrivateKeyTypes:
        """A private-key object whose ``sign`` is performed by the backend."""
        ...

    def public_key(self, key_ref: str) -> CertificateIssuerPublicKeyTypes:
        """The public half of a stored key."""
        ...


class Linter(Protocol):
    """Checks a DER certificate against RFC 5280 and returns its findings."""

    def lint(self, der: bytes) -> list[LintFinding]:
        """Findings for one certificate; an empty list means clean."""
        ...


class StoreTransaction(
    CaTx,
    CertificateTx,
    RevocationTx,
    DeviceTx,
    AttestationTx,
    CredentialTx,
    ProvisioningTx,
    ApprovalTx,
    ScepTx,
    TokenTx,
    SessionTx,
    AuditTx,
    AbuseTx,
    CampaignTx,
    Protocol,
):
    """Reads and writes inside one database transaction: every per-concern port at once."""


class Store(Protocol):
    """Durable state: CAs, certificates, devices, tokens and the audit log."""

    def transaction(self, *, readonly: bool = False) -> AbstractContextManager[StoreTransaction]:
        """A unit of work committed on normal exit and rolled back on an exception.

        Write transactions are serialised against each other from their start (SQLite
        ``BEGIN IMMEDIATE``; the audit head row lock on PostgreSQL); ``readonly`` ones are not.
        """
        ...

    def audit_events(self, after_seq: int = 0) -> Iterator[AuditEvent]:
        """Audit events in sequence order, for verification."""
        ...

    def latest_audit(self, action: str) -> AuditEvent | None:
        """The newest audit event with this action."""
        ...

    def audit_head(self) -> tuple[int, str]:
        """Sequence number and hash of the last audit event as the anchor records it."""
        ...

    def certificates_to_lint(self, limit: int) -> list[CertificateRecord]:
        """Certificates not linted yet, oldest first."""
        ...

    def record_lint(self, ca_name: str, serial: str, findings: list[LintFinding]) -> None:
        """Keep a certificate's lint findings for the compliance report."""
        ...

    def lint_findings(self, ca_name: str, serial: str) -> list[LintFinding]:
        """The findings kept for a certificate."""
        ...
