"""The device-ID rule, in one place: 1-128 letters, digits and ``._:-``, not starting with
punctuation (README, "Device identity"). Every path that accepts a device ID checks it here.
"""

from __future__ import annotations

import re
from typing import TypeGuard

from iotpki.errors import RequestError

__all__ = ["check_device_id", "is_device_id"]

_DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


def is_device_id(value: object) -> TypeGuard[str]:
    """Whether ``value`` is a string that follows the device-ID rule (the whole of it)."""
    return isinstance(value, str) and _DEVICE_ID.fullmatch(value) is not None


def check_device_id(value: object, field: str = "device_id") -> str:
    """``value`` if it is a valid device ID, else ``RequestError`` naming the rule."""
    if is_device_id(value):
        return value
    shown = value[:64] if isinstance(value, str) else type(value).__name__
    raise RequestError(
        f"not a valid device ID: {shown!r} (1-128 letters, digits and ._:-)", field=field
    )
