"""The admin REST API and its OpenAPI document."""

from iotpki.api.routes import api_routes

__all__ = ["api_routes"]
