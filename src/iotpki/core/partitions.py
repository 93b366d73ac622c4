"""CRL partitions (RFC 5280 sections 4.2.1.13 and 5.2.5): which partition a certificate names.

An end-entity certificate's CRL distribution point names one partition of its CA's revocation
list, fixed at issuance: the expiry window its notAfter falls in and, within the window, a bucket
of its (random) serial number. A partition's CRL carries an issuingDistributionPoint naming the
same URL, so a relying party fetches only the partition of the certificate it checks, and a whole
partition stops being published once the end of its window has passed.

A partition id reads ``<window start yyyymmdd>-<window days>d-<bucket>``, e.g. ``20270104-7d-3``:
it describes itself, so changing the scheme later never changes what an existing id means.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509

__all__ = [
    "PartitionScheme",
    "certificate_partition",
    "partition_expires",
    "partition_extensions",
    "partition_of",
    "partition_url",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ID = re.compile(r"^(\d{8})-(\d{1,4})d-(\d{1,4})$")
_URL_TAIL = re.compile(r"/crl/([A-Za-z0-9][A-Za-z0-9._-]*)/(\d{8}-\d{1,4}d-\d{1,4})\.crl$")


@dataclass(frozen=True, slots=True)
class PartitionScheme:
    """How new certificates are spread over partitions: window length and buckets per window."""

    window_days: int = 7
    buckets: int = 4

    def __post_init__(self) -> None:
        if not 1 <= self.window_days <= 3650:
            raise ValueError("a partition window is 1 to 3650 days")
        if not 1 <= self.buckets <= 4096:
            raise ValueError("a partition window holds 1 to 4096 buckets")


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def partition_of(scheme: PartitionScheme, serial: int, not_after: datetime) -> str:
    """The partition id of a certificate with this serial and notAfter."""
    days = (_utc(not_after) - _EPOCH).days
    start = _EPOCH + timedelta(days=days - days % scheme.window_days)
    return f"{start:%Y%m%d}-{scheme.window_days}d-{serial % scheme.buckets}"


def partition_expires(partition: str) -> datetime:
    """When the partition's window ends: no certificate of it is valid from then on."""
    match = _ID.match(partition)
    if match is None:
        raise ValueError(f"not a CRL partition id: {partition!r}")
    start = datetime.strptime(match.group(1), "%Y%m%d").replace(tzinfo=UTC)
    return start + timedelta(days=int(match.group(2)))


def partition_url(base_url: str, ca_name: str, partition: str, *, delta: bool = False) -> str:
    """Where a partition's complete (or delta) CRL is published: ``/crl/<ca>/<id>.crl``."""
    suffix = "-delta" if delta else ""
    return f"{base_url.rstrip('/')}/crl/{ca_name}/{partition}{suffix}.crl"


def _point(url: str) -> x509.DistributionPoint:
    return x509.DistributionPoint(
        full_name=[x509.UniformResourceIdentifier(url)],
        relative_name=None,
        reasons=None,
        crl_issuer=None,
    )


def partition_extensions(
    extensions: tuple[x509.ExtensionType, ...],
    scheme: PartitionScheme | None,
    *,
    base_url: str,
    ca_name: str,
    serial: int,
    not_after: datetime,
) -> tuple[x509.ExtensionType, ...]:
    """A CA's issuer extensions with the CRL distribution point and freshestCRL of the partition.

    Without a scheme the CA-wide URLs stay (partitions switched off).
    """
    if scheme is None:
        return extensions
    partition = partition_of(scheme, serial, not_after)
    full = partition_url(base_url, ca_name, partition)
    delta = partition_url(base_url, ca_name, partition, delta=True)
    out: list[x509.ExtensionType] = []
    for extension in extensions:
        if isinstance(extension, x509.CRLDistributionPoints):
            out.append(x509.CRLDistributionPoints([_point(full)]))
        elif isinstance(extension, x509.FreshestCRL):
            out.append(x509.FreshestCRL([_point(delta)]))
        else:
            out.append(extension)
    return tuple(out)


def certificate_partition(certificate: x509.Certificate) -> str | None:
    """The partition a certificate's CRL distribution point names (None: the CA-wide CRL)."""
    try:
        points = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return None
    for point in points:
        for name in point.full_name or ():
            if isinstance(name, x509.UniformResourceIdentifier):
                match = _URL_TAIL.search(name.value)
                if match is not None:
                    return match.group(2)
    return None
