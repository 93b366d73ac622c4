"""Property: mutated DER and JSON at the network boundary get the protocol's error form or a
success, never an escaping exception or a 5xx (EST, OCSP GET and POST, the admin API).

In process over ASGI; the client re-raises any exception the app lets escape.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from asn1crypto import algos
from asn1crypto import ocsp as asn1_ocsp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st
from starlette.testclient import TestClient

from csrkit import KEY, resign
from estkit import basic
from fuzzkit import FUZZ, der_mutated, mutated
from iotpki.core.access import create_token
from iotpki.core.authority import Issued
from iotpki.core.models import Role
from iotpki.server import Service, build_http_app, build_https_app, enrollment

from conftest import ManualClock, device_csr, make_installation

_DER = serialization.Encoding.DER
_EST = "https://est.test/.well-known/est"
_OCSP = {"content-type": "application/ocsp-request"}
_JSON = {"content-type": "application/json"}


class Boundary:
    """One installation behind both listeners, with an issued certificate and API tokens."""

    def __init__(self, home: Path) -> None:
        self.inst = make_installation(home, clock=ManualClock(), trusted_proxies=("127.0.0.1",))
        service = Service(self.inst)
        service.revocation.refresh_responders()
        self.https = TestClient(
            build_https_app(service), base_url="https://est.test", client=("127.0.0.1", 4321)
        )
        self.http = TestClient(build_http_app(service))
        self.issued: Issued = self.inst.authority.issue(
            device_csr("dev-0"), profile="device", actor="test"
        )
        clock = self.inst.authority.clock
        self.tokens = {
            role: create_token(self.inst.store, clock, role=role, description="", actor="t")[0]
            for role in (Role.ADMIN, Role.REPORTER)
        }

    def bearer(self, role: Role) -> dict[str, str]:
        """The Authorization header of a role's token."""
        return {"authorization": f"Bearer {self.tokens[role]}"}


@pytest.fixture(scope="module")
def boundary(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Boundary]:
    b = Boundary(tmp_path_factory.mktemp("fuzz") / "home")
    with b.https, b.http:
        yield b
    b.inst.close()


# -- EST ----------------------------------------------------------------------------------------

_CSR = (
    x509.CertificateSigningRequestBuilder()
    .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dev-1")]))
    .sign(KEY, hashes.SHA256())
)
_CSR_DER = _CSR.public_bytes(_DER)
_EST_BODIES = st.one_of(
    mutated(_CSR_DER),
    der_mutated(_CSR.tbs_certrequest_bytes).map(resign),
)


def _est_error(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("text/plain")
        assert response.text.strip()


@FUZZ
@given(der=_EST_BODIES, operation=st.sampled_from(["simpleenroll", "serverkeygen"]))
def test_est_enroll(boundary: Boundary, der: bytes, operation: str) -> None:
    secret, _ = enrollment(boundary.inst).create_secret("dev-1", actor="test")
    response = boundary.https.post(
        f"{_EST}/{operation}",
        content=base64.encodebytes(der),
        headers={"Content-Type": "application/pkcs10", **basic("dev-1", secret)},
    )
    _est_error(response)


@FUZZ
@given(der=_EST_BODIES)
def test_est_reenroll(boundary: Boundary, der: bytes) -> None:
    cert = boundary.issued.certificate.public_bytes(serialization.Encoding.PEM).decode()
    response = boundary.https.post(
        f"{_EST}/simplereenroll",
        content=base64.encodebytes(der),
        headers={"Content-Type": "application/pkcs10", "x-ssl-client-cert": quote(cert)},
    )
    _est_error(response)


# -- OCSP ---------------------------------------------------------------------------------------


def _single(issued: Issued) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(
        issued.certificate, issued.chain[1], hashes.SHA256()
    )
    builder = builder.add_extension(x509.OCSPNonce(b"n" * 16), critical=False)
    return builder.build().public_bytes(_DER)


def _multi(issued: Issued) -> bytes:
    cert_id = ocsp.OCSPRequestBuilder().add_certificate(
        issued.certificate, issued.chain[1], hashes.SHA1()
    )
    one = cert_id.build()
    item = {
        "req_cert": {
            "hash_algorithm": algos.DigestAlgorithm({"algorithm": "sha1"}),
            "issuer_name_hash": one.issuer_name_hash,
            "issuer_key_hash": one.issuer_key_hash,
            "serial_number": one.serial_number,
        }
    }
    return bytes(asn1_ocsp.OCSPRequest({"tbs_request": {"request_list": [item, item]}}).dump())


def _ocsp_answer(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code == 200:
        assert response.headers["content-type"] == "application/ocsp-response"
        ocsp.load_der_ocsp_response(response.content)  # a response, success or error status


@st.composite
def _ocsp_requests(draw: st.DrawFn, boundary: Boundary) -> bytes:
    seed = draw(st.sampled_from([_single(boundary.issued), _multi(boundary.issued)]))
    return draw(st.one_of(mutated(seed), der_mutated(seed)))


@FUZZ
@given(data=st.data())
def test_ocsp_post(boundary: Boundary, data: st.DataObject) -> None:
    der = data.draw(_ocsp_requests(boundary))
    _ocsp_answer(boundary.http.post("/ocsp", content=der, headers=_OCSP))


@FUZZ
@given(data=st.data(), urlsafe=st.booleans())
def test_ocsp_get(boundary: Boundary, data: st.DataObject, urlsafe: bool) -> None:
    der = data.draw(_ocsp_requests(boundary))
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    _ocsp_answer(boundary.http.get("/ocsp/" + encode(der).decode()))


@FUZZ
@given(path=st.text(max_size=200))
def test_ocsp_get_any_path(boundary: Boundary, path: str) -> None:
    _ocsp_answer(boundary.http.get("/ocsp/" + quote(path, safe="/+=")))


# -- the admin API ------------------------------------------------------------------------------

_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=20,
)


def _api_error(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body["error"], str) and isinstance(body["message"], str)


def _issue_seed() -> bytes:
    pem = device_csr("dev-2").public_bytes(serialization.Encoding.PEM).decode()
    return json.dumps({"csr": pem, "profile": "device", "lifetime": "1d"}).encode()


def _events_seed(serial: str) -> bytes:
    now = ManualClock().now().isoformat()
    event = {"serial": serial, "client_id": "c", "source": "198.51.100.7", "time": now}
    return json.dumps({"nonce": secrets.token_hex(16), "sent_at": now, "events": [event]}).encode()


@FUZZ
@given(body=mutated(_issue_seed()))
def test_api_issue_bytes(boundary: Boundary, body: bytes) -> None:
    response = boundary.https.post(
        "/api/v1/certificates", content=body, headers={**_JSON, **boundary.bearer(Role.ADMIN)}
    )
    _api_error(response)


@FUZZ
@given(
    value=_JSON_VALUES,
    route=st.sampled_from(
        [
            ("/api/v1/certificates", Role.ADMIN),
            ("/api/v1/tokens", Role.ADMIN),
            ("/api/v1/usage/events", Role.REPORTER),
            ("/api/v1/devices", Role.ADMIN),
            ("/api/v1/bootstrap-cas", Role.ADMIN),
        ]
    ),
)
def test_api_any_json(boundary: Boundary, value: object, route: tuple[str, Role]) -> None:
    path, role = route
    body = json.dumps(value).encode()
    response = boundary.https.post(path, content=body, headers={**_JSON, **boundary.bearer(role)})
    _api_error(response)


@FUZZ
@given(data=st.data())
def test_api_usage_events_bytes(boundary: Boundary, data: st.DataObject) -> None:
    body = data.draw(mutated(_events_seed(boundary.issued.record.serial)))
    response = boundary.https.post(
        "/api/v1/usage/events", content=body, headers={**_JSON, **boundary.bearer(Role.REPORTER)}
    )
    _api_error(response)
