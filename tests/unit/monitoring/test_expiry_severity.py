"""Expiry severity scales with a certificate's lifetime, so short-lived ones are not noise."""

from __future__ import annotations

from datetime import timedelta

import pytest

from iotpki.monitoring.checks import _severity
from iotpki.settings import ExpiryThresholds

THRESHOLDS = ExpiryThresholds(warning_days=30, critical_days=7)
DAY = timedelta(days=1)


@pytest.mark.parametrize(
    ("remaining", "lifetime", "expected"),
    [
        (30 * DAY, 30 * DAY, None),  # a device certificate the day it is issued
        (10 * DAY, 30 * DAY, None),  # when its agent renews it
        (5 * DAY, 30 * DAY, "medium"),  # under a quarter of its life: renewal is late
        (2 * DAY, 30 * DAY, "high"),  # under a tenth
        (2 * DAY, 7 * DAY, None),  # an OCSP responder certificate before its renewal
        (20 * DAY, 397 * DAY, "medium"),  # long-lived: the day thresholds apply
        (5 * DAY, 397 * DAY, "high"),
        (-DAY, 30 * DAY, "critical"),
    ],
)
def test_thresholds_shrink_for_short_lifetimes(
    remaining: timedelta, lifetime: timedelta, expected: str | None
) -> None:
    assert _severity(remaining, THRESHOLDS, lifetime) == expected
