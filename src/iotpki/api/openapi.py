"""The OpenAPI 3.1 document of the admin API, served at ``/api/openapi.json``."""

from __future__ import annotations

from typing import Any

__all__ = ["openapi_document"]

_ERROR = {"$ref": "#/components/schemas/Error"}
_SERIAL = {
    "name": "serial",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[0-9a-fA-F]{1,64}$"},
}
_CA_QUERY = {"name": "ca", "in": "query", "schema": {"type": "string", "maxLength": 64}}


def _responses(ok_status: str, ok_schema: dict[str, Any]) -> dict[str, Any]:
    error = {"content": {"application/json": {"schema": _ERROR}}}
    return {
        ok_status: {
            "description": "success",
            "content": {"application/json": {"schema": ok_schema}},
        },
        "400": {"description": "bad request", **error},
        "401": {"description": "missing or bad token", **error},
        "403": {"description": "role not allowed", **error},
        "404": {"description": "not found", **error},
        "409": {"description": "conflict", **error},
        "413": {"description": "body too large", **error},
    }


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


_REASONS = [
    "unspecified",
    "keyCompromise",
    "cACompromise",
    "affiliationChanged",
    "superseded",
    "cessationOfOperation",
    "certificateHold",
    "privilegeWithdrawn",
    "aACompromise",
]


def openapi_document() -> dict[str, Any]:
    """The document, built fresh (it is small)."""
    cert = {"$ref": "#/components/schemas/Certificate"}
    return {
        "openapi": "3.1.0",
        "info": {"title": "iotpki admin API", "version": "1"},
        "security": [{"bearer": []}],
        "paths": {
            "/api/v1/certificates": {
                "get": {
                    "summary": "Search certificates",
                    "parameters": [
                        {
                            "name": "status",
                            "in": "query",
                            "schema": {"type": "string", "enum": ["valid", "revoked"]},
                        },
                        _CA_QUERY,
                        {"name": "profile", "in": "query", "schema": {"type": "string"}},
                        {"name": "device_id", "in": "query", "schema": {"type": "string"}},
                        {"name": "q", "in": "query", "schema": {"type": "string"}},
                        {
                            "name": "expiring_before",
                            "in": "query",
                            "schema": {"type": "string", "format": "date-time"},
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 0, "maximum": 500},
                        },
                        {
                            "name": "offset",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 0},
                        },
                    ],
                    "responses": _responses(
                        "200",
                        {
                            "type": "object",
                            "properties": {"items": {"type": "array", "items": cert}},
                        },
                    ),
                },
                "post": {
                    "summary": "Issue a certificate from a CSR",
                    "requestBody": _json_body(
                        {
                            "type": "object",
                            "required": ["csr"],
                            "properties": {
                                "csr": {"type": "string", "description": "PEM PKCS#10"},
                                "profile": {"type": "string"},
                                "ca": {"type": "string"},
                                "device_id": {"type": "string"},
                                "lifetime": {"type": "string", "example": "30d"},
                            },
                        }
                    ),
                    "responses": _responses("201", cert),
                },
            },
            "/api/v1/certificates/{serial}": {
                "get": {
                    "summary": "Show a certificate",
                    "parameters": [_SERIAL, _CA_QUERY],
                    "responses": _responses("200", cert),
                }
            },
            "/api/v1/certificates/{serial}/revoke": {
                "post": {
                    "summary": "Revoke a certificate",
                    "parameters": [_SERIAL],
                    "requestBody": _json_body(
                        {
                            "type": "object",
                            "properties": {
                                "reason": {"type": "string", "enum": _REASONS},
                                "ca": {"type": "string"},
                                "invalidity_date": {"type": "string", "format": "date-time"},
                            },
                        }
                    ),
                    "responses": _responses("200", cert),
                }
            },
            "/api/v1/certificates/{serial}/renew": {
                "post": {
                    "summary": "Renew a certificate, with a new CSR to rekey",
                    "parameters": [_SERIAL],
                    "requestBody": _json_body(
                        {
                            "type": "object",
                            "properties": {
                                "csr": {"type": "string"},
                                "ca": {"type": "string"},
                                "lifetime": {"type": "string"},
                            },
                        }
                    ),
                    "responses": _responses("201", cert),
                }
            },
            "/api/v1/cas": {
                "get": {
                    "summary": "List CAs with their expiry",
                    "responses": _responses(
                        "200", {"type": "object", "properties": {"items": {"type": "array"}}}
                    ),
                }
            },
            "/api/v1/cas/{name}": {
                "get": {
                    "summary": "Show a CA",
                    "parameters": [
                        {
                            "name": "name",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": _responses("200", {"type": "object"}),
                }
            },
            "/api/v1/tokens": {
                "post": {
                    "summary": "Create an API token (admin)",
                    "requestBody": _json_body(
                        {
                            "type": "object",
                            "required": ["role"],
                            "properties": {
                                "role": {
                                    "type": "string",
                                    "enum": ["admin", "operator", "auditor", "provisioner"],
                                },
                                "description": {"type": "string"},
                            },
                        }
                    ),
                    "responses": _responses("201", {"type": "object"}),
                }
            },
            "/api/v1/audit/verify": {
                "get": {
                    "summary": "Verify the audit hash chain",
                    "responses": _responses("200", {"type": "object"}),
                }
            },
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "message"],
                    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
                },
                "Certificate": {
                    "type": "object",
                    "properties": {
                        "serial": {"type": "string"},
                        "ca": {"type": "string"},
                        "profile": {"type": "string"},
                        "device_id": {"type": ["string", "null"]},
                        "subject": {"type": "string"},
                        "sans": {"type": "array", "items": {"type": "string"}},
                        "not_before": {"type": "string", "format": "date-time"},
                        "not_after": {"type": "string", "format": "date-time"},
                        "status": {"type": "string", "enum": ["valid", "revoked", "expired"]},
                        "certificate": {"type": "string"},
                        "chain": {"type": "string"},
                    },
                },
            },
        },
    }
