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
        "429": {"description": "too many attempts", **error},
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
                                    "enum": [
                                        "admin",
                                        "operator",
                                        "auditor",
                                        "provisioner",
                                        "reporter",
                                    ],
                                },
                                "description": {"type": "string"},
                            },
                        }
                    ),
                    "responses": _responses("201", {"type": "object"}),
                },
                "get": {
                    "summary": "List API tokens, revoked ones included (admin)",
                    "responses": _responses("200", _items("Token")),
                },
            },
            "/api/v1/tokens/{token_id}": {
                "delete": {
                    "summary": "Revoke an API token and its dashboard sessions at once (admin)",
                    "parameters": [_path_param("token_id")],
                    "responses": _responses("200", _ref("Token")),
                }
            },
            "/api/v1/audit/verify": {
                "get": {
                    "summary": "Verify the audit hash chain",
                    "responses": _responses("200", {"type": "object"}),
                }
            },
            **_enrollment_paths(),
            **_scep_paths(),
            **_acme_paths(),
            **_operations_paths(),
            **_akca_paths(),
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "message"],
                    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
                },
                **_SCHEMAS,
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
                        "attested": {"type": "boolean"},
                        "certificate": {"type": "string"},
                        "chain": {"type": "string"},
                        "revoked_at": _TIME_OR_NULL,
                        "revocation_reason": {
                            "type": ["string", "null"],
                            "enum": [*_REASONS, None],
                        },
                        "key_algorithm": {"type": "string"},
                        "key_fingerprint": {"type": "string"},
                        "lint_status": _TEXT_OR_NULL,
                    },
                },
            },
        },
    }


# -- the adapters' admin resources (api/enrollment.py, api/scep.py, protocols/acme/admin.py,
# api/monitoring.py) ---------------------------------------------------------------------------

_TIME = {"type": "string", "format": "date-time"}
_TIME_OR_NULL = {"type": ["string", "null"], "format": "date-time"}
_TEXT_OR_NULL = {"type": ["string", "null"]}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _items(name: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["items"],
        "properties": {"items": {"type": "array", "items": _ref(name)}},
    }


def _path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _query(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": schema}


def _object(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


_PAGING = [
    _query("limit", {"type": "integer", "minimum": 0, "maximum": 500}),
    _query("offset", {"type": "integer", "minimum": 0}),
]

_SCHEMAS: dict[str, Any] = {
    "Token": _object(
        {
            "token_id": {"type": "string"},
            "description": {"type": "string"},
            "role": {"type": "string"},
            "created_at": _TIME,
            "expires_at": _TIME_OR_NULL,
            "revoked": {"type": "boolean"},
        },
        ("token_id", "role", "revoked"),
    ),
    "Device": _object(
        {"device_id": {"type": "string"}, "status": {"type": "string"}},
        ("device_id", "status"),
    ),
    "BootstrapCA": _object(
        {
            "name": {"type": "string"},
            "subject": {"type": "string"},
            "fingerprint": {"type": "string"},
            "policy": {"type": "string"},
            "profile": _TEXT_OR_NULL,
            "approval": {"type": "boolean"},
            "status": {"type": "string"},
            "not_after": _TIME,
            "certificate": {"type": "string"},
        },
        ("name", "fingerprint", "status"),
    ),
    "EnrollmentRequest": _object(
        {
            "id": {"type": "string"},
            "device_id": {"type": "string"},
            "method": {"type": "string"},
            "profile": {"type": "string"},
            "ca": _TEXT_OR_NULL,
            "status": {"type": "string", "enum": ["pending", "approved", "rejected", "issued"]},
            "created_at": _TIME,
            "decided_at": _TIME_OR_NULL,
            "decided_by": _TEXT_OR_NULL,
            "serial": _TEXT_OR_NULL,
        },
        ("id", "device_id", "status"),
    ),
    "ScepTransaction": _object(
        {
            "ca": {"type": "string"},
            "transaction_id": {"type": "string"},
            "kind": {"type": "string"},
            "status": {"type": "string", "enum": ["pending", "success", "failure"]},
            "device_id": _TEXT_OR_NULL,
            "profile": {"type": "string"},
            "key_fingerprint": {"type": "string"},
            "created_at": _TIME,
            "updated_at": _TIME,
            "serial": _TEXT_OR_NULL,
            "fail_info": _TEXT_OR_NULL,
            "renewed_from": _TEXT_OR_NULL,
            "decided_by": _TEXT_OR_NULL,
        },
        ("ca", "transaction_id", "status"),
    ),
    "EabCredential": _object(
        {
            "key_id": {"type": "string"},
            "tenant": {"type": "string"},
            "profile": {"type": "string"},
            "device_profile": {"type": "string"},
            "device_patterns": {"type": "array", "items": {"type": "string"}},
            "description": {"type": "string"},
            "created_at": _TIME,
            "expires_at": _TIME_OR_NULL,
            "used_at": _TIME_OR_NULL,
            "used_by": _TEXT_OR_NULL,
            "revoked": {"type": "boolean"},
            "hmac_key": {"type": "string", "description": "base64url; only when created"},
        },
        ("key_id", "revoked"),
    ),
    "RenewalOverride": _object(
        {
            "id": {"type": "string"},
            "window_start": _TIME,
            "window_end": _TIME,
            "serial": _TEXT_OR_NULL,
            "ca": _TEXT_OR_NULL,
            "profile": _TEXT_OR_NULL,
            "issued_before": _TIME_OR_NULL,
            "explanation_url": _TEXT_OR_NULL,
        },
        ("id", "window_start", "window_end"),
    ),
    "Finding": _object(
        {
            "id": {"type": "integer"},
            "check": {"type": "string"},
            "severity": {"type": "string", "enum": ["low", "medium", "high", "critical"]},
            "status": {"type": "string", "enum": ["open", "resolved"]},
            "summary": {"type": "string"},
            "ca": _TEXT_OR_NULL,
            "serial": _TEXT_OR_NULL,
            "device_id": _TEXT_OR_NULL,
            "evidence": {"type": "object"},
            "first_seen": _TIME,
            "last_seen": _TIME,
            "resolved_at": _TIME_OR_NULL,
        },
        ("id", "check", "severity", "status", "summary"),
    ),
    "UsageEvent": _object(
        {
            "serial": {
                "type": "string",
                "pattern": "^[0-9a-fA-F]{1,64}$",
                "description": "the certificate's serial number in hex",
            },
            "time": _TIME,
            "kind": {"type": "string", "enum": ["connect", "disconnect", "publish", "tls"]},
            "client_id": {"type": "string", "maxLength": 256},
            "source": {"type": "string", "maxLength": 128, "description": "peer address"},
        },
        ("serial", "time"),
    ),
}


def _enrollment_paths() -> dict[str, Any]:
    """Devices, one-time enrollment secrets, bootstrap (IDevID) CAs and approvals."""
    approval = _json_body(_object({}))
    return {
        "/api/v1/devices": {
            "post": {
                "summary": "Register a device, optionally bound to its IDevID",
                "requestBody": _json_body(
                    _object(
                        {
                            "device_id": {"type": "string"},
                            "bootstrap_ca": {"type": "string"},
                            "idevid": {"type": "string"},
                        },
                        ("device_id",),
                    )
                ),
                "responses": _responses("201", _ref("Device")),
            }
        },
        "/api/v1/devices/{device_id}/status": {
            "post": {
                "summary": "Enable or disable a device",
                "parameters": [_path_param("device_id")],
                "requestBody": _json_body(
                    _object(
                        {"status": {"type": "string", "enum": ["active", "disabled"]}},
                        ("status",),
                    )
                ),
                "responses": _responses("200", _ref("Device")),
            }
        },
        "/api/v1/devices/{device_id}/enrollment-secrets": {
            "post": {
                "summary": "Create a one-time enrollment secret (shown once)",
                "parameters": [_path_param("device_id")],
                "requestBody": _json_body(
                    _object(
                        {
                            "lifetime": {"type": "string", "example": "24h"},
                            "profile": {"type": "string"},
                            "approval": {"type": "boolean"},
                        }
                    )
                ),
                "responses": _responses(
                    "201",
                    _object(
                        {
                            "device_id": {"type": "string"},
                            "secret_id": {"type": "string"},
                            "secret": {"type": "string"},
                            "expires_at": _TIME,
                        },
                        ("device_id", "secret_id", "secret", "expires_at"),
                    ),
                ),
            }
        },
        "/api/v1/bootstrap-cas": {
            "get": {
                "summary": "List the trusted manufacturer (IDevID) CAs",
                "responses": _responses("200", _items("BootstrapCA")),
            },
            "post": {
                "summary": "Trust a manufacturer CA's IDevIDs for enrollment",
                "requestBody": _json_body(
                    _object(
                        {
                            "name": {"type": "string"},
                            "certificate": {"type": "string", "description": "PEM"},
                            "policy": {"type": "string", "enum": ["registered", "any"]},
                            "profile": {"type": "string"},
                            "approval": {"type": "boolean"},
                        },
                        ("name", "certificate"),
                    )
                ),
                "responses": _responses("201", _ref("BootstrapCA")),
            },
        },
        "/api/v1/bootstrap-cas/{name}/revoke": {
            "post": {
                "summary": "Stop trusting a bootstrap CA",
                "parameters": [_path_param("name")],
                "responses": _responses("200", _ref("BootstrapCA")),
            }
        },
        "/api/v1/enrollment-requests": {
            "get": {
                "summary": "Enrollment requests waiting for (or past) approval",
                "parameters": [
                    _query(
                        "status",
                        {
                            "type": "string",
                            "enum": ["pending", "approved", "rejected", "issued", "all"],
                        },
                    )
                ],
                "responses": _responses("200", _items("EnrollmentRequest")),
            }
        },
        "/api/v1/enrollment-requests/{request_id}/approve": {
            "post": {
                "summary": "Approve a pending enrollment",
                "parameters": [_path_param("request_id")],
                "requestBody": {**approval, "required": False},
                "responses": _responses("200", _ref("EnrollmentRequest")),
            }
        },
        "/api/v1/enrollment-requests/{request_id}/reject": {
            "post": {
                "summary": "Reject a pending enrollment",
                "parameters": [_path_param("request_id")],
                "requestBody": {**approval, "required": False},
                "responses": _responses("200", _ref("EnrollmentRequest")),
            }
        },
    }


def _scep_paths() -> dict[str, Any]:
    """SCEP challenge passwords and pending transactions (RFC 8894)."""
    one = "/api/v1/scep/transactions/{ca}/{transaction_id}"
    decide = {
        "parameters": [_path_param("ca"), _path_param("transaction_id")],
        "responses": _responses("200", _ref("ScepTransaction")),
    }
    return {
        "/api/v1/scep/challenges": {
            "post": {
                "summary": "Create a one-time SCEP challenge password (shown once)",
                "requestBody": _json_body(
                    _object(
                        {
                            "device_id": {"type": "string"},
                            "profile": {"type": "string"},
                            "ca": {"type": "string"},
                            "expires": {"type": "string", "example": "24h"},
                            "approval": {"type": "boolean"},
                        },
                        ("device_id",),
                    )
                ),
                "responses": _responses(
                    "201",
                    _object(
                        {
                            "challenge_id": {"type": "string"},
                            "challenge_password": {"type": "string"},
                            "device_id": {"type": "string"},
                            "profile": {"type": "string"},
                            "ca": _TEXT_OR_NULL,
                            "approval": {"type": "boolean"},
                            "expires_at": _TIME,
                        },
                        ("challenge_id", "challenge_password"),
                    ),
                ),
            }
        },
        "/api/v1/scep/transactions": {
            "get": {
                "summary": "SCEP transactions, newest first",
                "parameters": [
                    _query("status", {"type": "string", "enum": ["pending", "success", "failure"]})
                ],
                "responses": _responses("200", _items("ScepTransaction")),
            }
        },
        f"{one}/approve": {"post": {"summary": "Issue a pending SCEP request", **decide}},
        f"{one}/reject": {"post": {"summary": "Refuse a pending SCEP request", **decide}},
    }


def _acme_paths() -> dict[str, Any]:
    """ACME external account binding credentials and renewal-window overrides (RFC 9773)."""
    return {
        "/api/v1/acme/eab": {
            "get": {
                "summary": "List EAB credentials (without their keys)",
                "responses": _responses("200", _items("EabCredential")),
            },
            "post": {
                "summary": "Create a single-use EAB credential (its HMAC key is shown once)",
                "requestBody": _json_body(
                    _object(
                        {
                            "tenant": {"type": "string"},
                            "profile": {"type": "string"},
                            "device_profile": {"type": "string"},
                            "device_patterns": {"type": "array", "items": {"type": "string"}},
                            "description": {"type": "string"},
                            "lifetime": {"type": "string", "example": "7d"},
                        }
                    )
                ),
                "responses": _responses("201", _ref("EabCredential")),
            },
        },
        "/api/v1/acme/eab/{key_id}/revoke": {
            "post": {
                "summary": "Withdraw an unused EAB credential",
                "parameters": [_path_param("key_id")],
                "responses": _responses(
                    "200",
                    _object(
                        {"key_id": {"type": "string"}, "revoked": {"type": "boolean"}},
                        ("key_id", "revoked"),
                    ),
                ),
            }
        },
        "/api/v1/acme/renewal-info/advance": {
            "post": {
                "summary": "Pull renewal windows forward for matching certificates",
                "requestBody": _json_body(
                    _object(
                        {
                            "serial": {"type": "string"},
                            "ca": {"type": "string"},
                            "profile": {"type": "string"},
                            "issued_before": _TIME,
                            "within": {"type": "string", "example": "6h"},
                            "explanation_url": {"type": "string", "format": "uri"},
                        }
                    )
                ),
                "responses": _responses("201", _ref("RenewalOverride")),
            }
        },
    }


def _operations_paths() -> dict[str, Any]:
    """Usage ingest from brokers and gateways, findings and the compliance report."""
    return {
        "/api/v1/usage/events": {
            "post": {
                "summary": "Report certificate usage (reporter role); a batch is accepted once",
                "requestBody": _json_body(
                    _object(
                        {
                            "nonce": {"type": "string", "pattern": "^[A-Za-z0-9_-]{16,64}$"},
                            "sent_at": _TIME,
                            "events": {
                                "type": "array",
                                "minItems": 1,
                                "maxItems": 1000,
                                "items": _ref("UsageEvent"),
                            },
                        },
                        ("nonce", "sent_at", "events"),
                    )
                ),
                "responses": _responses(
                    "202",
                    _object({"accepted": {"type": "integer", "minimum": 1}}, ("accepted",)),
                ),
            }
        },
        "/api/v1/findings": {
            "get": {
                "summary": "Monitoring findings, most severe first",
                "parameters": [
                    _query("status", {"type": "string", "enum": ["open", "resolved"]}),
                    _query("check", {"type": "string", "pattern": "^[a-z_]{1,64}$"}),
                    *_PAGING,
                ],
                "responses": _responses("200", _items("Finding")),
            }
        },
        "/api/v1/report": {
            "get": {
                "summary": "The compliance report as JSON",
                "responses": _responses(
                    "200",
                    _object(
                        {
                            "generated_at": _TIME,
                            "inventory": {"type": "object"},
                            "key_algorithms": {"type": "object"},
                            "lifetimes_days": {"type": "object"},
                            "cas": {"type": "array"},
                            "lint": {"type": "object"},
                            "findings": {"type": "object"},
                            "audit_chain": {"type": "object"},
                        },
                        ("generated_at", "inventory", "audit_chain"),
                    ),
                ),
            }
        },
    }


def _akca_paths() -> dict[str, Any]:
    """The AK CA (TPM 2.0 credential activation): unauthenticated, rate-limited per address."""
    b64 = {"type": "string", "contentEncoding": "base64"}
    device = {
        "ek_chain": {"type": "array", "minItems": 1, "maxItems": 4, "items": b64},
        "ak_public": {**b64, "description": "TPMT_PUBLIC of the attestation key"},
    }

    def responses(ok_status: str, ok_schema: dict[str, Any]) -> dict[str, Any]:
        shown = _responses(ok_status, ok_schema)
        shown["415"] = {**shown["400"], "description": "not JSON"}
        del shown["401"]
        return shown

    return {
        "/api/v1/akca/challenge": {
            "post": {
                "summary": "Seal a credential to a TPM's EK and AK (TPM2_MakeCredential)",
                "security": [],
                "requestBody": _json_body(_object(device, ("ek_chain", "ak_public"))),
                "responses": responses(
                    "200",
                    _object(
                        {
                            "nonce": b64,
                            "issued_at": _TIME,
                            "credential_blob": b64,
                            "encrypted_secret": b64,
                        },
                        ("nonce", "issued_at", "credential_blob", "encrypted_secret"),
                    ),
                ),
            }
        },
        "/api/v1/akca/activate": {
            "post": {
                "summary": "Prove the released credential and get the AK certificate",
                "security": [],
                "requestBody": _json_body(
                    _object(
                        {**device, "nonce": b64, "issued_at": _TIME, "credential": b64},
                        ("ek_chain", "ak_public", "nonce", "issued_at", "credential"),
                    )
                ),
                "responses": responses(
                    "201",
                    _object(
                        {
                            "serial": {"type": "string"},
                            "permanent_identifier": {"type": "string"},
                            "certificate": {"type": "string"},
                            "chain": {"type": "string"},
                        },
                        ("serial", "certificate", "chain"),
                    ),
                ),
            }
        },
    }
