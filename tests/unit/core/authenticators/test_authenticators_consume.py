"""One-time credentials are consumed in the transaction that records the certificate."""

from __future__ import annotations

import pytest

from iotpki.core.authenticators import Authenticators, Context, OneTimeSecret, ScepChallenge
from iotpki.core.enrollment import Enrollment
from iotpki.core.models import CertificateRecord
from iotpki.core.ports import StoreTransaction
from iotpki.core.scep import ScepService
from iotpki.errors import AuthError, BackendError
from iotpki.services.installation import Installation

from conftest import device_csr

EST = Context("est", source="192.0.2.11")


def _certificates(inst: Installation) -> int:
    return sum(1 for e in inst.store.audit_events() if e.action == "certificate.issued")


def _crash(tx: StoreTransaction, record: CertificateRecord) -> None:
    raise BackendError("the process died before commit")


def test_a_crash_after_consuming_leaves_neither(inst: Installation) -> None:
    enrollment = Enrollment(inst.authority)
    secret, _ = enrollment.create_secret("dev-9", actor="t")
    granted = enrollment.authenticators.authorize(OneTimeSecret("dev-9", secret), EST)
    before = _certificates(inst)
    with pytest.raises(BackendError):
        inst.authority.issue(
            device_csr("dev-9"),
            profile="device",
            device_id="dev-9",
            actor=granted.actor,
            within=enrollment.authenticators.within(granted, _crash),
        )
    assert _certificates(inst) == before
    again = enrollment.authenticators.authorize(OneTimeSecret("dev-9", secret), EST)
    assert again.use == granted.use  # the secret is still unused


def test_a_policy_refusal_leaves_the_secret_unused(inst: Installation) -> None:
    enrollment = Enrollment(inst.authority)
    secret, _ = enrollment.create_secret("dev-10", actor="t")
    granted = enrollment.authenticators.authorize(OneTimeSecret("dev-10", secret), EST)
    with pytest.raises(Exception, match="profile"):
        enrollment.enroll(granted, device_csr("dev-10"), profile="no-such-profile")
    assert enrollment.authenticators.authorize(OneTimeSecret("dev-10", secret), EST)


def test_a_credential_is_consumed_once(inst: Installation) -> None:
    enrollment = Enrollment(inst.authority)
    secret, _ = enrollment.create_secret("dev-11", actor="t")
    granted = enrollment.authenticators.authorize(OneTimeSecret("dev-11", secret), EST)
    enrollment.enroll(granted, device_csr("dev-11"))
    with pytest.raises(AuthError, match="already used"):
        enrollment.enroll(granted, device_csr("dev-11"))  # a concurrent twin, authorized too
    with pytest.raises(AuthError, match="already used"):
        enrollment.authenticators.authorize(OneTimeSecret("dev-11", secret), EST)


def test_a_scep_challenge_is_consumed_with_its_certificate(inst: Installation) -> None:
    service = ScepService(inst.authority, inst.keys)
    authenticators = Authenticators(inst.authority)
    password, _ = service.create_challenge("dev-12", actor="t")
    context = Context("scep", ca="issuing", transaction_id="t-12")
    granted = authenticators.authorize(ScepChallenge(password), context)
    inst.authority.issue(
        device_csr("dev-12"),
        profile="device",
        device_id="dev-12",
        actor="t",
        within=authenticators.within(granted),
    )
    with pytest.raises(AuthError, match="used already"):
        authenticators.authorize(ScepChallenge(password), context)
