"""The SQL store implements every port the core declares; mypy checks these assignments."""

from __future__ import annotations

from iotpki.core.acme_ports import AcmeStore, AcmeTransaction
from iotpki.core.ports import (
    AbuseTx,
    ApprovalTx,
    AttestationTx,
    AuditTx,
    CampaignTx,
    CaTx,
    CertificateTx,
    CredentialTx,
    DeviceTx,
    ProvisioningTx,
    RevocationTx,
    ScepTx,
    SessionTx,
    Store,
    StoreTransaction,
    TokenTx,
)
from iotpki.core.ports.audit import RefusalTx
from iotpki.store.acme import SqlAcmeStore, SqlAcmeTransaction
from iotpki.store.sql import SqlStore, SqlTransaction

__all__ = ["ACME_PORTS", "TRANSACTION_PORTS"]

# Each pair binds a Protocol to the SQL class that implements it structurally.
_CA: type[CaTx] = SqlTransaction
_CERTIFICATES: type[CertificateTx] = SqlTransaction
_REVOCATION: type[RevocationTx] = SqlTransaction
_DEVICES: type[DeviceTx] = SqlTransaction
_ATTESTATION: type[AttestationTx] = SqlTransaction
_CREDENTIALS: type[CredentialTx] = SqlTransaction
_PROVISIONING: type[ProvisioningTx] = SqlTransaction
_APPROVALS: type[ApprovalTx] = SqlTransaction
_SCEP: type[ScepTx] = SqlTransaction
_TOKENS: type[TokenTx] = SqlTransaction
_SESSIONS: type[SessionTx] = SqlTransaction
_AUDIT: type[AuditTx] = SqlTransaction
_ABUSE: type[AbuseTx] = SqlTransaction
_REFUSALS: type[RefusalTx] = SqlTransaction
_CAMPAIGNS: type[CampaignTx] = SqlTransaction
_TRANSACTION: type[StoreTransaction] = SqlTransaction
_STORE: type[Store] = SqlStore
_ACME_TRANSACTION: type[AcmeTransaction] = SqlAcmeTransaction
_ACME_STORE: type[AcmeStore] = SqlAcmeStore

#: Every per-concern transaction port with its SQL implementation.
TRANSACTION_PORTS: tuple[tuple[type[object], type[object]], ...] = (
    (CaTx, _CA),
    (CertificateTx, _CERTIFICATES),
    (RevocationTx, _REVOCATION),
    (DeviceTx, _DEVICES),
    (AttestationTx, _ATTESTATION),
    (CredentialTx, _CREDENTIALS),
    (ProvisioningTx, _PROVISIONING),
    (ApprovalTx, _APPROVALS),
    (ScepTx, _SCEP),
    (TokenTx, _TOKENS),
    (SessionTx, _SESSIONS),
    (AuditTx, _AUDIT),
    (AbuseTx, _ABUSE),
    (RefusalTx, _REFUSALS),
    (CampaignTx, _CAMPAIGNS),
    (StoreTransaction, _TRANSACTION),
)

#: The ACME ports with their SQL implementation.
ACME_PORTS: tuple[tuple[type[object], type[object]], ...] = (
    (AcmeTransaction, _ACME_TRANSACTION),
    (AcmeStore, _ACME_STORE),
    (Store, _STORE),
)
