"""The ACME account authenticator: the profile of a new order, and an account finalizing an
order its authorizations cover."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from iotpki.core.acme_ports import AcmeAccount, Identifier
from iotpki.core.authenticators import AcmeAccountAuthenticator, AcmeAccountOrder, Context
from iotpki.core.models import EnrollMethod
from iotpki.errors import AttestationRejected, AuthError, Forbidden, PolicyViolation

from conftest import device_csr

ACME = Context("acme", source="192.0.2.11")
WEB: tuple[Identifier, ...] = (("dns", "a.example"), ("dns", "b.example"))
DEVICE: tuple[Identifier, ...] = (("permanent-identifier", "dev-9"),)


def _order(
    identifiers: tuple[Identifier, ...] = WEB,
    requested: set[Identifier] | None = None,
    **changes: object,
) -> AcmeAccountOrder:
    names = set(identifiers) if requested is None else requested
    order = AcmeAccountOrder(
        account_id="acct-1",
        account_status="valid",
        profile="tls-server",
        identifiers=identifiers,
        authorized=frozenset(identifiers),
        requested=frozenset(names),
        csr=device_csr("dev-9"),
    )
    return replace(order, **changes)  # type: ignore[arg-type]


def test_a_name_order_is_authorized_without_a_device() -> None:
    granted = AcmeAccountAuthenticator().authorize(_order(), ACME)
    assert (granted.device_id, granted.method, granted.profile, granted.protocol) == (
        None,
        EnrollMethod.ACME,
        "tls-server",
        "acme",
    )
    with pytest.raises(AuthError, match="names no device"):
        _ = granted.device


def test_a_device_order_names_its_device() -> None:
    order = _order(DEVICE, {("cn", "dev-9")}, profile="device")
    granted = AcmeAccountAuthenticator().authorize(order, ACME)
    assert (granted.device_id, granted.device, granted.profile) == ("dev-9", "dev-9", "device")


def test_the_attested_key_must_be_the_csrs() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = device_csr("dev-9", key=key)
    order = _order(DEVICE, {("cn", "dev-9")}, csr=csr, attested_key=key.public_key())
    assert AcmeAccountAuthenticator().authorize(order, ACME).device_id == "dev-9"
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(AttestationRejected, match="not the key the TPM attested") as refused:
        AcmeAccountAuthenticator().authorize(replace(order, attested_key=other), ACME)
    assert refused.value.data["check"] == "csr_key"


def test_a_deactivated_account_is_refused() -> None:
    with pytest.raises(AuthError, match="the account is deactivated"):
        AcmeAccountAuthenticator().authorize(_order(account_status="deactivated"), ACME)


def test_an_identifier_without_a_valid_authorization_is_refused() -> None:
    order = _order(authorized=frozenset({("dns", "a.example")}))
    with pytest.raises(Forbidden, match=r"no valid authorization for dns:b\.example"):
        AcmeAccountAuthenticator().authorize(order, ACME)


def test_a_device_csr_naming_anything_else_is_refused() -> None:
    order = _order(DEVICE, {("cn", "dev-9"), ("dns", "a.example")})
    with pytest.raises(PolicyViolation, match="must name only device dev-9"):
        AcmeAccountAuthenticator().authorize(order, ACME)


def test_a_csr_whose_names_differ_from_the_order_is_refused() -> None:
    order = _order(requested={("dns", "a.example"), ("dns", "c.example")})
    with pytest.raises(PolicyViolation) as refused:
        AcmeAccountAuthenticator().authorize(order, ACME)
    assert refused.value.message == (
        "the CSR's names differ from the order's identifiers"
        "; not in the order: dns:c.example; missing: dns:b.example"
    )


def test_a_common_name_outside_the_order_is_refused() -> None:
    order = _order(requested={*WEB, ("cn", "c.example")})
    with pytest.raises(PolicyViolation, match="commonName is not one of the order's"):
        AcmeAccountAuthenticator().authorize(order, ACME)


def _account(patterns: tuple[str, ...] = ()) -> AcmeAccount:
    return AcmeAccount(
        account_id="acct-1",
        thumbprint="t",
        jwk="{}",
        status="valid",
        contacts=(),
        terms_agreed=True,
        eab_key_id="kid-1",
        tenant=None,
        profile="tls-server",
        device_profile="device",
        device_patterns=patterns,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


def test_the_binding_gives_names_its_profile_and_devices_theirs() -> None:
    order_profile = AcmeAccountAuthenticator().order_profile
    assert order_profile(_account(), WEB, attestable=False) == "tls-server"
    assert order_profile(_account(("dev-*",)), DEVICE, attestable=False) == "device"
    assert order_profile(_account(), DEVICE, attestable=True) == "device"


@pytest.mark.parametrize(
    ("patterns", "attestable"), [((), False), (("sensor-*",), False), (("sensor-*",), True)]
)
def test_a_device_outside_the_binding_is_refused(
    patterns: tuple[str, ...], attestable: bool
) -> None:
    with pytest.raises(PolicyViolation, match="does not cover device dev-9"):
        AcmeAccountAuthenticator().order_profile(_account(patterns), DEVICE, attestable)
