"""The access log and the client address every adapter audits refusals under.

Page views and read-only protocol queries (GetCACaps, GetCACert, EST cacerts and csrattrs, CRL
and CA certificate fetches, dashboard pages) are not security decisions: each is one line of the
``iotpki.access`` logger, never an audit chain entry.
"""

from __future__ import annotations

import logging

from starlette.requests import Request

__all__ = ["access_log", "client_address", "log_access"]

access_log = logging.getLogger("iotpki.access")
"""One line per page view or read-only query: client, method, path, event."""


def client_address(request: Request) -> str:
    """The address of the connection's peer (``unknown`` without one)."""
    return request.client.host if request.client else "unknown"


def log_access(request: Request, event: str, actor: str = "-") -> None:
    """Write one access-log line for a read-only request."""
    access_log.info(
        "%s %s %s %s %s",
        client_address(request),
        actor,
        request.method,
        request.url.path[:256],
        event,
    )
