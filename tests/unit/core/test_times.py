"""The one parser of ISO 8601 times given as text."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from iotpki.core.times import parse_time
from iotpki.errors import RequestError


def test_an_aware_time_parses() -> None:
    assert parse_time("2025-01-02T03:04:05Z", "since") == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    offset = timezone(timedelta(hours=2))
    assert parse_time("2025-01-02T03:04:05+02:00", "since").tzinfo == offset


@pytest.mark.parametrize("value", ["yesterday", "2025-13-01T00:00:00Z", "", 17, None])
def test_not_a_time_is_refused_naming_the_field(value: object) -> None:
    with pytest.raises(RequestError, match="since must be an ISO 8601 time") as raised:
        parse_time(value, "since")
    assert raised.value.data == {"field": "since"}


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(RequestError, match="since needs a time zone"):
        parse_time("2025-01-02T03:04:05", "since")


def test_a_bound_on_the_length_is_kept() -> None:
    with pytest.raises(RequestError, match="must be an ISO 8601 time"):
        parse_time("2025-01-02T03:04:05.000000+00:00:00.000000", "since", max_length=40)
    assert parse_time("2025-01-02T03:04:05.000000+00:00:00.000000", "since").tzinfo is not None
