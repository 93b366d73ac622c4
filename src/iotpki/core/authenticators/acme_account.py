"""An ACME account ordering (RFC 8555 section 7.4) and finalizing its order.

At newOrder the account's external account binding picks the profile and may refuse a device.
At finalize the account's status, the order's identifiers and those of its valid
authorizations, and the names the CSR asks for go in; the device the identifiers name
(draft-ietf-acme-device-attest: ``permanent-identifier``, ``hardware-module``), or none for DNS
and IP names, and the order's profile come out. The ACME adapter turns a refusal into its
problem document and audits it in its one error mapper.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from iotpki.core.acme_ports import AcmeAccount, Identifier
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

    def order_profile(
        self, account: AcmeAccount, identifiers: Sequence[Identifier], attestable: bool
    ) -> str:
        """newOrder: the profile the account's EAB binding gives these identifiers, refused when
        its device policy does not cover the device they name (``attestable``: device-attest-01
        will prove the device, enough when the binding sets no device policy)."""
        device = next((v for t, v in identifiers if t in DEVICE_IDENTIFIERS), None)
        if device is None:
            return account.profile
        patterns = account.device_patterns
        if not any(fnmatch.fnmatchcase(device, p) for p in patterns) and (
            patterns or not attestable
        ):
            raise PolicyViolation(
                f"the account's external account binding does not cover device {device}"
            )
        return account.device_profile

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
