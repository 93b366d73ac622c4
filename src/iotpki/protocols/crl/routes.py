"""CRLs over HTTP (RFC 5280 section 4.2.1.13, RFC 2585 section 4.2): ``/crl/<ca>.crl``, DER.

``/crl/<ca>.crl`` is the CA's complete CRL and ``/crl/<ca>-delta.crl`` its delta CRL. Responses
carry ETag (the CRL number), Last-Modified (thisUpdate), Expires (nextUpdate) and a max-age that
never reaches past nextUpdate; a matching If-None-Match gets 304. A CA's CRL partitions
(RFC 5280 section 5.2.5) are ``/crl/<ca>/<partition>.crl`` and ``/crl/<ca>/<partition>-delta.crl``
with the same headers, and ``/crl/<ca>/index.json`` lists them all.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta
from email.utils import format_datetime
from typing import Protocol

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from iotpki.core.policy import is_valid_name
from iotpki.core.publication import CrlKind, CrlRecord
from iotpki.protocols.access import log_access
from iotpki.protocols.http import blocking

__all__ = ["MEDIA_TYPE", "CrlSource", "crl_headers", "resolve_name", "routes"]

MEDIA_TYPE = "application/pkix-crl"
_DELTA = "-delta"
_PARTITION = re.compile(r"^(\d{8}-\d{1,4}d-\d{1,4})(-delta)?$")


class CrlSource(Protocol):
    """Where the route finds CRLs and the facts around them."""

    def cached_crl(self, ca_name: str, kind: CrlKind) -> CrlRecord | None:
        """The CRL held in memory, without I/O."""
        ...

    def load_crl(self, ca_name: str, kind: CrlKind) -> CrlRecord | None:
        """The CRL from the store (blocking)."""
        ...

    def is_crl_issuer(self, ca_name: str) -> bool:
        """Whether a CA of that name publishes CRLs here."""
        ...

    def crl_max_age(self, ca_name: str) -> timedelta:
        """The longest a client should cache a CRL of this CA."""
        ...

    def now(self) -> datetime:
        """The current time."""
        ...

    def partition_crl(self, ca_name: str, partition: str, kind: CrlKind) -> CrlRecord | None:
        """A partition's CRL held in memory, without I/O."""
        ...

    def partition_index_json(self, ca_name: str) -> bytes | None:
        """The CA's partition index document held in memory."""
        ...


def resolve_name(name: str, known: Callable[[str], bool]) -> tuple[str, CrlKind] | None:
    """(CA, kind) for a file name: a CA's own name wins over the ``-delta`` suffix."""
    if not is_valid_name(name):
        return None
    if known(name):
        return name, "full"
    if name.endswith(_DELTA) and known(name[: -len(_DELTA)]):
        return name[: -len(_DELTA)], "delta"
    return None


def crl_headers(crl: CrlRecord, now: datetime, max_age: timedelta) -> dict[str, str]:
    """HTTP caching headers bounded by the CRL's nextUpdate."""
    remaining = min(max_age, crl.next_update - now)
    scope = crl.ca_name if crl.partition is None else f"{crl.ca_name}-{crl.partition}"
    return {
        "ETag": f'"{scope}-{crl.kind}-{crl.number}"',
        "Last-Modified": format_datetime(crl.this_update, usegmt=True),
        "Expires": format_datetime(crl.next_update, usegmt=True),
        "Cache-Control": f"public, max-age={max(0, int(remaining.total_seconds()))}",
    }


def routes(source: CrlSource) -> list[BaseRoute]:
    """The CRL route."""

    async def crl(request: Request) -> Response:
        log_access(request, "crl")
        resolved = resolve_name(request.path_params["name"], source.is_crl_issuer)
        if resolved is None:
            return PlainTextResponse("no such CRL", status_code=404)
        ca_name, kind = resolved
        record = source.cached_crl(ca_name, kind) or await blocking(source.load_crl, ca_name, kind)
        if record is None or record.der is None:
            return PlainTextResponse("no CRL published yet", status_code=404)
        headers = crl_headers(record, source.now(), source.crl_max_age(ca_name))
        if request.headers.get("if-none-match") == headers["ETag"]:
            return Response(status_code=304, headers=headers)
        return Response(record.der, media_type=MEDIA_TYPE, headers=headers)

    async def partition(request: Request) -> Response:
        log_access(request, "crl")
        ca_name = request.path_params["ca"]
        match = _PARTITION.match(request.path_params["name"])
        if match is None or not source.is_crl_issuer(ca_name):
            return PlainTextResponse("no such CRL", status_code=404)
        kind: CrlKind = "delta" if match.group(2) else "full"
        record = source.partition_crl(ca_name, match.group(1), kind)
        if record is None or record.der is None:
            return PlainTextResponse("no such CRL partition", status_code=404)
        headers = crl_headers(record, source.now(), source.crl_max_age(ca_name))
        if request.headers.get("if-none-match") == headers["ETag"]:
            return Response(status_code=304, headers=headers)
        return Response(record.der, media_type=MEDIA_TYPE, headers=headers)

    async def index(request: Request) -> Response:
        log_access(request, "crl")
        ca_name = request.path_params["ca"]
        body = source.partition_index_json(ca_name) if source.is_crl_issuer(ca_name) else None
        if body is None:
            return PlainTextResponse("no such CRL index", status_code=404)
        max_age = int(source.crl_max_age(ca_name).total_seconds())
        headers = {"Cache-Control": f"public, max-age={max_age}"}
        return Response(body, media_type="application/json", headers=headers)

    return [
        Route("/crl/{name}.crl", crl, methods=["GET", "HEAD"]),
        Route("/crl/{ca}/index.json", index, methods=["GET", "HEAD"]),
        Route("/crl/{ca}/{name}.crl", partition, methods=["GET", "HEAD"]),
    ]
