"""ACME problem documents (RFC 8555 section 6.7, RFC 7807) and the one mapping from iotpki errors.

Every refusal of the ACME adapter is an :class:`AcmeProblem`; errors of the core are turned
into one by :func:`from_error`, so each wire form is decided here and nowhere else.
"""

from __future__ import annotations

from typing import Any

from iotpki.errors import (
    AttestationRejected,
    AuthError,
    BackendError,
    BadSignature,
    Busy,
    ConfigError,
    Conflict,
    IotpkiError,
    KeyRejected,
    MalformedInput,
    NotFound,
    PolicyViolation,
    RequestError,
)

__all__ = ["ERROR_PREFIX", "AcmeProblem", "from_error"]

ERROR_PREFIX = "urn:ietf:params:acme:error:"

# RFC 8555 section 6.7 types and the HTTP status each is answered with.
_STATUS = {
    "accountDoesNotExist": 400,
    "alreadyRevoked": 400,
    "alreadyReplaced": 409,
    "badAttestationStatement": 403,  # draft-ietf-acme-device-attest section 6
    "badCSR": 400,
    "badNonce": 400,
    "badPublicKey": 400,
    "badRevocationReason": 400,
    "badSignatureAlgorithm": 400,
    "caa": 403,
    "compound": 403,
    "connection": 400,
    "dns": 400,
    "externalAccountRequired": 400,
    "incorrectResponse": 403,
    "invalidContact": 400,
    "malformed": 400,
    "orderNotReady": 403,
    "rateLimited": 429,
    "rejectedIdentifier": 400,
    "serverInternal": 500,
    "tls": 400,
    "unauthorized": 403,
    "unsupportedContact": 400,
    "unsupportedIdentifier": 400,
    "userActionRequired": 403,
}


class AcmeProblem(IotpkiError):
    """A refusal in RFC 8555 form: ``type`` is the short name after ``urn:...:error:``."""

    def __init__(
        self,
        kind: str,
        detail: str,
        *,
        status: int | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
        subproblems: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(detail, acme_type=kind)
        self.kind = kind
        self.detail = detail
        self.status = status or _STATUS.get(kind, 400)
        self.code = kind
        self.headers = headers or {}
        self.extra = extra or {}
        self.subproblems = subproblems or []

    def document(self) -> dict[str, Any]:
        """The problem document (``application/problem+json``)."""
        body: dict[str, Any] = {
            "type": ERROR_PREFIX + self.kind,
            "detail": self.detail,
            "status": self.status,
            **self.extra,
        }
        if self.subproblems:
            body["subproblems"] = self.subproblems
        return body


def from_error(exc: IotpkiError, *, during: str = "") -> AcmeProblem:
    """The ACME problem for an error raised by the core (``during`` names a CSR context)."""
    if isinstance(exc, AcmeProblem):
        return exc
    if isinstance(exc, KeyRejected):
        return AcmeProblem("badPublicKey", exc.message)
    if isinstance(exc, AttestationRejected):
        if exc.data.get("check") == "csr_key":
            return AcmeProblem("badCSR", exc.message)
        return AcmeProblem("badAttestationStatement", exc.message)
    if isinstance(exc, BadSignature):
        return AcmeProblem("badCSR" if during == "csr" else "malformed", exc.message)
    if isinstance(exc, PolicyViolation):
        return AcmeProblem("badCSR" if during == "csr" else "rejectedIdentifier", exc.message)
    if isinstance(exc, MalformedInput):
        return AcmeProblem("badCSR" if during == "csr" else "malformed", exc.message)
    if isinstance(exc, AuthError):
        return AcmeProblem("unauthorized", exc.message)
    if isinstance(exc, NotFound):
        return AcmeProblem("malformed", exc.message, status=404)
    if isinstance(exc, Conflict):
        return AcmeProblem("malformed", exc.message, status=409)
    if isinstance(exc, RequestError):
        return AcmeProblem("malformed", exc.message, status=exc.status)
    if isinstance(exc, Busy):  # a rotation campaign's rate: finalize again later
        wait = str(exc.data.get("retry_after", 60))
        return AcmeProblem("rateLimited", exc.message, status=503, headers={"Retry-After": wait})
    if isinstance(exc, ConfigError | BackendError):
        return AcmeProblem("serverInternal", exc.message, status=503)
    return AcmeProblem("serverInternal", "internal error", status=500)
