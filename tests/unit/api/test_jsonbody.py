"""The admin API's JSON loader: one pytest.raises per refused body."""

from __future__ import annotations

import pytest

from iotpki.api.jsonbody import MAX_DEPTH, load_object
from iotpki.errors import MalformedInput


def test_an_object_loads() -> None:
    body = b'{"a": [1, {"b": "[[[{{{"}], "c": "\\"]"}'
    assert load_object(body) == {"a": [1, {"b": "[[[{{{"}], "c": '"]'}


def test_nesting_up_to_the_bound_loads() -> None:
    body = b'{"a": ' + b"[" * (MAX_DEPTH - 1) + b"]" * (MAX_DEPTH - 1) + b"}"
    value = load_object(body)["a"]
    for _ in range(MAX_DEPTH - 2):
        value = value[0]
    assert value == []


@pytest.mark.parametrize(
    ("body", "reason", "match"),
    [
        (b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "depth", "deeper than"),
        (b"[" * 100_000, "depth", "deeper than"),
        (b'{"a": ' + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"}", "depth", "deeper than"),
        ('{"a": "é"}'.encode("utf-16"), "encoding", "not UTF-8"),
        ('{"a": "é"}'.encode("utf-32-le"), "encoding", "not UTF-8"),
        (b'{"a": "\xff"}', "encoding", "not UTF-8"),
        (b'\xef\xbb\xbf{"a": 1}', "syntax", "BOM"),
        (b'{"a": NaN}', "syntax", "NaN is not a JSON value"),
        (b'{"a": -Infinity}', "syntax", "Infinity is not a JSON value"),
        (b'{"a": 1, "a": 2}', "syntax", "repeats a member name"),
        (b'{"a": ' + b"9" * 5000 + b"}", "syntax", "not JSON"),
        (b"{not json", "syntax", "not JSON"),
        (b"", "syntax", "not JSON"),
        (b'["a list"]', "type", "must be a JSON object"),
        (b'"text"', "type", "must be a JSON object"),
    ],
)
def test_refused(body: bytes, reason: str, match: str) -> None:
    with pytest.raises(MalformedInput, match=match) as caught:
        load_object(body)
    assert caught.value.data["reason"] == reason
