"""A small DER/BER reader and writer for the SCEP hot path, over asn1crypto's low-level parser.

Building asn1crypto objects for every pkiMessage costs more than the RSA operations the message
needs, so the fixed CMS shapes of RFC 8894 are walked and written element by element here
(X.690 tag-length-value). A malformed element raises ``ValueError``.
"""

from __future__ import annotations

from dataclasses import dataclass

from asn1crypto import core, parser

__all__ = [
    "Element",
    "children",
    "dotted",
    "integer",
    "octets",
    "oid",
    "read",
    "tlv",
]

_MAX_DEPTH = 8


@dataclass(frozen=True, slots=True)
class Element:
    """One TLV: its class, constructed flag, tag number and the bytes around its contents."""

    cls: int  # 0 universal, 1 application, 2 context-specific, 3 private
    constructed: bool
    tag: int
    header: bytes
    contents: bytes
    trailer: bytes

    @property
    def encoded(self) -> bytes:
        """The whole element as it was received."""
        return self.header + self.contents + self.trailer

    def is_(self, cls: int, tag: int) -> bool:
        """Whether this is the element of that class and tag number."""
        return self.cls == cls and self.tag == tag


def _one(data: bytes) -> tuple[Element, int]:
    cls, method, tag, header, contents, trailer = parser.parse(data)
    element = Element(cls, method == 1, tag, header, contents, trailer)
    return element, len(header) + len(contents) + len(trailer)


def read(data: bytes) -> Element:
    """The single element that ``data`` holds (no trailing bytes)."""
    element, size = _one(data)
    if size != len(data):
        raise ValueError("trailing data after the element")
    return element


def children(element: Element, universal_tag: int | None = None) -> list[Element]:
    """The elements inside a constructed one (optionally checking it is SEQUENCE/SET)."""
    if not element.constructed:
        raise ValueError("a constructed element was expected")
    if universal_tag is not None and not element.is_(0, universal_tag):
        raise ValueError(f"universal tag {universal_tag} was expected, not {element.tag}")
    found = []
    data, offset = element.contents, 0
    while offset < len(data):
        child, size = _one(data[offset:])
        found.append(child)
        offset += size
    return found


def octets(element: Element, depth: int = 0) -> bytes:
    """An OCTET STRING's value, also in BER constructed form (X.690 section 8.7.3)."""
    if not element.constructed:
        return element.contents
    if depth > _MAX_DEPTH:
        raise ValueError("constructed OCTET STRING nested too deep")
    return b"".join(octets(chunk, depth + 1) for chunk in children(element))


def tlv(tag: int, body: bytes) -> bytes:
    """A DER element with the given identifier octet."""
    size = len(body)
    if size < 0x80:
        return bytes((tag, size)) + body
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(length))) + length + body


def oid(dotted: str) -> bytes:
    """The DER of an OBJECT IDENTIFIER."""
    return bytes(core.ObjectIdentifier(dotted).dump())


def dotted(encoded: bytes) -> str:
    """The dotted form of an OBJECT IDENTIFIER's DER."""
    return str(core.ObjectIdentifier.load(encoded).dotted)


def integer(value: int) -> bytes:
    """The DER of an INTEGER."""
    return tlv(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big", signed=True))
