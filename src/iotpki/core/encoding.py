"""Parsing and encoding of certificates as PEM or DER (CSRs: :mod:`iotpki.core.csr`)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from iotpki.errors import MalformedInput

__all__ = ["load_certificate", "load_certificates", "parse_error_reason", "parse_serial", "pem"]

_HEX = re.compile(r"^[0-9a-f]+$")


# What cryptography's parser errors mean, in the words of someone who handed over a file.
_REASONS = (
    ("InvalidData", "its PEM block's base64 does not decode"),
    ("MalformedFraming", "it holds no complete PEM block (BEGIN and END lines)"),
    ("Valid PEM but no", "its PEM block holds another kind of object"),
    ("ShortData", "the data ends early (cut short, or not DER at all)"),
    ("InvalidLength", "a length inside the DER is wrong (damaged or cut short)"),
    ("UnexpectedTag", "the DER holds another kind of object"),
    ("ExtraData", "bytes follow the end of the DER object"),
    ("InvalidSetOrdering", "a SET inside the DER is not in DER order"),
    ("InvalidTag", "a tag inside the DER is not in its shortest form"),
    ("InvalidValue", "a field holds a value its type does not allow"),
    ("version", "its version is not one the format defines"),
)


def parse_error_reason(data: bytes, exc: Exception) -> str:
    """Why ``data`` did not parse, in plain words."""
    if not data.strip():
        return "the input is empty"
    text = str(exc)
    for marker, reason in _REASONS:
        if marker in text:
            return reason
    return "a field holds a value that is not allowed"


def load_certificate(data: bytes) -> x509.Certificate:
    """One certificate from PEM or DER bytes (the first, if PEM holds several)."""
    return load_certificates(data)[0]


def load_certificates(data: bytes) -> list[x509.Certificate]:
    """Every certificate in PEM bytes, or the one certificate in DER bytes."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            certs = x509.load_pem_x509_certificates(data)
        else:
            certs = [x509.load_der_x509_certificate(data)]
    except ValueError as exc:
        raise MalformedInput(
            f"not a valid X.509 certificate (PEM or DER): {parse_error_reason(data, exc)}"
        ) from exc
    return certs


def parse_serial(text: str) -> str:
    """A serial (or serial prefix) as typed, in the stored form: lower-case hex, no leading zeros.

    Accepts ``0x``, the colons of ``openssl x509 -text`` and a trailing ``...`` of an
    abbreviation; anything else that is not hexadecimal is refused as such.
    """
    value = text.strip().lower().removeprefix("0x").replace(":", "")
    value = value.removesuffix("...").removesuffix("\u2026")
    if not _HEX.match(value):
        raise MalformedInput(f"not a hexadecimal serial: {text[:80]!r}", serial=text[:80])
    return value.lstrip("0") or "0"


def pem(certificates: Iterable[x509.Certificate]) -> bytes:
    """Certificates as concatenated PEM blocks, in the given order."""
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)
