"""The one JSON loader of the admin API: UTF-8 only, nesting bounded, a JSON object at the top.

Sizes are bounded before this by :func:`iotpki.protocols.http.read_body`; depth is bounded
here before the parser runs, so that a 100000-deep array is a 400, not a ``RecursionError``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from iotpki.errors import MalformedInput

__all__ = ["MAX_DEPTH", "load_object"]

MAX_DEPTH = 32
"""The deepest nesting of arrays and objects any API body needs, with room to spare."""

# A JSON string (RFC 8259 section 7): brackets inside it do not nest.
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(r"[\[\]{}]")


def load_object(body: bytes, *, max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """A JSON object from a request body; MalformedInput for anything else."""
    try:
        # RFC 8259 section 8.1: JSON exchanged between systems is UTF-8 (json.loads would
        # also take UTF-16 and UTF-32 bytes).
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedInput("body is not UTF-8 JSON", reason="encoding") from exc
    _check_depth(text, max_depth)
    try:
        data = json.loads(text, parse_constant=_no_constant, object_pairs_hook=_unique_keys)
    except ValueError as exc:  # JSONDecodeError, and integers past the digit limit
        raise MalformedInput(f"body is not JSON: {exc}", reason="syntax") from exc
    if not isinstance(data, dict):
        raise MalformedInput("body must be a JSON object", reason="type")
    return data


def _check_depth(text: str, max_depth: int) -> None:
    depth = 0
    for bracket in _BRACKETS.findall(_STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        if depth > max_depth:
            raise MalformedInput(f"JSON nested deeper than {max_depth}", reason="depth")


def _no_constant(name: str) -> None:
    # RFC 8259 section 6: NaN and Infinity are not JSON numbers.
    raise ValueError(f"{name} is not a JSON value")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # RFC 8259 section 4: names SHOULD be unique; a repeated one is ambiguous, so refused.
    data = dict(pairs)
    if len(data) != len(pairs):
        raise ValueError("an object repeats a member name")
    return data
