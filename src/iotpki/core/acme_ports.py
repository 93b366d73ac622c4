"""Records and the storage contract of the ACME adapter (RFC 8555 accounts, orders, authorizations,
challenges; RFC 8555 section 7.3.4 external account binding; RFC 9773 renewal overrides).

``iotpki.store.acme`` implements :class:`AcmeStore`; the adapter in ``iotpki.protocols.acme``
uses nothing else to keep its state. Every write happens inside an :class:`AcmeTransaction`,
which also appends to the audit chain so that a state change and its audit event commit together.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from iotpki.core.models import CertificateRecord, KeyAttestation
from iotpki.core.ports import AuditTx, StoreTransaction

__all__ = [
    "AcmeAccount",
    "AcmeAuthorization",
    "AcmeChallenge",
    "AcmeOrder",
    "AcmeStore",
    "AcmeTransaction",
    "EabCredential",
    "Identifier",
    "RenewalOverride",
]

Identifier = tuple[str, str]
"""An ACME identifier as (type, value): ("dns", "a.example"), ("ip", "192.0.2.1")."""


@dataclass(frozen=True, slots=True)
class EabCredential:
    """An external account binding credential: single-use, bound to a tenant and profiles."""

    key_id: str
    hmac_key: bytes
    tenant: str
    profile: str
    device_profile: str
    device_patterns: tuple[str, ...]
    description: str
    created_at: datetime
    expires_at: datetime | None = None
    used_at: datetime | None = None
    used_by: str | None = None
    revoked: bool = False


@dataclass(frozen=True, slots=True)
class AcmeAccount:
    """An ACME account (RFC 8555 section 7.1.2) and the policy its EAB credential gave it."""

    account_id: str
    thumbprint: str
    jwk: str
    status: str
    contacts: tuple[str, ...]
    terms_agreed: bool
    eab_key_id: str | None
    tenant: str | None
    profile: str
    device_profile: str
    device_patterns: tuple[str, ...]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class AcmeOrder:
    """An order (RFC 8555 section 7.1.3)."""

    order_id: str
    account_id: str
    status: str
    identifiers: tuple[Identifier, ...]
    profile: str
    expires: datetime
    created_at: datetime
    certificate_serial: str | None = None
    certificate_ca: str | None = None
    error: dict[str, object] | None = None
    replaces: str | None = None


@dataclass(frozen=True, slots=True)
class AcmeAuthorization:
    """An authorization for one identifier (RFC 8555 section 7.1.4)."""

    authz_id: str
    order_id: str
    account_id: str
    identifier: Identifier
    status: str
    expires: datetime


@dataclass(frozen=True, slots=True)
class AcmeChallenge:
    """One challenge of an authorization (RFC 8555 section 7.1.5, section 8)."""

    challenge_id: str
    authz_id: str
    type: str
    token: str
    status: str
    validated_at: datetime | None = None
    error: dict[str, object] | None = None
    attempts: int = 0


@dataclass(frozen=True, slots=True)
class RenewalOverride:
    """An operator's decision to pull renewal windows forward (RFC 9773 section 4.2).

    It applies to one certificate (``serial``) or to every certificate matching the other
    filters, e.g. everything a CA issued before an incident.
    """

    override_id: str
    window_start: datetime
    window_end: datetime
    created_at: datetime
    serial: str | None = None
    ca_name: str | None = None
    profile: str | None = None
    issued_before: datetime | None = None
    explanation_url: str | None = None
    actor: str = ""


class AcmeTransaction(AuditTx, Protocol):
    """Reads and writes of ACME state inside one database transaction (audited in it)."""

    def get_certificate(self, ca_name: str | None, serial: str) -> CertificateRecord | None:
        """An issued certificate, to check ownership on revocation and renewal information."""
        ...

    def certificate_der(self, ca_name: str, serial: str) -> bytes | None:
        """The DER of an issued certificate (the leaf of a download)."""
        ...

    def add_eab(self, credential: EabCredential) -> None:
        """Insert an EAB credential."""
        ...

    def get_eab(self, key_id: str) -> EabCredential | None:
        """An EAB credential by key id."""
        ...

    def list_eab(self) -> list[EabCredential]:
        """Every EAB credential, newest first."""
        ...

    def use_eab(self, key_id: str, account_id: str, at: datetime) -> bool:
        """Mark a credential used by an account; False when it was used already."""
        ...

    def revoke_eab(self, key_id: str) -> bool:
        """Withdraw an unused credential; False when there is none to revoke."""
        ...

    def add_account(self, account: AcmeAccount) -> None:
        """Insert an account; ``Conflict`` when its key is already registered."""
        ...

    def get_account(self, account_id: str) -> AcmeAccount | None:
        """An account by id."""
        ...

    def account_by_thumbprint(self, thumbprint: str) -> AcmeAccount | None:
        """The account registered with this key (RFC 7638 thumbprint)."""
        ...

    def update_account(
        self,
        account_id: str,
        *,
        status: str | None = None,
        contacts: tuple[str, ...] | None = None,
        jwk: str | None = None,
        thumbprint: str | None = None,
    ) -> None:
        """Change an account's status, contacts or key."""
        ...

    def add_order(
        self,
        order: AcmeOrder,
        authorizations: list[AcmeAuthorization],
        challenges: list[AcmeChallenge],
    ) -> None:
        """Insert an order with its authorizations and their challenges."""
        ...

    def get_order(self, order_id: str) -> AcmeOrder | None:
        """An order by id."""
        ...

    def account_orders(self, account_id: str, limit: int) -> list[str]:
        """Ids of an account's orders, newest first."""
        ...

    def order_for_certificate(self, ca_name: str, serial: str) -> AcmeOrder | None:
        """The order that produced a certificate."""
        ...

    def replacing_orders(self, replaces: str) -> list[AcmeOrder]:
        """Orders that declared they replace this certificate (RFC 9773 ``replaces``)."""
        ...

    def update_order(
        self,
        order_id: str,
        *,
        status: str,
        expect: str | None = None,
        error: dict[str, object] | None = None,
        certificate_serial: str | None = None,
        certificate_ca: str | None = None,
    ) -> bool:
        """Move an order to ``status`` (only from ``expect`` if given); False if it did not."""
        ...

    def order_authorizations(self, order_id: str) -> list[AcmeAuthorization]:
        """The authorizations of an order."""
        ...

    def get_authorization(self, authz_id: str) -> AcmeAuthorization | None:
        """An authorization by id."""
        ...

    def valid_authorizations(
        self, account_id: str, identifiers: list[Identifier], now: datetime
    ) -> list[AcmeAuthorization]:
        """The account's unexpired valid authorizations for any of these identifiers."""
        ...

    def update_authorization(self, authz_id: str, *, status: str, expect: str | None) -> bool:
        """Move an authorization to ``status`` (only from ``expect`` if given)."""
        ...

    def authorization_challenges(self, authz_id: str) -> list[AcmeChallenge]:
        """The challenges of an authorization."""
        ...

    def get_challenge(self, challenge_id: str) -> AcmeChallenge | None:
        """A challenge by id."""
        ...

    def update_challenge(
        self,
        challenge_id: str,
        *,
        status: str,
        expect: str | None,
        error: dict[str, object] | None = None,
        validated_at: datetime | None = None,
        attempts: int | None = None,
    ) -> bool:
        """Move a challenge to ``status`` (only from ``expect`` if given)."""
        ...

    def processing_challenges(self, limit: int) -> list[AcmeChallenge]:
        """Challenges whose validation was started and not finished (to resume after restart)."""
        ...

    def add_renewal_override(self, override: RenewalOverride) -> None:
        """Insert an operator's renewal window override."""
        ...

    def renewal_overrides(self) -> list[RenewalOverride]:
        """Every renewal window override, newest first."""
        ...

    def add_pending_attestation(
        self, authz_id: str, order_id: str, key_spki: bytes, record: KeyAttestation
    ) -> None:
        """Keep the key an authorization's device-attest-01 proved, until finalize."""
        ...

    def order_attestations(self, order_id: str) -> list[tuple[bytes, KeyAttestation]]:
        """The attested keys (SubjectPublicKeyInfo DER and record) of an order."""
        ...


class AcmeStore(Protocol):
    """Durable ACME state."""

    def transaction(self, *, readonly: bool = False) -> AbstractContextManager[AcmeTransaction]:
        """A unit of work committed on normal exit and rolled back on an exception."""
        ...

    def joined(self, tx: StoreTransaction) -> AcmeTransaction:
        """The ACME view of a store transaction in progress, to commit a change with it."""
        ...
