"""The contracts the core needs from the outside: keys, storage, time and linting.

``iotpki.keys`` and ``iotpki.store`` implement these; the core imports nothing but them.
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

from iotpki.core.models import (
    ApiTokenRecord,
    AuditEvent,
    CARecord,
    CertificateQuery,
    CertificateRecord,
    DeviceRecord,
    KeyAlgorithm,
    LintFinding,
    RevocationReason,
)

__all__ = ["Clock", "KeyBackend", "Linter", "Store", "StoreTransaction", "SystemClock"]


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


class StoreTransaction(Protocol):
    """Reads and writes inside one database transaction."""

    def get_ca(self, name: str) -> CARecord | None:
        """The CA of that name, if any."""
        ...

    def list_cas(self) -> list[CARecord]:
        """Every CA, oldest first."""
        ...

    def put_ca(self, record: CARecord) -> None:
        """Insert a CA or replace the one of the same name."""
        ...

    def add_certificate(self, record: CertificateRecord) -> None:
        """Insert a certificate; raises ``Conflict`` if (CA, serial) exists."""
        ...

    def get_certificate(self, ca_name: str | None, serial: str) -> CertificateRecord | None:
        """A certificate by serial, within one CA or across all."""
        ...

    def certificates_with_key(self, fingerprint: str) -> list[CertificateRecord]:
        """Every certificate whose public key has this fingerprint."""
        ...

    def is_key_blocked(self, fingerprint: str) -> bool:
        """Whether this key was revoked for key compromise."""
        ...

    def block_key(self, fingerprint: str, reason: str, at: datetime) -> None:
        """Refuse this key from now on."""
        ...

    def mark_revoked(
        self,
        ca_name: str,
        serial: str,
        at: datetime,
        reason: RevocationReason,
        invalidity_date: datetime | None,
    ) -> None:
        """Record a revocation."""
        ...

    def list_certificates(self, query: CertificateQuery, now: datetime) -> list[CertificateRecord]:
        """Certificates matching the query, newest first."""
        ...

    def get_device(self, device_id: str) -> DeviceRecord | None:
        """A device of the registry."""
        ...

    def put_device(self, record: DeviceRecord) -> None:
        """Insert or update a device."""
        ...

    def add_token(self, record: ApiTokenRecord) -> None:
        """Insert an API token."""
        ...

    def get_token(self, token_id: str) -> ApiTokenRecord | None:
        """An API token by its public id."""
        ...

    def append_audit(
        self, time: datetime, actor: str, action: str, target: str, data: dict[str, object]
    ) -> AuditEvent:
        """Append one event to the hash chain, serialised against other writers."""
        ...


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
