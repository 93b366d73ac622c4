"""Hostile ACME requests in process: JWKs that do not decode, RFC 8555 strictness (deactivated
accounts, UTF-8 JSON, base64url payloads, nonce bounds, methods). Each answer is a problem
document, audited, and changes nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jwcrypto.jwa import JWA
from starlette.testclient import TestClient

from acmekit import ACME, Client, acme_app, b64, new_key, problem, sign
from iotpki.protocols.acme import AcmeContext
from iotpki.services.installation import Installation

from conftest import ManualClock, make_installation

JOSE = {"content-type": "application/jose+json"}


@pytest.fixture
def inst(tmp_path: Path, clock: ManualClock) -> Iterator[Installation]:
    installation = make_installation(tmp_path / "home", clock=clock)
    yield installation
    installation.close()


@pytest.fixture
def app(inst: Installation) -> Iterator[tuple[AcmeContext, TestClient]]:
    with acme_app(inst) as running:
        yield running


@pytest.fixture
def http(app: tuple[AcmeContext, TestClient]) -> TestClient:
    return app[1]


def _int(value: int) -> str:
    return b64(value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


def _modulus() -> int:
    return int.from_bytes(b"\xc5" + b"\x17" * 254 + b"\x01", "big")  # odd, 2048 bits


def _raw_post(http: TestClient, url: str, header: dict[str, Any], payload: str) -> Any:
    """A JWS whose members are given as text (signature not checked before the refusal)."""
    protected = b64(json.dumps(header).encode())
    body = {"protected": protected, "payload": payload, "signature": b64(b"\x00" * 256)}
    return http.post(url, content=json.dumps(body), headers=JOSE)


def _events(inst: Installation, action: str) -> list[Any]:
    return [e for e in inst.store.audit_events() if e.action == action]


BAD_JWKS: list[tuple[str, dict[str, Any], str]] = [
    ("rsa n=3 e=3", {"kty": "RSA", "n": _int(3), "e": _int(3)}, "badPublicKey"),
    (
        "rsa 4096-bit e",
        {"kty": "RSA", "n": _int(_modulus()), "e": _int(2**4095 + 1)},
        "badPublicKey",
    ),
    ("rsa even e", {"kty": "RSA", "n": _int(_modulus()), "e": _int(65536)}, "badPublicKey"),
    ("rsa e=1", {"kty": "RSA", "n": _int(_modulus()), "e": _int(1)}, "badPublicKey"),
    ("rsa even n", {"kty": "RSA", "n": _int(_modulus() - 1), "e": "AQAB"}, "badPublicKey"),
    ("rsa n not a string", {"kty": "RSA", "n": 5, "e": "AQAB"}, "malformed"),
    ("rsa n bad base64url", {"kty": "RSA", "n": "!!!!", "e": "AQAB"}, "malformed"),
    (
        "ec off the curve",
        {"kty": "EC", "crv": "P-256", "x": b64(b"\x01" * 32), "y": b64(b"\x02" * 32)},
        "badPublicKey",
    ),
    (
        "ec short x",
        {"kty": "EC", "crv": "P-256", "x": b64(b"\x01"), "y": b64(b"\x02")},
        "badPublicKey",
    ),
    ("ec unknown curve", {"kty": "EC", "crv": "P-999", "x": "AA", "y": "AA"}, "badPublicKey"),
    ("ec padded base64", {"kty": "EC", "crv": "P-256", "x": "AA==", "y": "AA=="}, "malformed"),
    ("okp short", {"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}, "badPublicKey"),
    ("okp unknown curve", {"kty": "OKP", "crv": "X25519", "x": b64(b"\x09" * 32)}, "badPublicKey"),
    ("unknown kty", {"kty": "oct", "k": "AAAA"}, "badPublicKey"),
    ("no kty", {"n": "AQAB"}, "badPublicKey"),
]


@pytest.mark.parametrize(("jwk", "kind"), [c[1:] for c in BAD_JWKS], ids=[c[0] for c in BAD_JWKS])
def test_new_account_with_a_bad_jwk_is_a_problem(
    http: TestClient, inst: Installation, jwk: dict[str, Any], kind: str
) -> None:
    """RFC 8555 section 6.7 (badPublicKey / malformed): a JWK is decoded completely before
    use; an RSA exponent out of [3, 2^256) or a point off the curve was a 500."""
    client = Client(http)
    header = {"alg": "RS256" if jwk.get("kty") == "RSA" else "ES256", "jwk": jwk}
    header |= {"nonce": client.fresh_nonce(), "url": f"{ACME}/new-account"}
    response = _raw_post(http, f"{ACME}/new-account", header, b64(b'{"termsOfServiceAgreed":true}'))
    problem(response, kind, 400)
    assert _events(inst, "acme.refused")[-1].data["type"] == kind
    assert not _events(inst, "acme.account.created")


@pytest.mark.parametrize(("jwk", "kind"), [c[1:] for c in BAD_JWKS], ids=[c[0] for c in BAD_JWKS])
def test_key_change_to_a_bad_jwk_is_a_problem(
    http: TestClient, inst: Installation, jwk: dict[str, Any], kind: str
) -> None:
    """RFC 8555 section 7.3.5 and 6.7: the inner JWS's jwk is decoded as strictly; the
    account keeps its key."""
    client = Client(http)
    assert client.register().status_code == 201
    protected = {"alg": "ES256", "jwk": jwk, "url": f"{ACME}/key-change"}
    inner = {
        "protected": b64(json.dumps(protected).encode()),
        "payload": b64(json.dumps({"account": client.kid, "oldKey": {}}).encode()),
        "signature": b64(b"\x00" * 64),
    }
    problem(client.post(f"{ACME}/key-change", json.dumps(inner).encode()), kind, 400)
    assert not _events(inst, "acme.account.key_changed")
    assert client.post(client.kid, None).json()["status"] == "valid"


def test_deactivated_account_key_at_new_account(http: TestClient, inst: Installation) -> None:
    """RFC 8555 section 7.3.6: a request signed with a deactivated account's key gets 401
    unauthorized, newAccount included (it returned the account, status deactivated)."""
    client = Client(http)
    assert client.register().status_code == 201
    assert client.post(client.kid, {"status": "deactivated"}).json()["status"] == "deactivated"
    again = Client(http, client.key)
    body = problem(again.register(), "unauthorized", 401)
    assert "deactivated" in body["detail"]
    problem(again.register(onlyReturnExisting=True), "unauthorized", 401)
    problem(client.post(client.kid, None), "unauthorized", 401)
    assert len(_events(inst, "acme.account.created")) == 1
    assert _events(inst, "acme.refused")[-1].actor == f"acme:{client.kid.rsplit('/', 1)[-1]}"


def test_utf16_body_is_malformed(http: TestClient) -> None:
    """RFC 8555 section 6.2 and RFC 8259 section 8.1: JSON is exchanged as UTF-8; a UTF-16
    body (which json.loads would auto-detect) is malformed."""
    client = Client(http)
    key = new_key()
    protected = {"nonce": client.fresh_nonce(), "url": f"{ACME}/new-account"}
    protected["jwk"] = json.loads(key.export_public())
    body = json.dumps(sign(key, b'{"termsOfServiceAgreed":true}', protected))
    for encoding in ("utf-16", "utf-16-le", "utf-32"):
        response = http.post(f"{ACME}/new-account", content=body.encode(encoding), headers=JOSE)
        problem(response, "malformed", 400)
    # a UTF-16 payload inside a valid signature, and a byte order mark before UTF-8
    for payload in ('{"termsOfServiceAgreed":true}'.encode("utf-16"), b'\xef\xbb\xbf{"a":1}'):
        protected["nonce"] = client.fresh_nonce()
        signed = sign(key, payload, protected)
        response = http.post(f"{ACME}/new-account", content=json.dumps(signed), headers=JOSE)
        problem(response, "malformed", 400)
    assert Client(http, key).register().status_code == 201  # nothing was created before


def test_payload_that_is_not_base64url_is_not_post_as_get(http: TestClient) -> None:
    """RFC 8555 section 6.3: POST-as-GET is an empty payload ""; RFC 7515 section 2: members
    are base64url. A payload "!!!" (decoded leniently to nothing) is malformed."""
    client = Client(http)
    assert client.register().status_code == 201
    for payload in ("!!!", "e30=", "e30 ", "a"):
        header = {"alg": "ES256", "kid": client.kid, "nonce": client.fresh_nonce()}
        header["url"] = client.kid
        protected = b64(json.dumps(header).encode())
        signature = JWA.signing_alg("ES256").sign(client.key, f"{protected}.{payload}".encode())
        body = {"protected": protected, "payload": payload, "signature": b64(signature)}
        response = http.post(client.kid, content=json.dumps(body), headers=JOSE)
        problem(response, "malformed", 400)
    assert client.post(client.kid, None).status_code == 200  # the real POST-as-GET


def test_oversized_nonce_is_bad_nonce(http: TestClient) -> None:
    """RFC 8555 section 6.5: a nonce the server did not issue is badNonce, a 100 KB one too
    (it was refused as a malformed, too large body)."""
    client = Client(http)
    assert client.register().status_code == 201
    for nonce in ("A" * 100 * 1024, "not base64url!", client.fresh_nonce() + "="):
        body = problem(client.post(f"{ACME}/new-order", {}, nonce=nonce), "badNonce", 400)
        assert len(body["detail"]) < 200


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("TRACE", "/new-order", "POST"),
        ("FOO", "/new-account", "POST"),
        ("GET", "/new-order", "POST"),
        ("TRACE", "/directory", "GET, HEAD"),
        ("POST", "/directory", "GET, HEAD"),
        ("PROPFIND", "/new-nonce", "GET, HEAD"),
        ("DELETE", "/renewal-info/AAAA.AQ", "GET, HEAD"),
    ],
)
def test_unknown_methods_get_405_problems(
    http: TestClient, method: str, path: str, allow: str
) -> None:
    """RFC 9110 section 15.5.6 and RFC 8555 section 6.7: 405 with an Allow header, as an
    application/problem+json document (TRACE and unknown methods got text/plain)."""
    response = http.request(method, f"{ACME}{path}")
    assert response.status_code == 405
    assert response.headers["allow"] == allow
    problem(response, "malformed", 405)
