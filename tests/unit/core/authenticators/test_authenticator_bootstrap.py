"""The IDevID authenticator: bootstrap CAs, their policies and bindings."""

from __future__ import annotations

import pytest

from estkit import Manufacturer
from iotpki.core.authenticators import BootstrapCertificate, Context
from iotpki.core.enrollment import Enrollment
from iotpki.core.models import EnrollMethod
from iotpki.errors import AuthError, Forbidden
from iotpki.services.installation import Installation

from conftest import ManualClock

EST = Context("est", source="192.0.2.8")


@pytest.fixture
def enrollment(inst: Installation) -> Enrollment:
    return Enrollment(inst.authority)


@pytest.fixture
def maker(clock: ManualClock) -> Manufacturer:
    return Manufacturer.create(now=clock.now())


def test_any_device_of_the_bootstrap_ca(enrollment: Enrollment, maker: Manufacturer) -> None:
    enrollment.add_bootstrap_ca("m", maker.cert, enroll_policy="any", actor="t", approval=True)
    _key, idevid = maker.idevid("SN-1")
    granted = enrollment.authenticators.authorize(BootstrapCertificate(idevid), EST)
    assert (granted.device_id, granted.method) == ("SN-1", EnrollMethod.IDEVID)
    assert granted.bootstrap_ca == "m" and granted.approval and granted.use is None


def test_a_registered_binding_names_the_device(enrollment: Enrollment, maker: Manufacturer) -> None:
    enrollment.add_bootstrap_ca("m", maker.cert, enroll_policy="registered", actor="t")
    _key, idevid = maker.idevid("SN-2")
    with pytest.raises(Forbidden, match="not registered"):
        enrollment.authenticators.authorize(BootstrapCertificate(idevid), EST)
    enrollment.register_device("pump-2", bootstrap_ca="m", idevid="SN-2", actor="t")
    granted = enrollment.authenticators.authorize(BootstrapCertificate(idevid), EST)
    assert granted.device_id == "pump-2"


def test_an_untrusted_manufacturer_is_refused(enrollment: Enrollment, clock: ManualClock) -> None:
    _key, idevid = Manufacturer.create("Other", now=clock.now()).idevid("SN-3")
    with pytest.raises(AuthError, match="not from a trusted bootstrap CA"):
        enrollment.authenticators.authorize(BootstrapCertificate(idevid), EST)


def test_a_revoked_bootstrap_ca_is_refused(enrollment: Enrollment, maker: Manufacturer) -> None:
    enrollment.add_bootstrap_ca("m", maker.cert, enroll_policy="any", actor="t")
    enrollment.revoke_bootstrap_ca("m", actor="t")
    _key, idevid = maker.idevid("SN-4")
    with pytest.raises(Forbidden, match="revoked"):
        enrollment.authenticators.authorize(BootstrapCertificate(idevid), EST)
