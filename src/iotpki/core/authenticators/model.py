"""What goes into an authenticator and what comes out (step-ca's provisioner contract).

Credentials are what a request presents; the :class:`Context` is where it came from and what it
addresses; an :class:`Authorization` names the device, the profile and CA the credential allows
and the one-time credential to consume when (and only if) a certificate is recorded. A refusal
is an :class:`iotpki.errors.IotpkiError` carrying its reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from cryptography import x509

from iotpki.core.models import CertificateRecord, EnrollMethod
from iotpki.errors import AuthError

__all__ = [
    "Authenticator",
    "Authorization",
    "BootstrapCertificate",
    "ClaimCertificate",
    "Context",
    "CredentialUse",
    "Credentials",
    "CurrentCertificate",
    "MacProof",
    "OneTimeSecret",
    "ScepChallenge",
]


@dataclass(frozen=True, slots=True)
class OneTimeSecret:
    """A device's one-time enrollment secret (EST HTTP Basic; a CMP MAC key)."""

    device_id: str
    secret: str


@dataclass(frozen=True, slots=True)
class MacProof:
    """A message MAC-protected with a device's one-time enrollment secret (CMP, RFC 9481):
    ``verify`` says whether a candidate secret makes the message's MAC."""

    device_id: str
    verify: Callable[[bytes], bool]


@dataclass(frozen=True, slots=True)
class BootstrapCertificate:
    """An IDevID (IEEE 802.1AR) from a registered bootstrap CA (TLS client cert, CMP signer)."""

    certificate: x509.Certificate


@dataclass(frozen=True, slots=True)
class ClaimCertificate:
    """A production batch's claim certificate and the device ID the request asks for."""

    certificate: x509.Certificate
    device_id: str


@dataclass(frozen=True, slots=True)
class CurrentCertificate:
    """A device's current certificate from this installation, for renewal or rekey."""

    certificate: x509.Certificate


@dataclass(frozen=True, slots=True)
class ScepChallenge:
    """A SCEP challengePassword (RFC 8894 section 2.2), or None when the CSR carries none."""

    password: str | None


Credentials = (
    OneTimeSecret
    | MacProof
    | BootstrapCertificate
    | ClaimCertificate
    | CurrentCertificate
    | ScepChallenge
)
"""Every credential an enrollment request can present."""


@dataclass(frozen=True, slots=True)
class Context:
    """Where a request came from and what it addresses."""

    protocol: str  # the adapter: "est", "scep", "acme"; the prefix of its audit actions
    source: str = "unknown"  # the client's address: refusals fold per source
    ca: str | None = None  # the CA the request is addressed to, when the protocol says
    transaction_id: str | None = None  # the protocol's transaction, when it has one


@dataclass(frozen=True, slots=True)
class CredentialUse:
    """A one-time credential to consume in the transaction that records the certificate."""

    method: EnrollMethod
    credential_id: str
    device_id: str
    transaction_id: str | None = None


@dataclass(frozen=True, slots=True)
class Authorization:
    """An authenticated device (None for an ACME order of DNS or IP names) and what its
    credential allows."""

    device_id: str | None
    method: EnrollMethod
    protocol: str
    profile: str | None = None  # the profile the credential is bound to, if any
    ca: str | None = None  # the CA the credential is bound to, if any
    approval: bool = False  # an operator approves before issuance
    use: CredentialUse | None = None
    bootstrap_ca: str | None = None
    current: CertificateRecord | None = None  # the certificate a renewal replaces
    mac_key: bytes | None = None  # the secret a MAC-protected protocol protects replies with

    @property
    def device(self) -> str:
        """The device id, for a method that always names a device (EST, SCEP)."""
        if self.device_id is None:
            raise AuthError(f"a {self.method} authorization names no device")
        return self.device_id

    @property
    def actor(self) -> str:
        """The audit actor for this device's requests."""
        return f"{self.protocol}:{self.method}:{self.device_id}"


C_contra = TypeVar("C_contra", contravariant=True)


class Authenticator(Protocol[C_contra]):
    """One way to authenticate an enrolling device."""

    method: EnrollMethod

    def claimed(self, credentials: C_contra) -> str:
        """Who the credentials claim to be, for the audit of a refusal."""
        ...

    def authorize(self, credentials: C_contra, context: Context) -> Authorization:
        """The authorization the credentials carry, or a refusal (an ``IotpkiError``)."""
        ...
