"""A small ACME client that signs real JWS (jwcrypto) over a Starlette TestClient, and an
http-01 responder on 127.0.0.1 for real validation in tests."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from jwcrypto import jwk, jws
from jwcrypto.common import json_encode
from starlette.applications import Starlette
from starlette.testclient import TestClient

from iotpki.protocols.acme import (
    NONCE_SECRET,
    AcmeContext,
    ValidationQueue,
    acme_routes,
    build_context,
)
from iotpki.services.installation import Installation
from iotpki.store.acme import SqlAcmeStore

ACME = "https://acme.test/acme"


async def _no_sleep(_: float) -> None:
    return None


def acme_context(inst: Installation, *, queue: ValidationQueue | None = None) -> AcmeContext:
    """The ACME context of ``inst``, sharing nonces and rate limits through its store."""
    nonce_key = inst.secrets.get(NONCE_SECRET)
    store = SqlAcmeStore(inst.store)
    return build_context(inst.authority, store, inst.settings, inst.store, nonce_key, queue=queue)


@contextmanager
def acme_app(inst: Installation) -> Iterator[tuple[AcmeContext, TestClient]]:
    """The ACME routes of ``inst`` in process, with a manual validation queue."""
    queue = ValidationQueue(manual=True, retry_delays=(1.0, 1.0), sleep=_no_sleep)
    ctx = acme_context(inst, queue=queue)
    with TestClient(Starlette(routes=acme_routes(ctx)), base_url="https://acme.test") as client:
        yield ctx, client


def problem(response: Any, kind: str, status: int | None = None) -> dict[str, Any]:
    """Assert an ACME problem document of ``kind`` (and ``status``) with a fresh nonce."""
    assert response.headers["content-type"] == "application/problem+json", response.text
    assert response.headers.get("replay-nonce")
    body = response.json()
    assert body["type"] == f"urn:ietf:params:acme:error:{kind}", body
    if status is not None:
        assert response.status_code == status
    return body


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def new_key(kty: str = "EC", **params: Any) -> jwk.JWK:
    if kty == "EC":
        return jwk.JWK.generate(kty="EC", crv=params.get("crv", "P-256"))
    if kty == "RSA":
        return jwk.JWK.generate(kty="RSA", size=params.get("size", 2048))
    return jwk.JWK.generate(kty="OKP", crv="Ed25519")


def alg_for(key: jwk.JWK) -> str:
    kty, crv = key.get("kty"), key.get("crv")
    return (
        {"P-256": "ES256", "P-384": "ES384", "Ed25519": "EdDSA"}.get(crv, "RS256")
        if kty != "RSA"
        else "RS256"
    )


def sign(
    key: jwk.JWK,
    payload: bytes,
    protected: dict[str, Any],
    alg: str | None = None,
) -> dict[str, Any]:
    header = {"alg": alg or alg_for(key), **protected}
    token = jws.JWS(payload)
    token.add_signature(key, alg=header["alg"], protected=json_encode(header))
    return json.loads(token.serialize())


def eab_binding(key_id: str, hmac_key_b64: str, account_key: jwk.JWK, url: str) -> dict[str, Any]:
    protected = b64(json.dumps({"alg": "HS256", "kid": key_id, "url": url}).encode())
    payload = b64(account_key.export_public().encode())
    secret = base64.urlsafe_b64decode(hmac_key_b64 + "=" * (-len(hmac_key_b64) % 4))
    mac = hmac.new(secret, f"{protected}.{payload}".encode(), hashlib.sha256).digest()
    return {"protected": protected, "payload": payload, "signature": b64(mac)}


def csr_der(names: list[str], key: Any = None, cn: str | None = None) -> tuple[bytes, Any]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else [])
    )
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        )
    csr = builder.sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.DER), key


class Client:
    """One ACME account's view of the server."""

    def __init__(self, http: TestClient, key: jwk.JWK | None = None) -> None:
        self.http = http
        self.key = key or new_key()
        self.kid: str | None = None
        self.nonce: str | None = None

    def fresh_nonce(self) -> str:
        response = self.http.head(f"{ACME}/new-nonce")
        return response.headers["replay-nonce"]

    def post(
        self,
        url: str,
        payload: dict[str, Any] | bytes | None,
        *,
        use_jwk: bool = False,
        key: jwk.JWK | None = None,
        nonce: str | None = None,
        header_url: str | None = None,
        alg: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> httpx.Response:
        key = key or self.key
        body = (
            b""
            if payload is None
            else payload
            if isinstance(payload, bytes)
            else json.dumps(payload).encode()
        )
        protected: dict[str, Any] = {
            "nonce": nonce or self.nonce or self.fresh_nonce(),
            "url": header_url or url,
        }
        if use_jwk:
            protected["jwk"] = json.loads(key.export_public())
        else:
            protected["kid"] = self.kid
        protected.update(extra or {})
        self.nonce = None
        response = self.http.post(
            url,
            content=json.dumps(sign(key, body, protected, alg)),
            headers={"content-type": "application/jose+json"},
        )
        self.nonce = response.headers.get("replay-nonce")
        return response

    def register(self, **payload: Any) -> httpx.Response:
        response = self.post(
            f"{ACME}/new-account", {"termsOfServiceAgreed": True, **payload}, use_jwk=True
        )
        if response.status_code in (200, 201):
            self.kid = response.headers["location"]
        return response

    def key_authorization(self, token: str) -> str:
        return f"{token}.{self.key.thumbprint()}"


class Http01Responder:
    """Serves /.well-known/acme-challenge/<token> on 127.0.0.1 from a dict; keeps the Host
    header of each request, and answers a token in ``redirects`` with a 302 there."""

    def __init__(self) -> None:
        self.tokens: dict[str, str] = {}
        self.redirects: dict[str, str] = {}
        self.hosts: list[str] = []
        tokens, redirects, hosts = self.tokens, self.redirects, self.hosts

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hosts.append(self.headers.get("host", ""))
                token = self.path.rsplit("/", 1)[-1]
                if token in redirects:
                    self.send_response(302)
                    self.send_header("Location", redirects[token])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = tokens.get(token)
                self.send_response(200 if body else 404)
                data = (body or "not found").encode()
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]

    @contextmanager
    def running(self) -> Iterator[Http01Responder]:
        thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.server.shutdown()
            self.server.server_close()
