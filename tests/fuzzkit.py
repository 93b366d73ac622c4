"""Hypothesis strategies that mutate valid encodings, and the settings every fuzz test uses.

Deterministic (``derandomize``) and bounded, so CI sees the same few hundred cases each run.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

__all__ = ["FUZZ", "der_mutated", "mutated"]

FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
"""Settings for every property-based test of a decoder."""

# Bytes that steer a DER or JSON parser somewhere interesting when dropped in.
_INTERESTING = [b"\x00", b"\x80", b"\x81", b"\x84\xff\xff\xff\xff", b"\xff", b"\x30\x80", b"\x1f"]


@st.composite
def _mutation(draw: st.DrawFn, data: bytes) -> bytes:
    if not data:
        return draw(st.binary(max_size=16))
    at = draw(st.integers(0, len(data) - 1))
    kind = draw(st.sampled_from(["set", "insert", "delete", "truncate", "repeat", "splice"]))
    if kind == "set":
        return data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1 :]
    if kind == "insert":
        extra = draw(st.sampled_from(_INTERESTING) | st.binary(min_size=1, max_size=8))
        return data[:at] + extra + data[at:]
    if kind == "delete":
        return data[:at] + data[at + draw(st.integers(1, 16)) :]
    if kind == "truncate":
        return data[:at]
    if kind == "repeat":
        end = min(len(data), at + draw(st.integers(1, 64)))
        return data[:end] + data[at:end] + data[end:]
    other = draw(st.integers(0, len(data) - 1))
    return data[:at] + data[other:]


@st.composite
def mutated(draw: st.DrawFn, seed: bytes, max_steps: int = 3) -> bytes:
    """``seed`` after one to ``max_steps`` byte-level mutations."""
    data = seed
    for _ in range(draw(st.integers(1, max_steps))):
        data = draw(_mutation(data))
    return data


# -- structure-aware: a DER tree, one node changed, lengths re-encoded ------------------------

_Node = tuple[int, bytes | list["_Node"]]  # (tag, content) or (tag, children) when constructed


def _read(data: bytes) -> list[_Node]:
    nodes: list[_Node] = []
    at = 0
    while at < len(data):
        tag, size = data[at], data[at + 1]
        at += 2
        if size & 0x80:
            count = size & 0x7F
            size = int.from_bytes(data[at : at + count], "big")
            at += count
        content = data[at : at + size]
        at += size
        nodes.append((tag, _read(content) if tag & 0x20 else content))
    return nodes


def _tlv(tag: int, content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        return bytes([tag, size]) + content
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + content


def _write(nodes: list[_Node]) -> bytes:
    return b"".join(
        _tlv(tag, _write(body) if isinstance(body, list) else body) for tag, body in nodes
    )


def _paths(nodes: list[_Node], prefix: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
    found = []
    for i, (_, body) in enumerate(nodes):
        found.append((*prefix, i))
        if isinstance(body, list):
            found += _paths(body, (*prefix, i))
    return found


def _siblings(nodes: list[_Node], path: tuple[int, ...]) -> list[_Node]:
    for i in path[:-1]:
        body = nodes[i][1]
        assert isinstance(body, list)
        nodes = body
    return nodes


@st.composite
def der_mutated(draw: st.DrawFn, seed: bytes) -> bytes:
    """``seed`` (valid DER) with one element retagged, rewritten, repeated or dropped, and every
    enclosing length corrected: the result stays well-framed DER, so parsers go deeper."""
    tree = _read(seed)
    path = draw(st.sampled_from(_paths(tree)))
    siblings = _siblings(tree, path)
    index = path[-1]
    tag, body = siblings[index]
    kind = draw(st.sampled_from(["retag", "content", "repeat", "drop", "empty", "bytes"]))
    if kind == "retag":
        siblings[index] = (draw(st.integers(0, 255)) & ~0x20 | (tag & 0x20), body)
    elif kind == "content" and not isinstance(body, list):
        siblings[index] = (tag, draw(st.binary(max_size=max(8, 2 * len(body)))))
    elif kind == "repeat":
        siblings.insert(index, siblings[index])
    elif kind == "drop":
        del siblings[index]
    elif kind == "empty":
        siblings[index] = (tag, [] if isinstance(body, list) else b"")
    else:
        siblings[index] = (tag & ~0x20, draw(st.sampled_from(_INTERESTING) | st.binary(max_size=8)))
    return _write(tree)
