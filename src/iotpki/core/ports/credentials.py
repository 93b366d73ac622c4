"""The store's enrollment credentials: bootstrap CAs, one-time secrets, approvals, SCEP state."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from iotpki.core.models import (
    ApprovalRecord,
    BootstrapCARecord,
    EnrollmentSecretRecord,
    IdevidBinding,
    ScepChallengeRecord,
    ScepRaRecord,
    ScepTransactionRecord,
    SecretLockout,
)

__all__ = ["ApprovalTx", "CredentialTx", "ProvisioningTx", "ScepTx"]


class CredentialTx(Protocol):
    """Bootstrap CAs, IDevID bindings, one-time enrollment secrets and their lockouts."""

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


class ProvisioningTx(Protocol):
    """Provisioning request IDs answered, kept with the certificate that answered them."""

    def provisioning_request(self, request_key: str) -> tuple[str, str] | None:
        """The CA and serial a provisioning request ID was answered with, if it was."""
        ...

    def add_provisioning_request(
        self, request_key: str, ca_name: str, serial: str, at: datetime
    ) -> bool:
        """Record the certificate a provisioning request ID is answered with; False (nothing
        written) when the ID was answered already."""
        ...


class ApprovalTx(Protocol):
    """Enrollment requests waiting for an operator's decision."""

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


class ScepTx(Protocol):
    """SCEP challenge passwords, transactions and RA certificates."""

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
