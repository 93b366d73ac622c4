"""Hostile input on the plain-HTTP listener: OCSP CertIDs out of range, repeated extensions, a
failing backend, and CRL / CA-certificate path parameters."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from asn1crypto import algos, core
from asn1crypto import ocsp as asn1_ocsp
from cryptography.hazmat.primitives import hashes
from cryptography.x509 import ocsp
from starlette.testclient import TestClient

from iotpki.core.authority import Issued
from iotpki.core.responder import OcspResponder
from iotpki.errors import BackendError
from iotpki.server import Service, build_http_app
from iotpki.services.installation import Installation

from conftest import device_csr

_OCSP = {"content-type": "application/ocsp-request"}


@pytest.fixture
def issued(inst: Installation) -> Issued:
    return inst.authority.issue(device_csr("dev-1"), profile="device", actor="test")


@pytest.fixture
def client(inst: Installation, issued: Issued) -> Iterator[TestClient]:
    service = Service(inst)
    service.revocation.refresh_responders()
    with TestClient(build_http_app(service)) as c:
        yield c


def _request(issued: Issued, serials: list[int], extensions: list[object] | None = None) -> bytes:
    one = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(issued.certificate, issued.chain[1], hashes.SHA1())
        .build()
    )
    items = [
        {
            "req_cert": {
                "hash_algorithm": algos.DigestAlgorithm({"algorithm": "sha1"}),
                "issuer_name_hash": one.issuer_name_hash,
                "issuer_key_hash": one.issuer_key_hash,
                "serial_number": serial,
            }
        }
        for serial in serials
    ]
    tbs: dict[str, object] = {"request_list": items}
    if extensions:
        tbs["request_extensions"] = extensions
    return bytes(asn1_ocsp.OCSPRequest({"tbs_request": tbs}).dump())


def _status(client: TestClient, der: bytes) -> ocsp.OCSPResponseStatus:
    reply = client.post("/ocsp", content=der, headers=_OCSP)
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/ocsp-response"
    return ocsp.load_der_ocsp_response(reply.content).response_status


@pytest.mark.parametrize(
    "serials",
    [[-5], [1 << 160], [-5, 7], [7, 1 << 400]],
    ids=["negative", "21-octets", "negative-of-two", "huge-of-two"],
)
def test_certid_serial_out_of_range_is_malformed(
    client: TestClient, issued: Issued, serials: list[int]
) -> None:
    # RFC 5280 section 4.1.2.2: positive, at most 20 octets. These were signed as "unknown".
    status = _status(client, _request(issued, serials))
    assert status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_repeated_nonce_is_malformed(client: TestClient, issued: Issued) -> None:
    nonce = {"extn_id": "nonce", "critical": False, "extn_value": core.OctetString(b"n" * 16)}
    status = _status(client, _request(issued, [7, 8], [nonce, nonce]))
    assert status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_failing_backend_is_try_later(
    client: TestClient, issued: Issued, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*_: object) -> None:
        raise BackendError("the key backend is unavailable")

    monkeypatch.setattr(OcspResponder, "answer_one", fail)
    monkeypatch.setattr(OcspResponder, "answer_many", fail)
    der = _request(issued, [issued.certificate.serial_number])
    assert _status(client, der) is ocsp.OCSPResponseStatus.TRY_LATER


@pytest.mark.parametrize(
    "path",
    [
        "/crl/%00.crl",
        "/crl/" + "a" * 10_000 + ".crl",
        "/crl/%ff%fe.crl",
        "/crl/..%2f..%2fetc.crl",
        "/ca/%00.crt",
        "/ca/%ff.crt",
        "/ca/..%2f.crt",
        "/ca/" + "a" * 10_000 + ".crt",
    ],
)
def test_bad_path_parameters_are_404(client: TestClient, path: str) -> None:
    reply = client.get(path)
    assert reply.status_code == 404
    assert reply.headers["content-type"].startswith("text/plain")


def test_ca_route_looks_up_valid_names_only(
    client: TestClient, inst: Installation, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []
    real = inst.authority.get_ca

    def spy(name: str) -> object:
        asked.append(name)
        return real(name)

    monkeypatch.setattr(inst.authority, "get_ca", spy)
    assert client.get("/ca/" + "A" * 5000 + ".crt").status_code == 404
    assert client.get("/ca/%00.crt").status_code == 404
    assert asked == []
