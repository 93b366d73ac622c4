"""Property tests: mutated JWS (raw bytes, flattened members, re-signed protected headers and
payloads) and mutated JWKs for newAccount, newOrder, keyChange and finalize, in process.

Every answer is a success or an RFC 8555 problem document, never a 5xx nor an exception
escaping the application (the test client re-raises those). Deterministic: derandomized
hypothesis, no example database, no deadline.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jwcrypto import jwk
from jwcrypto.jwa import JWA
from starlette.testclient import TestClient

from acmekit import ACME, Client, acme_app, b64, csr_der, eab_binding, new_key
from iotpki.protocols.acme import AcmeContext, eab

from conftest import make_installation

FUZZ = settings(
    max_examples=200,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
JOSE = {"content-type": "application/jose+json"}
PROBLEM = "application/problem+json"

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=24),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
integers_b64 = st.one_of(
    st.integers(0, 2**17), st.integers(0, 2**4200), st.sampled_from([2**256, 2**4095 + 1])
).map(lambda n: b64(n.to_bytes(max(1, (n.bit_length() + 7) // 8), "big")))
b64_text = st.one_of(
    st.binary(max_size=80).map(b64),
    st.text(max_size=40),
    st.text(alphabet="ABCabc012-_=+/!. \n", max_size=40),
    integers_b64,
)


@dataclass
class World:
    """One installation for every example: an account, a ready order and its key."""

    ctx: AcmeContext
    http: TestClient
    client: Client
    finalize_url: str
    rsa: jwk.JWK
    csr: bytes


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    inst = make_installation(
        tmp_path_factory.mktemp("fuzz") / "home",
        acme={"orders_per_account_per_hour": 100_000, "orders_per_identifier_per_hour": 100_000},
    )
    try:
        with acme_app(inst) as (ctx, http):
            credential, hmac_key = eab.create(
                ctx.store,
                now=ctx.now(),
                actor="test",
                profiles=ctx.profiles,
                tenant="fuzz",
                device_patterns=("SN-*",),
            )
            client = Client(http)
            binding = eab_binding(credential.key_id, hmac_key, client.key, f"{ACME}/new-account")
            assert client.register(externalAccountBinding=binding).status_code == 201
            identifiers = [{"type": "permanent-identifier", "value": "SN-0001"}]
            order = client.post(f"{ACME}/new-order", {"identifiers": identifiers}).json()
            assert order["status"] == "ready", order
            csr, _ = csr_der([], cn="SN-0001")
            yield World(ctx, http, client, order["finalize"], new_key("RSA"), csr)
    finally:
        inst.close()


def _alg(key: jwk.JWK) -> str:
    return "RS256" if key.get("kty") == "RSA" else "ES256"


def _sign(key: jwk.JWK, header: dict[str, Any], payload: bytes) -> dict[str, str]:
    """A flattened JWS over any header (jwcrypto refuses to sign odd headers itself)."""
    protected = b64(json.dumps(header).encode())
    encoded = b64(payload)
    signature = JWA.signing_alg(_alg(key)).sign(key, f"{protected}.{encoded}".encode())
    return {"protected": protected, "payload": encoded, "signature": b64(signature)}


def _mutate_object(data: st.DataObject, obj: dict[str, Any], label: str) -> dict[str, Any]:
    """Delete, replace or add one to three members of a JSON object."""
    obj = dict(obj)
    for _ in range(data.draw(st.integers(1, 3), label=f"{label} ops")):
        op = data.draw(st.sampled_from(["delete", "replace", "add", "b64"]), label=label)
        keys = sorted(obj)
        if op == "add" or not keys:
            obj[data.draw(st.text(max_size=8))] = data.draw(json_values)
            continue
        key = data.draw(st.sampled_from(keys), label=f"{label} member")
        if op == "delete":
            del obj[key]
        elif op == "replace":
            obj[key] = data.draw(json_values)
        else:
            obj[key] = data.draw(b64_text)
    return obj


def _mutate_jwk(data: st.DataObject, public: dict[str, Any]) -> dict[str, Any]:
    """JWK members replaced by other base64url values, curves and key types."""
    if data.draw(st.booleans(), label="jwk object mutation"):
        return _mutate_object(data, public, "jwk")
    mutated = dict(public)
    for member in ("n", "e", "x", "y"):
        if member in mutated and data.draw(st.booleans(), label=member):
            mutated[member] = data.draw(st.one_of(integers_b64, b64_text))
    if data.draw(st.booleans(), label="kty/crv"):
        mutated["kty"] = data.draw(st.sampled_from(["RSA", "EC", "OKP", "oct", ""]))
        mutated["crv"] = data.draw(st.sampled_from(["P-256", "P-384", "Ed25519", "X25519", "P-1"]))
    return mutated


def _mutate_bytes(data: st.DataObject, raw: bytes) -> bytes:
    position = data.draw(st.integers(0, len(raw)), label="position")
    op = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]), label="byte op")
    if op == "truncate":
        return raw[:position]
    if op == "insert":
        return raw[:position] + data.draw(st.binary(min_size=1, max_size=16)) + raw[position:]
    if op == "delete":
        return raw[:position] + raw[position + data.draw(st.integers(1, 16)) :]
    index = min(position, len(raw) - 1)
    return raw[:index] + bytes([raw[index] ^ data.draw(st.integers(1, 255))]) + raw[index + 1 :]


LAYERS = ("bytes", "members", "header", "jwk", "payload")


def _mutated_jws(
    data: st.DataObject,
    key: jwk.JWK,
    header: dict[str, Any],
    payload: dict[str, Any] | bytes,
    layers: tuple[str, ...] = LAYERS,
) -> dict[str, Any] | bytes:
    """A JWS mutated in one layer: raw bytes, flattened members, the protected header
    (re-signed), its jwk (re-signed), or the payload (re-signed)."""
    raw_payload = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    layer = data.draw(st.sampled_from(layers), label="layer")
    if layer == "header":
        return _sign(key, _mutate_object(data, header, "header"), raw_payload)
    if layer == "jwk" and "jwk" in header:
        return _sign(key, {**header, "jwk": _mutate_jwk(data, header["jwk"])}, raw_payload)
    if layer == "payload":
        if isinstance(payload, dict) and data.draw(st.booleans(), label="payload object"):
            raw_payload = json.dumps(_mutate_object(data, payload, "payload")).encode()
        else:
            raw_payload = data.draw(
                st.one_of(st.binary(max_size=64), json_values.map(lambda v: json.dumps(v).encode()))
            )
        return _sign(key, header, raw_payload)
    signed = _sign(key, header, raw_payload)
    if layer == "members":
        return _mutate_object(data, signed, "members")
    return _mutate_bytes(data, json.dumps(signed).encode())


def _post(world: World, url: str, body: dict[str, Any] | bytes) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = world.http.post(url, content=content, headers=JOSE)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.headers["content-type"] == PROBLEM, response.text
        assert response.json()["type"].startswith("urn:ietf:params:acme:error:")
        assert response.headers["replay-nonce"]


def _header(world: World, url: str, **extra: Any) -> dict[str, Any]:
    return {"alg": "ES256", "nonce": world.ctx.nonces.issue(), "url": url, **extra}


@FUZZ
@given(data=st.data())
def test_new_account(world: World, data: st.DataObject) -> None:
    key = world.rsa if data.draw(st.booleans(), label="rsa") else new_key()
    url = f"{ACME}/new-account"
    header = _header(world, url, alg=_alg(key), jwk=json.loads(key.export_public()))
    payload = {"termsOfServiceAgreed": True, "contact": ["mailto:ops@example.com"]}
    _post(world, url, _mutated_jws(data, key, header, payload, (*LAYERS, "jwk", "jwk")))


@FUZZ
@given(data=st.data())
def test_new_order(world: World, data: st.DataObject) -> None:
    url = f"{ACME}/new-order"
    header = _header(world, url, kid=world.client.kid)
    payload = {"identifiers": [{"type": "dns", "value": "fuzz.example"}]}
    _post(world, url, _mutated_jws(data, world.client.key, header, payload))


@FUZZ
@given(data=st.data())
def test_key_change(world: World, data: st.DataObject) -> None:
    url = f"{ACME}/key-change"
    replacement = world.rsa if data.draw(st.booleans(), label="rsa") else new_key()
    inner_header = {"alg": _alg(replacement), "url": url}
    inner_header["jwk"] = json.loads(replacement.export_public())
    inner_payload = {
        "account": world.client.kid,
        "oldKey": json.loads(world.client.key.export_public()),
    }
    inner = _sign(replacement, inner_header, json.dumps(inner_payload).encode())
    outer = _header(world, url, kid=world.client.kid)
    body: dict[str, Any] | bytes
    if data.draw(st.booleans(), label="mutate inner"):  # inside a valid outer JWS
        mutated = _mutated_jws(data, replacement, inner_header, inner_payload, (*LAYERS, "jwk"))
        raw = mutated if isinstance(mutated, bytes) else json.dumps(mutated).encode()
        body = _sign(world.client.key, outer, raw)
    else:
        body = _mutated_jws(data, world.client.key, outer, inner)
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = world.http.post(url, content=content, headers=JOSE)
    assert response.status_code < 500, response.text
    if response.status_code == 200:  # the mutation left a valid key change: follow it
        world.client.key = replacement
    else:
        assert response.headers["content-type"] == PROBLEM, response.text


@FUZZ
@given(data=st.data())
def test_finalize(world: World, data: st.DataObject) -> None:
    csr = b64(world.csr)
    if data.draw(st.booleans(), label="mutate csr"):
        csr = data.draw(st.one_of(b64_text, st.just(b64(_mutate_bytes(data, world.csr)))))
    header = _header(world, world.finalize_url, kid=world.client.kid)
    _post(world, world.finalize_url, _mutated_jws(data, world.client.key, header, {"csr": csr}))
