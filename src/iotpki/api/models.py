"""The admin API's request and response bodies as pydantic models.

Request models validate what :func:`iotpki.api.jsonbody.load_object` loaded (see
:func:`iotpki.api.schema.validate`); response models describe what the handlers answer. Both
feed the OpenAPI document (:mod:`iotpki.api.openapi`), so the document and the validation
cannot drift apart.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StringConstraints

from iotpki.core.models import (
    ApprovalStatus,
    BootstrapCAStatus,
    CAKind,
    CAStatus,
    DeviceStatus,
    EnrollPolicy,
    RevocationReason,
    Role,
    ScepTransactionStatus,
)

__all__ = [
    "CA",
    "AdvanceRenewalRequest",
    "AkcaActivateRequest",
    "AkcaCertificate",
    "AkcaChallenge",
    "AkcaChallengeRequest",
    "AuditReport",
    "BootstrapCA",
    "BootstrapCAList",
    "BootstrapCARequest",
    "CAList",
    "Certificate",
    "CertificateList",
    "DecisionRequest",
    "Device",
    "DeviceRequest",
    "DeviceStatusRequest",
    "EabCredential",
    "EabCredentialList",
    "EabRequest",
    "EabRevoked",
    "EnrollmentRequest",
    "EnrollmentRequestList",
    "EnrollmentSecret",
    "Error",
    "Finding",
    "FindingList",
    "IssueRequest",
    "NewToken",
    "RenewRequest",
    "RenewalOverride",
    "Report",
    "RevokeRequest",
    "ScepChallenge",
    "ScepChallengeRequest",
    "ScepTransaction",
    "ScepTransactionList",
    "SecretRequest",
    "Token",
    "TokenList",
    "TokenRequest",
    "UsageAccepted",
    "UsageBatch",
]

Text = Annotated[str, StringConstraints(strict=True, max_length=16384)]
"""A request string: a JSON string only, never a number turned into one."""
Short = Annotated[str, StringConstraints(strict=True, max_length=512)]
Duration = Annotated[
    str, StringConstraints(strict=True, max_length=64), Field(examples=["30d", "24h"])
]
Time = Annotated[
    str,
    StringConstraints(strict=True, max_length=64),
    Field(json_schema_extra={"format": "date-time"}),
]
"""An ISO 8601 time with its zone; parsed by the handler, which says what is wrong with it."""
Base64 = Annotated[
    str,
    StringConstraints(strict=True, min_length=1, max_length=8192),
    Field(json_schema_extra={"contentEncoding": "base64"}),
]
Serial = Annotated[
    str,
    StringConstraints(pattern=r"^[0-9a-fA-F]{1,64}$"),
    Field(description="the certificate's serial number in hex"),
]


class _Request(BaseModel):
    """A JSON object body: unknown members ignored, the known ones typed."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class _Response(BaseModel):
    """An answer body, described for the document."""


# -- requests --------------------------------------------------------------------------------


class IssueRequest(_Request):
    """POST /certificates."""

    csr: Text = Field(description="PEM PKCS#10")
    profile: Text | None = None
    ca: Text | None = None
    device_id: Text | None = None
    lifetime: Duration | None = None


class RevokeRequest(_Request):
    """POST /certificates/{serial}/revoke."""

    reason: RevocationReason | None = None
    ca: Text | None = None
    invalidity_date: Time | None = None


class RenewRequest(_Request):
    """POST /certificates/{serial}/renew; a CSR rekeys."""

    csr: Text | None = None
    ca: Text | None = None
    lifetime: Duration | None = None


class TokenRequest(_Request):
    """POST /tokens."""

    role: Role
    description: Text | None = None


class DeviceRequest(_Request):
    """POST /devices."""

    device_id: Text
    bootstrap_ca: Text | None = None
    idevid: Text | None = None


class DeviceStatusRequest(_Request):
    """POST /devices/{device_id}/status."""

    status: DeviceStatus


class SecretRequest(_Request):
    """POST /devices/{device_id}/enrollment-secrets."""

    lifetime: Duration | None = None
    profile: Text | None = None
    approval: StrictBool = False


class BootstrapCARequest(_Request):
    """POST /bootstrap-cas."""

    name: Text
    certificate: Text = Field(description="PEM")
    policy: EnrollPolicy | None = None
    profile: Text | None = None
    approval: StrictBool = False


class DecisionRequest(_Request):
    """The optional body of an approval or a rejection: nothing in it yet."""


class ScepChallengeRequest(_Request):
    """POST /scep/challenges."""

    device_id: Text
    profile: Text | None = None
    ca: Text | None = None
    expires: Duration | None = None
    approval: StrictBool = False


class EabRequest(_Request):
    """POST /acme/eab."""

    tenant: Short | None = None
    profile: Short | None = None
    device_profile: Short | None = None
    device_patterns: list[Short] = Field(default_factory=list, max_length=64)
    description: Short | None = None
    lifetime: Duration | None = None


class AdvanceRenewalRequest(_Request):
    """POST /acme/renewal-info/advance."""

    serial: Short | None = None
    ca: Short | None = None
    profile: Short | None = None
    issued_before: Time | None = None
    within: Duration | None = None
    explanation_url: Annotated[Short, Field(json_schema_extra={"format": "uri"})] | None = None


class UsageEvent(_Request):
    """One connection report of a batch."""

    serial: Serial
    time: datetime
    kind: Literal["connect", "disconnect", "publish", "tls"] | None = None
    client_id: Annotated[str, StringConstraints(max_length=256)] | None = None
    source: Annotated[str, StringConstraints(max_length=128), Field(description="peer address")] = (
        ""
    )


class UsageBatch(_Request):
    """POST /usage/events: a batch accepted once (its nonce), while fresh (its send time)."""

    nonce: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{16,64}$")]
    sent_at: datetime
    events: list[UsageEvent] = Field(min_length=1, max_length=1000)


class AkcaChallengeRequest(_Request):
    """POST /akca/challenge: the EK certificate chain and the AK's TPMT_PUBLIC."""

    ek_chain: list[Base64] = Field(min_length=1, max_length=4)
    ak_public: Base64 = Field(description="TPMT_PUBLIC of the attestation key")


class AkcaActivateRequest(AkcaChallengeRequest):
    """POST /akca/activate: the challenge's fields and the released credential."""

    nonce: Base64
    issued_at: Time
    credential: Base64


# -- responses -------------------------------------------------------------------------------


class Error(_Response):
    """The API's error form; members beyond these carry the error's data."""

    error: str
    message: str


class Certificate(_Response):
    """A certificate record; PEM ``certificate`` and ``chain`` where the call returns them."""

    serial: str
    ca: str
    profile: str
    device_id: str | None
    subject: str
    sans: list[str]
    not_before: datetime
    not_after: datetime
    status: Literal["valid", "revoked", "expired"]
    revoked_at: datetime | None
    revocation_reason: RevocationReason | None
    key_algorithm: str
    key_fingerprint: str
    lint_status: str | None
    attested: bool
    certificate: str | None = None
    chain: str | None = None


class CertificateList(_Response):
    """One page of certificates."""

    items: list[Certificate]


class CA(_Response):
    """A CA; its certificate's fields once it has one."""

    name: str
    kind: CAKind
    status: CAStatus
    parent: str | None
    key_backend: str
    has_key: bool
    subject: str | None = None
    not_before: datetime | None = None
    not_after: datetime | None = None
    seconds_until_expiry: int | None = None
    certificate: str | None = None


class CAList(_Response):
    """Every CA."""

    items: list[CA]


class Token(_Response):
    """An API token, never its secret."""

    token_id: str
    description: str
    role: Role
    created_at: datetime
    expires_at: datetime | None
    revoked: bool


class TokenList(_Response):
    """Every API token."""

    items: list[Token]


class NewToken(_Response):
    """A new API token: its secret is shown this once."""

    token: str
    token_id: str
    role: Role


class AuditReport(_Response):
    """The result of walking the audit hash chain."""

    ok: bool
    events: int
    first_bad_seq: int | None
    problem: str | None


class Device(_Response):
    """A registered device."""

    device_id: str
    status: DeviceStatus


class EnrollmentSecret(_Response):
    """A one-time enrollment secret, shown this once."""

    device_id: str
    secret_id: str
    secret: str
    expires_at: datetime


class BootstrapCA(_Response):
    """A trusted manufacturer (IDevID) CA."""

    name: str
    subject: str
    fingerprint: str
    policy: EnrollPolicy
    profile: str | None
    approval: bool
    status: BootstrapCAStatus
    not_after: datetime
    certificate: str


class BootstrapCAList(_Response):
    """Every bootstrap CA."""

    items: list[BootstrapCA]


class EnrollmentRequest(_Response):
    """An enrollment waiting for (or past) approval."""

    id: str
    device_id: str
    method: str
    profile: str
    ca: str | None
    status: ApprovalStatus
    created_at: datetime
    decided_at: datetime | None
    decided_by: str | None
    serial: str | None


class EnrollmentRequestList(_Response):
    """Enrollment requests."""

    items: list[EnrollmentRequest]


class ScepChallenge(_Response):
    """A one-time SCEP challenge password, shown this once."""

    challenge_id: str
    challenge_password: str
    device_id: str
    profile: str
    ca: str | None
    approval: bool
    expires_at: datetime


class ScepTransaction(_Response):
    """A SCEP transaction (RFC 8894 transactionID per CA)."""

    ca: str
    transaction_id: str
    kind: str
    status: ScepTransactionStatus
    device_id: str | None
    profile: str
    key_fingerprint: str
    created_at: datetime
    updated_at: datetime
    serial: str | None
    fail_info: str | None
    renewed_from: str | None
    decided_by: str | None


class ScepTransactionList(_Response):
    """SCEP transactions, newest first."""

    items: list[ScepTransaction]


class EabCredential(_Response):
    """An ACME external account binding credential; its HMAC key only when created."""

    key_id: str
    tenant: str
    profile: str
    device_profile: str
    device_patterns: list[str]
    description: str
    created_at: datetime
    expires_at: datetime | None
    used_at: datetime | None
    used_by: str | None
    revoked: bool
    hmac_key: str | None = Field(None, description="base64url; only when created")


class EabCredentialList(_Response):
    """Every EAB credential, without keys."""

    items: list[EabCredential]


class EabRevoked(_Response):
    """A withdrawn EAB credential."""

    key_id: str
    revoked: bool


class RenewalOverride(_Response):
    """Renewal windows pulled forward (RFC 9773)."""

    id: str
    window_start: datetime
    window_end: datetime
    serial: str | None
    ca: str | None
    profile: str | None
    issued_before: datetime | None
    explanation_url: str | None


class UsageAccepted(_Response):
    """How many usage events a batch brought."""

    accepted: int = Field(ge=1)


class Finding(_Response):
    """A monitoring finding."""

    id: int
    check: str
    severity: Literal["low", "medium", "high", "critical"]
    status: Literal["open", "resolved"]
    summary: str
    ca: str | None
    serial: str | None
    device_id: str | None
    evidence: dict[str, Any]
    first_seen: datetime
    last_seen: datetime
    resolved_at: datetime | None


class FindingList(_Response):
    """Findings, most severe first."""

    items: list[Finding]


class Report(_Response):
    """The compliance report."""

    generated_at: datetime
    inventory: dict[str, Any]
    audit_chain: dict[str, Any]
    key_algorithms: dict[str, Any] | None = None
    lifetimes_days: dict[str, Any] | None = None
    cas: list[Any] | None = None
    lint: dict[str, Any] | None = None
    findings: dict[str, Any] | None = None


class AkcaChallenge(_Response):
    """The inputs of TPM2_ActivateCredential (base64)."""

    nonce: str
    issued_at: datetime
    credential_blob: str
    encrypted_secret: str


class AkcaCertificate(_Response):
    """The AK certificate, its chain (PEM) and the device's permanent identifier."""

    serial: str
    permanent_identifier: str | None = None
    certificate: str
    chain: str
