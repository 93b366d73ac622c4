"""The SCEP challenge-password authenticator."""

from __future__ import annotations

from datetime import timedelta

import pytest

from iotpki.core.authenticators import Authenticators, Context, ScepChallenge
from iotpki.core.models import EnrollMethod
from iotpki.core.scep import ScepService
from iotpki.errors import AuthError
from iotpki.services.installation import Installation

from conftest import ManualClock

SCEP = Context("scep", source="192.0.2.10", ca="issuing", transaction_id="t-1")


@pytest.fixture
def service(inst: Installation) -> ScepService:
    return ScepService(inst.authority, inst.keys)


@pytest.fixture
def authenticators(inst: Installation) -> Authenticators:
    return Authenticators(inst.authority)


def test_the_challenge_authorizes_its_device(
    service: ScepService, authenticators: Authenticators
) -> None:
    password, record = service.create_challenge("dev-6", actor="t", approval=True)
    granted = authenticators.authorize(ScepChallenge(password), SCEP)
    assert (granted.device_id, granted.method, granted.ca) == (
        "dev-6",
        EnrollMethod.CHALLENGE,
        "issuing",
    )
    assert granted.approval and granted.use is not None
    assert (granted.use.credential_id, granted.use.transaction_id) == (record.challenge_id, "t-1")


@pytest.mark.parametrize(("password", "reason"), [(None, "no challenge"), ("nope", "wrong")])
def test_a_missing_or_wrong_challenge_is_refused(
    authenticators: Authenticators, inst: Installation, password: str | None, reason: str
) -> None:
    with pytest.raises(AuthError, match=reason):
        authenticators.authorize(ScepChallenge(password), SCEP)
    refused = [e for e in inst.store.audit_events() if e.action == "scep.authenticate.refused"]
    assert len(refused) == 1


def test_an_expired_challenge_is_refused(
    service: ScepService, authenticators: Authenticators, clock: ManualClock
) -> None:
    password, _ = service.create_challenge("dev-7", actor="t", lifetime=timedelta(hours=1))
    clock.advance(timedelta(hours=2))
    with pytest.raises(AuthError, match="expired"):
        authenticators.authorize(ScepChallenge(password), SCEP)


def test_a_challenge_for_another_ca_is_refused(
    service: ScepService, authenticators: Authenticators
) -> None:
    password, _ = service.create_challenge("dev-8", actor="t", ca="issuing")
    with pytest.raises(AuthError, match="for CA 'issuing'"):
        authenticators.authorize(ScepChallenge(password), Context("scep", ca="other"))
