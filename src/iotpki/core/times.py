"""Times given as text: one parser of ISO 8601 times that must carry their time zone."""

from __future__ import annotations

from datetime import datetime

from iotpki.errors import RequestError

__all__ = ["parse_time"]


def parse_time(value: object, name: str, *, max_length: int | None = None) -> datetime:
    """An aware time from ISO 8601 text; RequestError naming ``name`` otherwise."""
    if not isinstance(value, str) or (max_length is not None and len(value) > max_length):
        raise RequestError(f"{name} must be an ISO 8601 time", field=name)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise RequestError(f"{name} must be an ISO 8601 time", field=name) from exc
    if parsed.tzinfo is None:
        raise RequestError(f"{name} needs a time zone", field=name)
    return parsed
