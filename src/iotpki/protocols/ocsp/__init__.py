"""OCSP responder (RFC 6960, RFC 5019 profile): request codec and HTTP routes."""

from iotpki.protocols.ocsp.routes import MEDIA_TYPE, OcspEndpoint, OcspFastPath, routes

__all__ = ["MEDIA_TYPE", "OcspEndpoint", "OcspFastPath", "routes"]
