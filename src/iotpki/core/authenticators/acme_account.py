"""An ACME account finalizing its order (RFC 8555 section 7.4).

The account (its status and the policy its external account binding gave it), the order's
identifiers and those of its valid authorizations, and the names the CSR asks for go in; the
device the identifiers name (draft-ietf-acme-device-attest: ``permanent-identifier``,
``hardware-module``), or none for DNS and IP names, and the order's profile come out. The ACME
adapter turns a refusal into its problem document and audits it in its one error mapper.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from iotpki.core.acme_ports import Identifier
from iotpki.core.attestation import check_csr_key
from iotpki.core.authenticators.model import Authorization, Context
from iotpki.core.models import EnrollMethod
from iotpki.errors import AuthError, Forbidden, PolicyViolation

__all__ = ["DEVICE_IDENTIFIERS", "AcmeAccountAuthenticator", "AcmeAccountOrder"]

DEVICE_IDENTIFIERS = frozenset({"permanent-identifier", "hardware-module"})
"""Identifier types that name a device (draft-ietf-acme-device-attest section 3)."""


@dataclass(frozen=True, slots=True)
class AcmeAccountOrder:
    """An ACME account's order and the CSR that finalizes it."""

    account_id: str
    account_status: str
    profile: str  # the order's profile, from the account's EAB binding at newOrder
    identifiers: tuple[Identifier, ...]  # the order's
    authorized: frozenset[Identifier]  # the identifiers of the order's valid authorizations
    requested: frozenset[Identifier]  # the CSR's names: ("cn", ...) and its SANs
    csr: x509.CertificateSigningRequest
    attested_key: CertificatePublicKeyTypes | None = None  # device-attest-01's proven key


class AcmeAccountAuthenticator:
    """A valid account whose authorizations cover the order the CSR asks for exactly."""

    method = EnrollMethod.ACME

    def claimed(self, credentials: AcmeAccountOrder) -> str:
        """The account's id."""
        return credentials.account_id

    def authorize(self, credentials: AcmeAccountOrder, context: Context) -> Authorization:
        """The device the order names (None for DNS/IP names), with the order's profile."""
        if credentials.account_status != "valid":
            raise AuthError(f"the account is {credentials.account_status}")
        unauthorized = set(credentials.identifiers) - credentials.authorized
        if unauthorized:
            names = ", ".join(sorted(f"{t}:{v}" for t, v in unauthorized))
            raise Forbidden(f"the account holds no valid authorization for {names}")
        device = _device(credentials.identifiers, credentials.requested)
        if credentials.attested_key is not None:
            check_csr_key(credentials.attested_key, credentials.csr)
        return Authorization(
            device_id=device,
            method=self.method,
            protocol=context.protocol,
            profile=credentials.profile,
            ca=context.ca,
        )


def _device(wanted: tuple[Identifier, ...], names: frozenset[Identifier]) -> str | None:
    """Section 7.4: the CSR asks for exactly the order's identifiers; returns a device id."""
    common_names = {v for t, v in names if t == "cn"}
    requested = {n for n in names if n[0] != "cn"}
    devices = [v for t, v in wanted if t in DEVICE_IDENTIFIERS]
    if devices:
        device = devices[0]
        if requested or common_names - {device}:
            raise PolicyViolation(f"the CSR must name only device {device}")
        return device
    ordered = set(wanted)
    if requested != ordered:
        extra = sorted(f"{t}:{v}" for t, v in requested - ordered)
        missing = sorted(f"{t}:{v}" for t, v in ordered - requested)
        raise PolicyViolation(
            "the CSR's names differ from the order's identifiers"
            + (f"; not in the order: {', '.join(extra)}" if extra else "")
            + (f"; missing: {', '.join(missing)}" if missing else "")
        )
    if common_names - {v for _, v in ordered}:
        raise PolicyViolation("the CSR's commonName is not one of the order's identifiers")
    return None
