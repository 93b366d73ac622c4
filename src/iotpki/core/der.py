"""DER elements through asn1crypto (X.690): one encoder for the few structures built by hand.

cryptography builds certificates, CSRs and OCSP responses; what it does not build (EST CsrAttrs,
the streamed revokedCertificates of a large CRL) is assembled from these elements.
"""

from __future__ import annotations

from asn1crypto import core, parser

__all__ = ["oid", "sequence", "tlv"]


def tlv(tag: int, content: bytes) -> bytes:
    """One DER element: the identifier octet ``tag`` (low tag number), definite length, contents."""
    return bytes(parser.emit(tag >> 6, (tag >> 5) & 1, tag & 0x1F, content))


def sequence(*parts: bytes) -> bytes:
    """A SEQUENCE of already encoded elements."""
    return tlv(0x30, b"".join(parts))


def oid(dotted: str) -> bytes:
    """An OBJECT IDENTIFIER from its dotted form."""
    return bytes(core.ObjectIdentifier(dotted).dump())
