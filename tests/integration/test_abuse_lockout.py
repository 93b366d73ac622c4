"""Enrollment-secret lockout keyed by device and source: a stranger cannot lock a device out."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from iotpki.core.authenticators import Context, OneTimeSecret
from iotpki.core.enrollment import Enrollment, EnrollmentConfig
from iotpki.errors import AuthError, RateLimited
from iotpki.services.installation import Installation

from conftest import ManualClock

DEVICE = "dev-lock"


@pytest.fixture
def service(inst: Installation) -> Iterator[Enrollment]:
    yield Enrollment(
        inst.authority, EnrollmentConfig(max_secret_failures=5, max_device_failures=12)
    )


def _guess(service: Enrollment, source: str, secret: str = "guess") -> type[Exception] | None:
    try:
        service.authenticators.authorize(OneTimeSecret(DEVICE, secret), Context("est", source))
    except (AuthError, RateLimited) as exc:
        return type(exc)
    return None


def test_a_stranger_cannot_lock_the_device_out(service: Enrollment) -> None:
    secret, _ = service.create_secret(DEVICE, actor="test")
    for _ in range(5):
        assert _guess(service, "198.51.100.66") is AuthError
    assert _guess(service, "198.51.100.66", secret) is RateLimited  # the stranger is locked
    enrollee = service.authenticators.authorize(  # the device is not
        OneTimeSecret(DEVICE, secret), Context("est", "192.0.2.10")
    )
    assert enrollee.device_id == DEVICE


def test_the_source_lock_lifts_after_the_lockout(
    service: Enrollment, clock: ManualClock, inst: Installation
) -> None:
    secret, _ = service.create_secret(DEVICE, actor="test")
    for _ in range(5):
        _guess(service, "192.0.2.10")
    assert _guess(service, "192.0.2.10", secret) is RateLimited
    locks = [e for e in inst.store.audit_events() if e.action == "est.secret.locked"]
    assert [(e.data["scope"], e.data["source"]) for e in locks] == [("source", "192.0.2.10")]
    clock.advance(timedelta(minutes=16))
    assert _guess(service, "192.0.2.10", secret) is None


def test_distributed_guessing_hits_the_device_ceiling(
    service: Enrollment, clock: ManualClock, inst: Installation
) -> None:
    secret, _ = service.create_secret(DEVICE, actor="test")
    for n in range(12):  # four guesses from each of three addresses: no source lock
        assert _guess(service, f"203.0.113.{n % 3}") is AuthError
    assert _guess(service, "192.0.2.10", secret) is RateLimited  # every source now
    scopes = [e.data["scope"] for e in inst.store.audit_events() if e.action == "est.secret.locked"]
    assert scopes == ["device"]
    clock.advance(timedelta(minutes=16))
    assert _guess(service, "192.0.2.10", secret) is None


def test_old_failures_are_forgotten(service: Enrollment, clock: ManualClock) -> None:
    secret, _ = service.create_secret(DEVICE, actor="test")
    for _ in range(4):
        _guess(service, "192.0.2.10")
    clock.advance(timedelta(minutes=16))
    for _ in range(4):
        assert _guess(service, "192.0.2.10") is AuthError
    assert _guess(service, "192.0.2.10", secret) is None


def test_default_limits() -> None:
    config = EnrollmentConfig()
    assert config.max_secret_failures == 5
    assert config.max_device_failures >= 10 * config.max_secret_failures
