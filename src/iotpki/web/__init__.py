"""The web dashboard (server-rendered, self-contained pages)."""

from iotpki.web.routes import web_routes

__all__ = ["web_routes"]
