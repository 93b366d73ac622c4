"""Client certificates as reverse proxies forward them, and who may forward them."""

from __future__ import annotations

import base64
from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives import serialization
from starlette.requests import Request

from estkit import Manufacturer
from iotpki.errors import Forbidden, MalformedInput
from iotpki.protocols.client_cert import ClientCertSource, parse_forwarded_certificate

CERT = Manufacturer.create().cert
PEM = CERT.public_bytes(serialization.Encoding.PEM).decode()


@pytest.mark.parametrize(
    "value",
    [
        quote(PEM),  # nginx $ssl_client_escaped_cert
        PEM.replace("\n", "\n\t"),  # nginx $ssl_client_cert (deprecated form)
        PEM.replace("\n", " "),  # Apache with line breaks folded
        base64.b64encode(CERT.public_bytes(serialization.Encoding.DER)).decode(),  # HAProxy
    ],
)
def test_forwarded_forms(value: str) -> None:
    assert parse_forwarded_certificate(value) == CERT


@pytest.mark.parametrize("value", ["garbage", "%%%", "A" * 20000, PEM[:200]])
def test_forwarded_garbage(value: str) -> None:
    with pytest.raises(MalformedInput):
        parse_forwarded_certificate(value)


def _request(client: str, headers: dict[str, str]) -> Request:
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": (client, 1234),
    }
    return Request(scope)


def test_header_only_from_trusted_proxies() -> None:
    source = ClientCertSource.from_settings(["10.0.0.0/24", "::1"], "X-SSL-Client-Cert")
    header = {"x-ssl-client-cert": quote(PEM)}
    assert source.certificate(_request("10.0.0.7", header)) == CERT
    assert source.certificate(_request("::1", header)) == CERT
    assert source.certificate(_request("10.0.0.7", {"x-ssl-client-cert": ""})) is None
    with pytest.raises(Forbidden):
        source.certificate(_request("10.0.1.7", header))
    with pytest.raises(Forbidden):
        ClientCertSource().certificate(_request("10.0.0.7", header))


def test_direct_tls_certificate() -> None:
    request = _request("192.0.2.1", {})
    assert ClientCertSource().certificate(request) is None
    request.scope["extensions"] = {"tls": {"client_cert_chain": [PEM]}}
    assert ClientCertSource().certificate(request) == CERT
