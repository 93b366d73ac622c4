"""The admin API's route table, one source for its routes and its OpenAPI document.

Each adapter module binds its part of the table to its handlers (:func:`iotpki.api.schema.bind`);
``/api/openapi.json`` serves :func:`openapi_document`, built from the same table and models.
"""

from __future__ import annotations

from typing import Any

from iotpki.api import models as m
from iotpki.api.schema import Operation, Query, openapi
from iotpki.core.models import ApprovalStatus, CertStatus, ScepTransactionStatus

__all__ = [
    "ACME",
    "AKCA",
    "CORE",
    "ENROLLMENT",
    "OPERATIONS",
    "SCEP",
    "TABLE",
    "openapi_document",
]

_PAGING = (
    Query("limit", {"type": "integer", "minimum": 0, "maximum": 500}),
    Query("offset", {"type": "integer", "minimum": 0}),
)
_CA = Query("ca", {"type": "string", "maxLength": 64})
_V1 = "/api/v1"

CORE = (
    Operation(
        "POST", f"{_V1}/certificates", "cert:issue", "issue", "Issue a certificate from a CSR",
        m.Certificate, 201, m.IssueRequest,
    ),
    Operation(
        "GET", f"{_V1}/certificates", "cert:read", "list_certificates", "Search certificates",
        m.CertificateList,
        query=(
            Query("status", {"type": "string", "enum": [str(s) for s in CertStatus]}),
            _CA,
            Query("profile", {"type": "string"}),
            Query("device_id", {"type": "string"}),
            Query("q", {"type": "string"}),
            Query("expiring_before", {"type": "string", "format": "date-time"}),
            *_PAGING,
        ),
    ),
    Operation(
        "GET", f"{_V1}/certificates/{{serial}}", "cert:read", "show_certificate",
        "Show a certificate", m.Certificate, query=(_CA,),
    ),
    Operation(
        "POST", f"{_V1}/certificates/{{serial}}/revoke", "cert:revoke", "revoke",
        "Revoke a certificate", m.Certificate, body=m.RevokeRequest,
    ),
    Operation(
        "POST", f"{_V1}/certificates/{{serial}}/renew", "cert:issue", "renew",
        "Renew a certificate, with a new CSR to rekey", m.Certificate, 201, m.RenewRequest,
    ),
    Operation("GET", f"{_V1}/cas", "ca:read", "list_cas", "List CAs with their expiry", m.CAList),
    Operation("GET", f"{_V1}/cas/{{name}}", "ca:read", "show_ca", "Show a CA", m.CA),
    Operation(
        "POST", f"{_V1}/tokens", "token:create", "create_token", "Create an API token (admin)",
        m.NewToken, 201, m.TokenRequest,
    ),
    Operation(
        "GET", f"{_V1}/tokens", "token:list", "list_tokens",
        "List API tokens, revoked ones included (admin)", m.TokenList,
    ),
    Operation(
        "DELETE", f"{_V1}/tokens/{{token_id}}", "token:revoke", "revoke_token",
        "Revoke an API token and its dashboard sessions at once (admin)", m.Token,
    ),
    Operation(
        "GET", f"{_V1}/audit/verify", "audit:read", "verify_audit",
        "Verify the audit hash chain", m.AuditReport,
    ),
)  # fmt: skip

ENROLLMENT = (
    Operation(
        "POST", f"{_V1}/devices", "device:write", "register_device",
        "Register a device, optionally bound to its IDevID", m.Device, 201, m.DeviceRequest,
    ),
    Operation(
        "POST", f"{_V1}/devices/{{device_id}}/status", "device:write", "device_status",
        "Enable or disable a device", m.Device, body=m.DeviceStatusRequest,
    ),
    Operation(
        "POST", f"{_V1}/devices/{{device_id}}/enrollment-secrets", "secret:create",
        "create_secret", "Create a one-time enrollment secret (shown once)",
        m.EnrollmentSecret, 201, m.SecretRequest,
    ),
    Operation(
        "GET", f"{_V1}/bootstrap-cas", "ca:read", "list_bootstrap_cas",
        "List the trusted manufacturer (IDevID) CAs", m.BootstrapCAList,
    ),
    Operation(
        "POST", f"{_V1}/bootstrap-cas", "bootstrap:write", "add_bootstrap_ca",
        "Trust a manufacturer CA's IDevIDs for enrollment", m.BootstrapCA, 201,
        m.BootstrapCARequest,
    ),
    Operation(
        "POST", f"{_V1}/bootstrap-cas/{{name}}/revoke", "bootstrap:write",
        "revoke_bootstrap_ca", "Stop trusting a bootstrap CA", m.BootstrapCA,
    ),
    Operation(
        "GET", f"{_V1}/enrollment-requests", "device:read", "list_requests",
        "Enrollment requests waiting for (or past) approval", m.EnrollmentRequestList,
        query=(
            Query(
                "status",
                {"type": "string", "enum": [*(str(s) for s in ApprovalStatus), "all"]},
            ),
        ),
    ),
    Operation(
        "POST", f"{_V1}/enrollment-requests/{{request_id}}/approve", "cert:issue", "approve",
        "Approve a pending enrollment", m.EnrollmentRequest, body=m.DecisionRequest,
        body_required=False,
    ),
    Operation(
        "POST", f"{_V1}/enrollment-requests/{{request_id}}/reject", "cert:issue", "reject",
        "Reject a pending enrollment", m.EnrollmentRequest, body=m.DecisionRequest,
        body_required=False,
    ),
)  # fmt: skip

_SCEP_ONE = f"{_V1}/scep/transactions/{{ca}}/{{transaction_id:path}}"
SCEP = (
    Operation(
        "POST", f"{_V1}/scep/challenges", "secret:create", "create_challenge",
        "Create a one-time SCEP challenge password (shown once)", m.ScepChallenge, 201,
        m.ScepChallengeRequest,
    ),
    Operation(
        "GET", f"{_V1}/scep/transactions", "device:read", "list_transactions",
        "SCEP transactions, newest first", m.ScepTransactionList,
        query=(
            Query("status", {"type": "string", "enum": [str(s) for s in ScepTransactionStatus]}),
        ),
    ),
    Operation(
        "POST", f"{_SCEP_ONE}/approve", "cert:issue", "approve",
        "Issue a pending SCEP request", m.ScepTransaction,
    ),
    Operation(
        "POST", f"{_SCEP_ONE}/reject", "cert:issue", "reject",
        "Refuse a pending SCEP request", m.ScepTransaction,
    ),
)  # fmt: skip

ACME = (
    Operation(
        "POST", f"{_V1}/acme/eab", "secret:create", "create_eab",
        "Create a single-use EAB credential (its HMAC key is shown once)", m.EabCredential,
        201, m.EabRequest,
    ),
    Operation(
        "GET", f"{_V1}/acme/eab", "secret:create", "list_eab",
        "List EAB credentials (without their keys)", m.EabCredentialList,
    ),
    Operation(
        "POST", f"{_V1}/acme/eab/{{key_id}}/revoke", "secret:create", "revoke_eab",
        "Withdraw an unused EAB credential", m.EabRevoked,
    ),
    Operation(
        "POST", f"{_V1}/acme/renewal-info/advance", "cert:revoke", "advance_renewal",
        "Pull renewal windows forward for matching certificates", m.RenewalOverride, 201,
        m.AdvanceRenewalRequest,
    ),
)  # fmt: skip

OPERATIONS = (
    Operation(
        "POST", f"{_V1}/usage/events", "usage:ingest", "ingest",
        "Report certificate usage (reporter role); a batch is accepted once",
        m.UsageAccepted, 202, m.UsageBatch,
    ),
    Operation(
        "GET", f"{_V1}/findings", "finding:read", "findings",
        "Monitoring findings, most severe first", m.FindingList,
        query=(
            Query("status", {"type": "string", "enum": ["open", "resolved"]}),
            Query("check", {"type": "string", "pattern": "^[a-z_]{1,64}$"}),
            *_PAGING,
        ),
    ),
    Operation(
        "GET", f"{_V1}/report", "report:read", "report", "The compliance report as JSON",
        m.Report,
    ),
)  # fmt: skip

AKCA = (
    Operation(
        "POST", f"{_V1}/akca/challenge", None, "challenge",
        "Seal a credential to a TPM's EK and AK (TPM2_MakeCredential)", m.AkcaChallenge,
        body=m.AkcaChallengeRequest,
    ),
    Operation(
        "POST", f"{_V1}/akca/activate", None, "activate",
        "Prove the released credential and get the AK certificate", m.AkcaCertificate, 201,
        m.AkcaActivateRequest,
    ),
)  # fmt: skip

TABLE = (*CORE, *ENROLLMENT, *SCEP, *ACME, *OPERATIONS, *AKCA)
"""Every route of the admin API."""


def openapi_document() -> dict[str, Any]:
    """The document, built from the route table and its models."""
    return openapi("iotpki admin API", TABLE)
