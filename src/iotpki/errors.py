"""The one exception tree of iotpki.

Every error the package raises on purpose derives from :class:`IotpkiError` and carries the data
an adapter needs to turn it into its wire form (HTTP status, ACME problem, SCEP failInfo, OCSP
status) in one place::

    IotpkiError
     +-- ConfigError              settings or installation state are unusable (503)
     +-- RequestError             the caller asked for something invalid (400)
     |    +-- MalformedInput      bytes that do not parse (PEM, DER, base64, JSON)
     |    |    +-- BadCSR         a PKCS#10 request with a field that does not parse
     |    +-- BadSignature        a CSR or message whose signature does not verify
     |    +-- PolicyViolation     well-formed but refused by a profile's policy
     |         +-- KeyRejected    key type, size, curve, reuse or compromise
     |         +-- AttestationRejected  a TPM key attestation that does not verify
     +-- AuthError                authentication failed (401)
     |    +-- Forbidden           authenticated, but the role does not allow it (403)
     |    +-- RateLimited         too many failed attempts; retry after a while (429)
     |    +-- PeerRefused         a TLS peer or signed message refused (``reason`` says why)
     +-- NotFound                 no such CA, certificate, profile or device (404)
     +-- Conflict                 the state does not allow it, e.g. already revoked (409)
     +-- BackendError             a key backend or the store failed (503)
     |    +-- KeyMissing          a CA key is not in its backend
     +-- AuditChainBroken         the audit log's hash chain does not verify
"""

from __future__ import annotations

__all__ = [
    "AttestationRejected",
    "AuditChainBroken",
    "AuthError",
    "BackendError",
    "BadCSR",
    "BadSignature",
    "ConfigError",
    "Conflict",
    "Forbidden",
    "IotpkiError",
    "KeyMissing",
    "KeyRejected",
    "MalformedInput",
    "NotFound",
    "PeerRefused",
    "PolicyViolation",
    "RateLimited",
    "RequestError",
]


class IotpkiError(Exception):
    """Root of every error iotpki raises on purpose."""

    status = 500
    code = "internal"

    def __init__(self, message: str, **data: object) -> None:
        super().__init__(message)
        self.message = message
        self.data = data
        self.audited = False  # set once an audit event records this error

    def as_dict(self) -> dict[str, object]:
        """The error as a JSON-ready mapping (code, message and its data)."""
        return {"error": self.code, "message": self.message, **self.data}


class ConfigError(IotpkiError):
    """Settings or the installation's state are unusable."""

    status = 503
    code = "config"


class RequestError(IotpkiError):
    """The caller asked for something invalid."""

    status = 400
    code = "bad_request"


class MalformedInput(RequestError):
    """Input that does not parse: PEM, DER, base64, JSON."""

    code = "malformed"


class BadCSR(MalformedInput):
    """A PKCS#10 request that does not parse completely; ``reason`` names the field."""

    def __init__(self, message: str, *, reason: str, **data: object) -> None:
        super().__init__(message, reason=reason, **data)
        self.reason = reason


class BadSignature(RequestError):
    """A signature over a request does not verify."""

    code = "bad_signature"


class PolicyViolation(RequestError):
    """A well-formed request that a profile's policy refuses."""

    code = "policy"


class KeyRejected(PolicyViolation):
    """A public key refused for its type, size, curve, reuse or compromise."""

    code = "bad_key"


class AttestationRejected(PolicyViolation):
    """A key attestation that does not verify; ``check`` names the failed step."""

    code = "bad_attestation"


class AuthError(IotpkiError):
    """Authentication failed or is missing."""

    status = 401
    code = "unauthorized"


class Forbidden(AuthError):
    """Authenticated, but not allowed to do this."""

    status = 403
    code = "forbidden"


class RateLimited(AuthError):
    """Too many failed attempts: refused until ``retry_after`` seconds have passed."""

    status = 429
    code = "rate_limited"


class Busy(IotpkiError):
    """The work is arriving faster than it may be done (a campaign's rate): retry after
    ``retry_after`` seconds (EST and ACME 503 with Retry-After, CMP systemUnavail)."""

    status = 503
    code = "busy"


class PeerRefused(AuthError):
    """A TLS peer or a signed message is refused; ``reason`` names what failed."""

    code = "peer_refused"

    def __init__(self, message: str, *, reason: str, **data: object) -> None:
        super().__init__(message, reason=reason, **data)
        self.reason = reason


class NotFound(IotpkiError):
    """No such CA, certificate, profile, device or token."""

    status = 404
    code = "not_found"


class Conflict(IotpkiError):
    """The current state does not allow the operation."""

    status = 409
    code = "conflict"


class BackendError(IotpkiError):
    """A key backend or the store failed."""

    status = 503
    code = "backend"


class KeyMissing(BackendError):
    """A key reference that its backend does not hold."""

    code = "key_missing"


class AuditChainBroken(IotpkiError):
    """The audit log's hash chain does not verify at entry ``seq``."""

    code = "audit_chain_broken"
