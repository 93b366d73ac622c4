"""The one-time enrollment secret authenticator, through the one entry."""

from __future__ import annotations

from datetime import timedelta

import pytest

from iotpki.core.authenticators import Context, OneTimeSecret
from iotpki.core.enrollment import Enrollment
from iotpki.core.models import EnrollMethod
from iotpki.errors import AuthError, Forbidden
from iotpki.services.installation import Installation

from conftest import ManualClock

EST = Context("est", source="192.0.2.7")


@pytest.fixture
def enrollment(inst: Installation) -> Enrollment:
    return Enrollment(inst.authority)


def _refusals(inst: Installation) -> list[str]:
    return [e.action for e in inst.store.audit_events() if e.action.endswith(".refused")]


def test_the_secret_authorizes_its_device(enrollment: Enrollment) -> None:
    secret, record = enrollment.create_secret("dev-1", actor="test", profile="device")
    granted = enrollment.authenticators.authorize(OneTimeSecret("dev-1", secret), EST)
    assert (granted.device_id, granted.method, granted.profile) == (
        "dev-1",
        EnrollMethod.SECRET,
        "device",
    )
    assert granted.use is not None and granted.use.credential_id == record.secret_id
    assert granted.actor == "est:secret:dev-1"


def test_a_wrong_secret_is_refused_and_audited_once(
    enrollment: Enrollment, inst: Installation
) -> None:
    enrollment.create_secret("dev-2", actor="test")
    with pytest.raises(AuthError, match="wrong or unknown"):
        enrollment.authenticators.authorize(OneTimeSecret("dev-2", "guess"), EST)
    assert _refusals(inst) == ["est.authenticate.refused"]


def test_an_invalid_device_id_is_refused(enrollment: Enrollment) -> None:
    with pytest.raises(AuthError, match="not a valid device ID"):
        enrollment.authenticators.authorize(OneTimeSecret("bad id/", "x"), EST)


def test_an_expired_secret_is_refused(enrollment: Enrollment, clock: ManualClock) -> None:
    secret, _ = enrollment.create_secret("dev-3", actor="test", lifetime=timedelta(hours=1))
    clock.advance(timedelta(hours=2))
    with pytest.raises(AuthError, match="expired"):
        enrollment.authenticators.authorize(OneTimeSecret("dev-3", secret), EST)


def test_a_disabled_device_is_refused(enrollment: Enrollment) -> None:
    secret, _ = enrollment.create_secret("dev-4", actor="test")
    enrollment.set_device_status("dev-4", "disabled", actor="test")
    with pytest.raises(Forbidden, match="disabled"):
        enrollment.authenticators.authorize(OneTimeSecret("dev-4", secret), EST)
