"""Parsing and encoding of certificates as PEM or DER (CSRs: :mod:`iotpki.core.csr`)."""

from __future__ import annotations

from collections.abc import Iterable

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from iotpki.errors import MalformedInput

__all__ = ["load_certificate", "load_certificates", "pem"]


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
        raise MalformedInput(f"not an X.509 certificate: {exc}") from exc
    return certs


def pem(certificates: Iterable[x509.Certificate]) -> bytes:
    """Certificates as concatenated PEM blocks, in the given order."""
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)
