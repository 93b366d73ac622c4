"""Hostile bodies on the admin API: a 400 in the API's error form, a refusal audited, nothing
issued. The deep JSON and the lazily parsed CSR fields were 500s before."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from test_api import Api

from csrkit import HOSTILE
from iotpki.core.models import Role
from iotpki.services.installation import Installation

from conftest import device_csr

JSON = {"content-type": "application/json"}


@pytest.fixture
def api(inst: Installation) -> Iterator[Api]:
    yield Api(inst)


def _pem(der: bytes) -> str:
    body = base64.encodebytes(der).decode()
    return f"-----BEGIN CERTIFICATE REQUEST-----\n{body}-----END CERTIFICATE REQUEST-----\n"


@pytest.mark.parametrize("case", sorted(set(HOSTILE) - {"empty"}))
def test_hostile_csr_on_issue(api: Api, inst: Installation, case: str) -> None:
    payload = {"csr": _pem(HOSTILE[case]), "profile": "device"}
    response = api.call("POST", "/api/v1/certificates", Role.ADMIN, json=payload)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "malformed" and body["reason"] and body["message"]
    assert inst.store.count_certificates() == 1  # only the issuing CA's certificate
    event = list(inst.store.audit_events())[-1]
    assert (event.action, event.data["code"]) == ("api.refused", "malformed")


def test_hostile_csr_on_renew(api: Api, inst: Installation) -> None:
    issued = api.call(
        "POST",
        "/api/v1/certificates",
        Role.ADMIN,
        json={"csr": _pem_of("dev-1"), "profile": "device"},
    )
    serial = issued.json()["serial"]
    response = api.call(
        "POST",
        f"/api/v1/certificates/{serial}/renew",
        Role.ADMIN,
        json={"csr": _pem(HOSTILE["ec-point-off-curve"])},
    )
    assert (response.status_code, response.json()["reason"]) == (400, "public_key")
    assert inst.store.count_certificates() == 2


def _pem_of(cn: str) -> str:
    return device_csr(cn).public_bytes(Encoding.PEM).decode()


@pytest.mark.parametrize(
    ("path", "role", "depth", "status", "error"),
    [
        # The finding: 100000-deep JSON on the ingest route (768 KiB limit) was a RecursionError.
        ("/api/v1/usage/events", Role.REPORTER, 100_000, 400, "malformed"),
        ("/api/v1/certificates", Role.ADMIN, 20_000, 400, "malformed"),
        ("/api/v1/tokens", Role.ADMIN, 20_000, 400, "malformed"),
        ("/api/v1/certificates", Role.ADMIN, 100_000, 413, "too_large"),  # 64 KiB limit
        # The ACME admin routes parsed with json.loads of their own: a RecursionError, a 500.
        ("/api/v1/acme/eab", Role.ADMIN, 5_000, 400, "malformed"),
        ("/api/v1/acme/renewal-info/advance", Role.ADMIN, 5_000, 400, "malformed"),
    ],
)
def test_deep_json_is_refused(
    api: Api, inst: Installation, path: str, role: Role, depth: int, status: int, error: str
) -> None:
    body = b'{"events": ' + b"[" * depth + b"]" * depth + b"}"
    response = api.call("POST", path, role, content=body, headers=JSON)
    assert (response.status_code, response.json()["error"]) == (status, error), response.text
    assert list(inst.store.audit_events())[-1].action == "api.refused"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (json.dumps({"csr": "x"}).encode("utf-16"), "encoding"),
        (b'{"csr": NaN}', "syntax"),
        (b'{"csr": "a", "csr": "b"}', "syntax"),
    ],
)
def test_non_json_bodies(api: Api, body: bytes, reason: str) -> None:
    response = api.call("POST", "/api/v1/certificates", Role.ADMIN, content=body, headers=JSON)
    assert (response.status_code, response.json()["reason"]) == (400, reason)
