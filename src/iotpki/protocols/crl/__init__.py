"""CRL distribution over HTTP."""

from iotpki.protocols.crl.routes import MEDIA_TYPE, CrlSource, crl_headers, resolve_name, routes

__all__ = ["MEDIA_TYPE", "CrlSource", "crl_headers", "resolve_name", "routes"]
