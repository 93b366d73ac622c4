"""The provisioning messages: a signed request in, a JSON answer out.

A request is a compact JWS (RFC 7515) signed with the key of the certificate the device
connected with, that certificate (and any intermediates) in its ``x5c`` header; its payload is
``{"request_id": "...", "csr": "<base64 DER PKCS#10>"}``. The signature binds the request to
that certificate whatever the broker's ACLs say. ``cacerts`` takes any payload.

An answer is a JSON object with the request ID and a ``status``: ``issued`` (``certificate``
and ``chain`` as PEM), ``pending`` (``retry_after`` seconds: an operator approves first),
``cacerts`` (``certificates``) or ``error`` (``error.code`` and ``error.message``).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwcrypto import jwk as jose_jwk
from jwcrypto import jws as jose_jws
from jwcrypto.common import JWException

from iotpki.core.csr import decode_csr
from iotpki.errors import AuthError, IotpkiError, RequestError

__all__ = [
    "MAX_PAYLOAD",
    "SignedRequest",
    "answer",
    "error_answer",
    "parse_request",
    "pem_chain",
    "request_id_of",
    "sign_request",
]

MAX_PAYLOAD = 16 * 1024
_MAX_CHAIN = 4
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_PEM = serialization.Encoding.PEM
_JWS_KEYS = (ec.EllipticCurvePublicKey, rsa.RSAPublicKey, ed25519.Ed25519PublicKey)


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """A verified request: who signed it, its ID and its CSR."""

    signer: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    request_id: str
    csr: x509.CertificateSigningRequest


def _algorithms(key: object) -> list[str]:
    """The JWS algorithms that fit a certificate's key (RFC 7518, RFC 8037)."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        return {"secp256r1": ["ES256"], "secp384r1": ["ES384"]}.get(key.curve.name, [])
    if isinstance(key, rsa.RSAPublicKey):
        return ["RS256", "PS256"]
    if isinstance(key, ed25519.Ed25519PublicKey):
        return ["EdDSA"]
    return []


def _json(data: bytes, what: str) -> dict[str, Any]:
    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        if len({k for k, _ in pairs}) != len(pairs):
            raise ValueError("duplicate member names")
        return dict(pairs)

    try:
        value = json.loads(data.decode("utf-8"), object_pairs_hook=unique)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise RequestError(f"{what} is not UTF-8 JSON") from exc
    if not isinstance(value, dict):
        raise RequestError(f"{what} must be a JSON object")
    return value


def request_id_of(payload: bytes) -> str | None:
    """The request ID a payload carries, read without verifying anything (for error answers)."""
    try:
        text = payload.decode("ascii")
        body = text.split(".")[1] if text.count(".") == 2 else None
        data = _json(base64.urlsafe_b64decode(body + "==") if body else payload, "the payload")
    except (IotpkiError, UnicodeDecodeError, binascii.Error, ValueError):
        return None
    value = data.get("request_id")
    return value if isinstance(value, str) and _REQUEST_ID.fullmatch(value) else None


def _chain(header: dict[str, Any]) -> tuple[x509.Certificate, ...]:
    x5c = header.get("x5c")
    if not isinstance(x5c, list) or not 1 <= len(x5c) <= _MAX_CHAIN:
        raise AuthError("the request's x5c header must hold the client certificate chain")
    try:
        ders = [base64.b64decode(c, validate=True) for c in x5c]
        return tuple(x509.load_der_x509_certificate(der) for der in ders)
    except (TypeError, ValueError, binascii.Error) as exc:
        raise AuthError("the request's x5c header holds a malformed certificate") from exc


def parse_request(payload: bytes) -> SignedRequest:
    """Verify a signed request; RequestError or AuthError (never another exception)."""
    if len(payload) > MAX_PAYLOAD:
        raise RequestError(f"the request exceeds {MAX_PAYLOAD} bytes")
    token = jose_jws.JWS()
    try:
        token.deserialize(payload.decode("ascii"))
        header = token.jose_header
    except (UnicodeDecodeError, JWException, ValueError, TypeError, KeyError) as exc:
        raise RequestError("the request is not a compact JWS") from exc
    if not isinstance(header, dict):
        raise RequestError("the request's JWS header is not an object")
    chain = _chain(header)
    signer = chain[0]
    public = signer.public_key()
    allowed = _algorithms(public)
    if not isinstance(public, _JWS_KEYS) or header.get("alg") not in allowed:
        raise AuthError(f"the request must be signed with the certificate's key ({allowed})")
    token.allowed_algs = allowed
    try:
        token.verify(jose_jwk.JWK.from_pyca(public))
    except (JWException, ValueError, TypeError) as exc:
        raise AuthError("the request's signature does not verify with its certificate") from exc
    body = _json(token.payload, "the request payload")
    request_id = body.get("request_id")
    if not isinstance(request_id, str) or not _REQUEST_ID.fullmatch(request_id):
        raise RequestError("request_id must be 1 to 64 letters, digits or ._:-")
    csr_text = body.get("csr")
    if not isinstance(csr_text, str):
        raise RequestError("the request needs a csr (base64 DER)")
    try:
        der = base64.b64decode(csr_text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError("the csr is not base64") from exc
    return SignedRequest(signer, chain, request_id, decode_csr(der))


def sign_request(
    key: Any,
    chain: Sequence[x509.Certificate],
    request_id: str,
    csr: x509.CertificateSigningRequest,
) -> bytes:
    """A device's signed request (what :func:`parse_request` reads)."""
    public = chain[0].public_key()
    alg = _algorithms(public)[0]
    payload = json.dumps(
        {
            "request_id": request_id,
            "csr": base64.b64encode(csr.public_bytes(serialization.Encoding.DER)).decode(),
        }
    )
    der = [base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode() for c in chain]
    token = jose_jws.JWS(payload.encode())
    token.add_signature(
        jose_jwk.JWK.from_pyca(key), alg=alg, protected=json.dumps({"alg": alg, "x5c": der})
    )
    return str(token.serialize(compact=True)).encode()


def answer(request_id: str | None, status: str, **fields: object) -> bytes:
    """An answer's JSON."""
    return json.dumps({"request_id": request_id, "status": status, **fields}).encode()


def error_answer(request_id: str | None, exc: IotpkiError) -> bytes:
    """The error answer for a refusal."""
    error: dict[str, object] = {"code": exc.code, "message": exc.message}
    if "retry_after" in exc.data:
        error["retry_after"] = exc.data["retry_after"]
    return answer(request_id, "error", error=error)


def pem_chain(certificates: Sequence[x509.Certificate]) -> list[str]:
    """Certificates as PEM strings."""
    return [c.public_bytes(_PEM).decode() for c in certificates]
