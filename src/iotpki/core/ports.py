"""The contracts the core needs from the outside: keys, storage, time and linting.

``iotpki.keys`` and ``iotpki.store`` implement these; the core imports nothing but them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificateIssuerPublicKeyTypes,
)

from iotpki.core.models import (
    ApiTokenRecord,
    ApprovalRecord,
    AuditEvent,
    BootstrapCARecord,
    CARecord,
    CertificateQuery,
    CertificateRecord,
    DeviceRecord,
    EnrollmentSecretRecord,
    IdevidBinding,
    KeyAlgorithm,
    KeyAttestation,
    LintFinding,
    RefusalCounter,
    RevocationReason,
    ScepChallengeRecord,
    ScepRaRecord,
    ScepTransactionRecord,
    SecretLockout,
    SessionRecord,
    ThrottleRecord,
    UserRecord,
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

    def key_holders(self, fingerprint: str) -> list[tuple[str, str | None, str]]:
        """(serial, device ID, subject) of every certificate with this key."""
        ...

    def device_status(self, device_id: str) -> str | None:
        """The registry status of a device, or None when it is not registered."""
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

    def add_device(self, record: DeviceRecord) -> None:
        """Insert a device that is not in the registry yet."""
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

    def list_tokens(self) -> list[ApiTokenRecord]:
        """Every API token, revoked ones included, oldest first."""
        ...

    def revoke_token(self, token_id: str) -> None:
        """Mark an API token revoked."""
        ...

    # -- dashboard users, sessions and sign-in throttling -------------------------------------

    def get_user(self, username: str) -> UserRecord | None:
        """A dashboard user by name."""
        ...

    def put_user(self, record: UserRecord) -> None:
        """Create or replace a dashboard user."""
        ...

    def add_session(self, record: SessionRecord) -> None:
        """Insert a session."""
        ...

    def get_session(self, session_hash: str) -> SessionRecord | None:
        """A session by the hash of its id."""
        ...

    def delete_session(self, session_hash: str) -> int:
        """End one session; the number of rows deleted."""
        ...

    def delete_sessions(self, subject: str) -> int:
        """End every session of a token or user; how many there were."""
        ...

    def purge_sessions(self, now: datetime) -> int:
        """Delete sessions that have expired."""
        ...

    def throttle_states(self, keys: Sequence[str], *, lock: bool = False) -> list[ThrottleRecord]:
        """The throttling state kept under these keys (locked for update on PostgreSQL)."""
        ...

    def put_throttle(self, record: ThrottleRecord) -> None:
        """Insert or replace the state under one key."""
        ...

    def clear_throttle(self, key: str) -> None:
        """Forget the failures counted under one key."""
        ...

    # -- EST enrollment: bootstrap CAs, IDevID bindings, one-time secrets, approvals --------

    def get_bootstrap_ca(self, name: str) -> BootstrapCARecord | None:
        """A registered bootstrap (manufacturer) CA."""
        ...

    def list_bootstrap_cas(self) -> list[BootstrapCARecord]:
        """Every registered bootstrap CA."""
        ...

    def put_bootstrap_ca(self, record: BootstrapCARecord) -> None:
        """Insert or replace a bootstrap CA."""
        ...

    def get_idevid_binding(self, bootstrap_ca: str, idevid: str) -> IdevidBinding | None:
        """The device an IDevID of a bootstrap CA is bound to."""
        ...

    def put_idevid_binding(self, record: IdevidBinding) -> None:
        """Bind an IDevID to a device (replacing an earlier binding)."""
        ...

    def add_enrollment_secret(self, record: EnrollmentSecretRecord) -> None:
        """Insert an enrollment secret."""
        ...

    def enrollment_secrets(self, device_id: str) -> list[EnrollmentSecretRecord]:
        """Every enrollment secret of a device, newest first."""
        ...

    def update_enrollment_secret(self, record: EnrollmentSecretRecord) -> bool:
        """Store a secret's use and failure counters; False if it was used meanwhile."""
        ...

    def secret_lockout(self, device_id: str, source: str) -> SecretLockout | None:
        """The failed guesses at a device's secrets from one source, if any."""
        ...

    def put_secret_lockout(self, record: SecretLockout) -> None:
        """Insert or replace the failed guesses of one device and source."""
        ...

    def prune_secret_lockouts(self, device_id: str, before: datetime) -> None:
        """Forget a device's failure counts last updated before ``before``."""
        ...

    def add_approval(self, record: ApprovalRecord) -> None:
        """Insert an enrollment approval request."""
        ...

    def get_approval(self, request_id: str) -> ApprovalRecord | None:
        """An approval request by id."""
        ...

    def find_approval(self, device_id: str, csr_fingerprint: str) -> ApprovalRecord | None:
        """The newest approval request of a device for one CSR."""
        ...

    def list_approvals(self, status: str | None) -> list[ApprovalRecord]:
        """Approval requests, newest first, optionally of one status."""
        ...

    def update_approval(self, record: ApprovalRecord) -> None:
        """Store an approval request's decision."""
        ...

    # -- SCEP: challenge passwords, transactions, RA certificates ---------------------------

    def add_scep_challenge(self, record: ScepChallengeRecord) -> None:
        """Insert a SCEP challenge password."""
        ...

    def get_scep_challenge(self, secret_hash: str) -> ScepChallengeRecord | None:
        """The challenge password with this SHA-256, if any."""
        ...

    def use_scep_challenge(self, challenge_id: str, at: datetime, transaction_id: str) -> bool:
        """Mark a challenge used by a transaction; False if it was used already."""
        ...

    def get_scep_transaction(
        self, ca_name: str, transaction_id: str
    ) -> ScepTransactionRecord | None:
        """A SCEP transaction of a CA by its transactionID."""
        ...

    def add_scep_transaction(self, record: ScepTransactionRecord) -> None:
        """Insert a SCEP transaction; one with the same CA and ID is a ``Conflict``."""
        ...

    def replace_scep_transaction(
        self, old: ScepTransactionRecord, new: ScepTransactionRecord
    ) -> bool:
        """Replace ``old`` by ``new`` unless it changed meanwhile (then False)."""
        ...

    def list_scep_transactions(self, status: str | None, limit: int) -> list[ScepTransactionRecord]:
        """SCEP transactions, newest first, optionally of one status."""
        ...

    def add_scep_ra(self, record: ScepRaRecord) -> None:
        """Insert a SCEP RA certificate."""
        ...

    def list_scep_ras(self, ca_name: str) -> list[ScepRaRecord]:
        """The SCEP RA certificates of a CA, newest first."""
        ...

    def add_key_attestation(self, record: KeyAttestation) -> None:
        """Record the TPM attestation of an issued certificate's key."""
        ...

    def get_key_attestation(self, ca_name: str, serial: str) -> KeyAttestation | None:
        """The attestation of a certificate's key, if it was attested."""
        ...

    def attested_serials(self, certificates: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of these (CA name, serial) pairs have an attested key."""
        ...

    def append_audit(
        self, time: datetime, actor: str, action: str, target: str, data: dict[str, object]
    ) -> AuditEvent:
        """Append one event to the hash chain, serialised against other writers."""
        ...

    def claim_refusal_counter(self, counter: RefusalCounter) -> tuple[RefusalCounter, bool]:
        """The locked counter of ``counter``'s key, inserted as given if absent (then True)."""
        ...

    def put_refusal_counter(self, counter: RefusalCounter) -> None:
        """Store a counter claimed in this transaction."""
        ...

    def closed_refusal_counters(self, before: datetime, limit: int) -> list[RefusalCounter]:
        """Locked counters whose window started before ``before``, oldest first."""
        ...

    def delete_refusal_counter(self, counter: RefusalCounter) -> None:
        """Forget a counter (its window was written to the chain)."""
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
