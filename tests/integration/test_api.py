"""The admin API in process: authentication, roles, errors and audit."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from iotpki.core.access import create_token
from iotpki.core.models import Role
from iotpki.server import Service, build_http_app, build_https_app
from iotpki.services.installation import Installation
from iotpki.store.monitoring import SqlMonitoringStore

from conftest import device_csr


class Api:
    """A synchronous client over the ASGI app, with one token per role."""

    def __init__(self, inst: Installation) -> None:
        service = Service(inst)
        self.https = build_https_app(service)
        self.http = build_http_app(service)
        self.tokens = {
            role: create_token(
                inst.store, inst.authority.clock, role=role, description="", actor="t"
            )[0]
            for role in Role
        }

    def call(
        self, method: str, path: str, role: Role | None = None, **kwargs: object
    ) -> httpx.Response:
        headers = {"authorization": f"Bearer {self.tokens[role]}"} if role else {}
        headers |= kwargs.pop("headers", {})  # type: ignore[arg-type]
        app = self.http if path.startswith(("/ca/", "/crl/", "/ocsp", "/scep")) else self.https

        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="https://testserver"
            ) as client:
                return await client.request(method, path, headers=headers, **kwargs)  # type: ignore[arg-type]

        return asyncio.run(go())


@pytest.fixture
def api(inst: Installation) -> Iterator[Api]:
    yield Api(inst)


def _csr_pem(cn: str = "dev-1") -> str:
    return device_csr(cn).public_bytes(Encoding.PEM).decode()


def test_issue_list_show_revoke(api: Api) -> None:
    created = api.call("POST", "/api/v1/certificates", Role.OPERATOR, json={"csr": _csr_pem()})
    assert created.status_code == 201, created.text
    serial = created.json()["serial"]
    assert created.json()["chain"].count("BEGIN CERTIFICATE") == 2
    listed = api.call("GET", "/api/v1/certificates?q=dev-1", Role.AUDITOR)
    assert [c["serial"] for c in listed.json()["items"]] == [serial]
    shown = api.call("GET", f"/api/v1/certificates/{serial}", Role.AUDITOR)
    assert shown.json()["device_id"] == "dev-1"
    revoked = api.call(
        "POST",
        f"/api/v1/certificates/{serial}/revoke",
        Role.OPERATOR,
        json={"reason": "superseded"},
    )
    assert revoked.json()["status"] == "revoked"
    again = api.call("POST", f"/api/v1/certificates/{serial}/revoke", Role.OPERATOR, json={})
    assert again.status_code == 409


def test_cas_show_expiry(api: Api) -> None:
    cas = api.call("GET", "/api/v1/cas", Role.AUDITOR).json()["items"]
    assert {ca["name"] for ca in cas} == {"root", "issuing"}
    assert all(ca["seconds_until_expiry"] > 0 for ca in cas)


def test_ca_certificate_served_as_der(api: Api) -> None:
    response = api.call("GET", "/ca/root.crt")
    assert response.headers["content-type"] == "application/pkix-cert"
    assert response.content[:1] == b"\x30"
    assert api.call("GET", "/ca/nope.crt").status_code == 404


@pytest.mark.parametrize(
    ("role", "method", "path", "status"),
    [
        (None, "GET", "/api/v1/certificates", 401),
        (Role.AUDITOR, "POST", "/api/v1/certificates", 403),
        (Role.PROVISIONER, "GET", "/api/v1/certificates", 403),
        (Role.OPERATOR, "POST", "/api/v1/tokens", 403),
    ],
)
def test_roles_enforced(api: Api, role: Role | None, method: str, path: str, status: int) -> None:
    response = api.call(method, path, role, json={"csr": _csr_pem(), "role": "admin"})
    assert response.status_code == status
    assert response.json()["error"] in ("unauthorized", "forbidden")


def test_bad_token_refused_and_audited(api: Api, inst: Installation) -> None:
    for token in ("nonsense", "itk_abc_def", api.tokens[Role.ADMIN][:-2] + "xx"):
        response = api.call("GET", "/api/v1/cas", headers={"authorization": f"Bearer {token}"})
        assert response.status_code == 401
    # Repeated anonymous refusals fold into one entry per source and window, counted in full.
    counts = SqlMonitoringStore(inst.store).audit_counts(
        datetime.min.replace(tzinfo=UTC), ["api.denied"]
    )
    assert counts == {"api.denied": 3}


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        (b"{not json", {"content-type": "application/json"}, 400, "malformed"),
        (b'["a list"]', {"content-type": "application/json"}, 400, "malformed"),
        (b'{"csr": "x"}', {"content-type": "text/plain"}, 400, "bad_request"),
        (b'{"csr": "garbage"}', {"content-type": "application/json"}, 400, "malformed"),
        (b'{"csr": 5}', {"content-type": "application/json"}, 400, "bad_request"),
        (b"{}", {"content-type": "application/json"}, 400, "bad_request"),
        (b"x" * 70000, {"content-type": "application/json"}, 413, "too_large"),
    ],
)
def test_malformed_requests(
    api: Api, inst: Installation, body: bytes, headers: dict[str, str], status: int, code: str
) -> None:
    response = api.call("POST", "/api/v1/certificates", Role.ADMIN, content=body, headers=headers)
    assert (response.status_code, response.json()["error"]) == (status, code)
    assert inst.store.count_certificates() == 1  # only the issuing CA's certificate
    assert list(inst.store.audit_events())[-1].action == "api.refused"


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        ({"profile": "nope"}, 404),
        ({"ca": "nope"}, 404),
        ({"lifetime": "900d"}, 400),
        ({"lifetime": "forever"}, 400),
        ({"device_id": "someone-else"}, 400),
    ],
)
def test_policy_refusals(api: Api, payload: dict[str, str], status: int) -> None:
    response = api.call(
        "POST", "/api/v1/certificates", Role.ADMIN, json={"csr": _csr_pem(), **payload}
    )
    assert response.status_code == status, response.text


def test_search_parameters_validated(api: Api) -> None:
    for query in ("limit=100000", "limit=-1", "status=weird", "expiring_before=tomorrow"):
        assert api.call("GET", f"/api/v1/certificates?{query}", Role.ADMIN).status_code == 400
    injection = api.call("GET", "/api/v1/certificates?q=%27%20OR%201%3D1--", Role.ADMIN)
    assert injection.json()["items"] == []


def test_token_creation_and_audit_verify(api: Api) -> None:
    created = api.call("POST", "/api/v1/tokens", Role.ADMIN, json={"role": "auditor"})
    token = created.json()["token"]
    verified = api.call("GET", "/api/v1/audit/verify", headers={"authorization": f"Bearer {token}"})
    assert verified.json()["ok"] is True


def test_openapi_and_health(api: Api) -> None:
    document = api.call("GET", "/api/openapi.json").json()
    assert "/api/v1/certificates" in document["paths"]
    assert api.call("GET", "/healthz").json() == {"status": "ok"}
    metrics = api.call("GET", "/metrics").text
    assert "iotpki_ca_seconds_until_expiry" in metrics


def test_garbage_csr_message_is_plain_words(api: Api) -> None:
    garbage = "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
    response = api.call("POST", "/api/v1/certificates", Role.ADMIN, json={"csr": garbage})
    assert response.status_code == 400
    message = response.json()["message"]
    assert message.startswith("not a valid certificate signing request (PEM or DER): ")
    assert "ParseError" not in message


def test_a_serial_that_is_not_hex_is_malformed(api: Api) -> None:
    response = api.call("GET", "/api/v1/certificates/not-a-serial", Role.ADMIN)
    assert (response.status_code, response.json()["error"]) == (400, "malformed")
    assert response.json()["message"].startswith("not a hexadecimal serial")
