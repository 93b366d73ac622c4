"""The current-certificate authenticator: renewal with a certificate issued here."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509

from iotpki.core.authenticators import Authenticators, Context, CurrentCertificate
from iotpki.core.models import EnrollMethod, RevocationReason
from iotpki.errors import AuthError, Forbidden
from iotpki.services.installation import Installation

from conftest import ManualClock, device_csr

EST = Context("est", source="192.0.2.9")


@pytest.fixture
def authenticators(inst: Installation) -> Authenticators:
    return Authenticators(inst.authority)


def _issued(inst: Installation) -> x509.Certificate:
    issued = inst.authority.issue(device_csr("dev-5"), profile="device", actor="t")
    return issued.certificate


def test_a_current_certificate_authorizes_its_device(
    authenticators: Authenticators, inst: Installation
) -> None:
    cert = _issued(inst)
    granted = authenticators.authorize(CurrentCertificate(cert), EST)
    assert (granted.device_id, granted.method) == ("dev-5", EnrollMethod.CURRENT)
    assert granted.current is not None and granted.current.serial == format(cert.serial_number, "x")
    assert granted.actor == "est:reenroll:dev-5"


def test_another_ca_in_the_context_does_not_count(
    authenticators: Authenticators, inst: Installation
) -> None:
    cert = _issued(inst)
    with pytest.raises(AuthError, match="not issued by this CA"):
        authenticators.authorize(CurrentCertificate(cert), Context("scep", ca="root"))


def test_a_revoked_certificate_is_refused(
    authenticators: Authenticators, inst: Installation
) -> None:
    cert = _issued(inst)
    serial = format(cert.serial_number, "x")
    inst.authority.revoke(serial, reason=RevocationReason.KEY_COMPROMISE, actor="t")
    with pytest.raises(Forbidden, match="revoked"):
        authenticators.authorize(CurrentCertificate(cert), EST)


def test_an_expired_certificate_is_refused(
    authenticators: Authenticators, inst: Installation, clock: ManualClock
) -> None:
    cert = _issued(inst)
    clock.advance(timedelta(days=400))
    with pytest.raises(AuthError, match="not valid now"):
        authenticators.authorize(CurrentCertificate(cert), EST)


def test_a_certificate_without_a_device_is_refused(
    authenticators: Authenticators, inst: Installation
) -> None:
    csr = device_csr("srv.example", sans=[x509.DNSName("srv.example")])
    cert = inst.authority.issue(csr, profile="server", actor="t").certificate
    with pytest.raises(Forbidden, match="not a device certificate"):
        authenticators.authorize(CurrentCertificate(cert), EST)
