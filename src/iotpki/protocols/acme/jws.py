"""Strict JWS for ACME requests (RFC 8555 section 6.2, RFC 7515), verified with jwcrypto.

Parsing is sans-I/O: :func:`parse` checks the flattened JSON form and the protected header,
:func:`verify` checks the signature with the key the caller found (``jwk`` or ``kid``).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any, Protocol, cast

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from jwcrypto import jwk as jose_jwk
from jwcrypto import jws as jose_jws
from jwcrypto.common import JWException
from jwcrypto.jwa import JWA

from iotpki.protocols.acme.problems import AcmeProblem

__all__ = [
    "ALGORITHMS",
    "SignedRequest",
    "b64url_decode",
    "b64url_encode",
    "json_object",
    "key_authorization",
    "parse",
    "parse_header",
    "public_key",
    "spki_key",
    "thumbprint",
    "verify",
    "verify_mac",
]

# RFC 8555 section 6.2: servers MUST support ES256 and SHOULD support EdDSA; RS256 for older
# clients; ES384 for P-384 account keys. Each algorithm is tied to the one key type it fits.
ALGORITHMS: dict[str, tuple[str, str | None]] = {
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "RS256": ("RSA", None),
    "EdDSA": ("OKP", "Ed25519"),
}
# RFC 7518 section 3.4 and RFC 8037 section 3.1: fixed signature sizes (RSA: the modulus size).
_SIGNATURE_BYTES = {"ES256": 64, "ES384": 96, "EdDSA": 64}


class _Verifier(Protocol):
    """jwcrypto's signing algorithms (``jwcrypto.jwa``), which its stubs leave untyped."""

    def verify(self, key: jose_jwk.JWK, payload: bytes, signature: bytes) -> None:
        """Raise unless ``signature`` is valid over ``payload``."""
        ...


_ENGINES = {alg: cast(_Verifier, JWA.signing_alg(alg)) for alg in ALGORITHMS}
_MAC_ALGORITHMS = ("HS256", "HS384", "HS512")
_FIELDS = {"protected", "payload", "signature"}
_MIN_RSA_BITS = 2048


def b64url_decode(text: str) -> bytes:
    """Decode unpadded base64url (RFC 7515 section 2), refusing other alphabets and padding."""
    if not isinstance(text, str) or "=" in text or "+" in text or "/" in text:
        raise AcmeProblem("malformed", "not unpadded base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise AcmeProblem("malformed", "not unpadded base64url") from exc


def b64url_encode(data: bytes) -> str:
    """Unpadded base64url."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """A parsed, not yet verified, flattened JWS (RFC 7515 section 7.2.2)."""

    signing_input: bytes
    signature: bytes
    header: dict[str, Any]
    payload: bytes
    alg: str
    url: str
    nonce: str | None
    kid: str | None
    jwk: dict[str, Any] | None

    def json_payload(self) -> dict[str, Any]:
        """The payload as a JSON object (an empty payload is POST-as-GET, section 6.3)."""
        if not self.payload:
            raise AcmeProblem("malformed", "this resource needs a JSON object payload")
        try:
            value = json.loads(self.payload)
        except (ValueError, UnicodeDecodeError) as exc:
            raise AcmeProblem("malformed", "the JWS payload is not JSON") from exc
        if not isinstance(value, dict):
            raise AcmeProblem("malformed", "the JWS payload must be a JSON object")
        return value

    @property
    def is_post_as_get(self) -> bool:
        """Whether the payload is the empty string (section 6.3)."""
        return self.payload == b""


def json_object(data: bytes | str, what: str) -> dict[str, Any]:
    """Parse a JSON object, refusing anything else as ``malformed``."""
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise AcmeProblem("malformed", f"{what} is not JSON") from exc
    if not isinstance(value, dict):
        raise AcmeProblem("malformed", f"{what} must be a JSON object")
    return value


def parse_header(protected: str) -> dict[str, Any]:
    """The decoded protected header of a JWS."""
    return json_object(b64url_decode(protected), "the protected header")


def parse(body: bytes | dict[str, Any], *, inner: bool = False) -> SignedRequest:
    """Check the JWS structure and protected header (section 6.2) without verifying it.

    ``inner`` parses the embedded JWS of a key change (section 7.3.5), which carries no nonce.
    """
    obj = body if isinstance(body, dict) else json_object(body, "the request body")
    if set(obj) != _FIELDS:
        raise AcmeProblem(
            "malformed", "a JWS in flattened JSON form with protected, payload and signature only"
        )
    if not all(isinstance(obj[f], str) for f in _FIELDS):
        raise AcmeProblem("malformed", "JWS members must be strings")
    header = json_object(b64url_decode(obj["protected"]), "the protected header")
    payload = b64url_decode(obj["payload"])
    signature = b64url_decode(obj["signature"])
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in ALGORITHMS:
        raise AcmeProblem(
            "badSignatureAlgorithm",
            f"JWS algorithm {alg!r} is not supported",
            extra={"algorithms": sorted(ALGORITHMS)},
        )
    url = header.get("url")
    if not isinstance(url, str) or not url:
        raise AcmeProblem("malformed", "the protected header needs a url (section 6.4)")
    nonce = header.get("nonce")
    if inner:
        if nonce is not None:
            raise AcmeProblem("malformed", "the inner JWS of a key change carries no nonce")
    elif not isinstance(nonce, str) or not nonce:
        raise AcmeProblem("badNonce", "the protected header needs a nonce (section 6.5)")
    kid, key = header.get("kid"), header.get("jwk")
    if (kid is None) == (key is None):
        raise AcmeProblem("malformed", "the protected header needs exactly one of jwk and kid")
    if kid is not None and not isinstance(kid, str):
        raise AcmeProblem("malformed", "kid must be a string")
    if key is not None and not isinstance(key, dict):
        raise AcmeProblem("malformed", "jwk must be a JSON object")
    if "crit" in header or header.get("b64") is False:
        raise AcmeProblem("malformed", "critical header parameters are not supported")
    return SignedRequest(
        signing_input=f"{obj['protected']}.{obj['payload']}".encode(),
        signature=signature,
        header=header,
        payload=payload,
        alg=alg,
        url=url,
        nonce=nonce if isinstance(nonce, str) else None,
        kid=kid,
        jwk=key,
    )


def public_key(jwk: dict[str, Any], alg: str | None = None) -> jose_jwk.JWK:
    """A public account key from a JWK, refusing private members and weak or mismatched keys."""
    if any(member in jwk for member in ("d", "p", "q", "dp", "dq", "qi", "k")):
        raise AcmeProblem("badPublicKey", "the JWK must be a public key")
    try:
        key = jose_jwk.JWK(**jwk)
    except (JWException, ValueError, TypeError) as exc:
        raise AcmeProblem("badPublicKey", f"the JWK does not parse: {exc}") from exc
    kty, crv = jwk.get("kty"), jwk.get("crv")
    fits = [
        a for a, (want_kty, want_crv) in ALGORITHMS.items() if (kty, crv) == (want_kty, want_crv)
    ]
    if kty == "RSA":
        fits = ["RS256"]
        rsa_key = spki_key(key)
        if not isinstance(rsa_key, rsa.RSAPublicKey) or rsa_key.key_size < _MIN_RSA_BITS:
            raise AcmeProblem("badPublicKey", f"RSA account keys need {_MIN_RSA_BITS} bits")
    if not fits:
        raise AcmeProblem("badPublicKey", f"unsupported account key type {kty}/{crv}")
    if alg is not None and alg not in fits:
        raise AcmeProblem(
            "badSignatureAlgorithm",
            f"algorithm {alg} does not fit a {kty} key",
            extra={"algorithms": fits},
        )
    return key


def spki_key(key: jose_jwk.JWK) -> PublicKeyTypes:
    """The account key as a cryptography public key."""
    return serialization.load_pem_public_key(key.export_to_pem())


def thumbprint(key: jose_jwk.JWK) -> str:
    """The RFC 7638 SHA-256 thumbprint, base64url."""
    return str(key.thumbprint())


def key_authorization(token: str, key: jose_jwk.JWK) -> str:
    """``token || '.' || thumbprint`` (RFC 8555 section 8.1)."""
    return f"{token}.{thumbprint(key)}"


def verify(request: SignedRequest, key: jose_jwk.JWK) -> None:
    """Verify the signature with ``key`` under the header's algorithm only."""
    want_kty, want_crv = ALGORITHMS[request.alg]
    if key.get("kty") != want_kty or key.get("crv") != want_crv:
        raise AcmeProblem(
            "badSignatureAlgorithm",
            f"algorithm {request.alg} does not fit the account key",
            extra={"algorithms": sorted(ALGORITHMS)},
        )
    size = _SIGNATURE_BYTES.get(request.alg)
    if size is not None and len(request.signature) != size:
        raise AcmeProblem("malformed", f"an {request.alg} signature has {size} bytes")
    # RFC 7515 section 5.2: the signature over ASCII(protected '.' payload) as received,
    # checked by jwcrypto's implementation of the one algorithm the header names.
    try:
        _ENGINES[request.alg].verify(key, request.signing_input, request.signature)
    except (InvalidSignature, JWException, ValueError, TypeError) as exc:
        raise AcmeProblem("malformed", "the JWS signature does not verify") from exc


def verify_mac(obj: dict[str, Any], secret: bytes) -> tuple[dict[str, Any], bytes]:
    """Check an EAB JWS MACed with ``secret`` (section 7.3.4); returns (header, payload)."""
    if set(obj) != _FIELDS or not all(isinstance(obj[f], str) for f in _FIELDS):
        raise AcmeProblem("malformed", "externalAccountBinding must be a flattened JWS")
    header = json_object(b64url_decode(obj["protected"]), "the EAB protected header")
    alg = header.get("alg")
    if alg not in _MAC_ALGORITHMS:
        raise AcmeProblem(
            "badSignatureAlgorithm",
            "externalAccountBinding must use HS256, HS384 or HS512",
            extra={"algorithms": list(_MAC_ALGORITHMS)},
        )
    key = jose_jwk.JWK(kty="oct", k=b64url_encode(secret))
    token = jose_jws.JWS()
    token.allowed_algs = [str(alg)]
    try:
        token.deserialize(json.dumps(obj), key=key, alg=str(alg))
    except (JWException, ValueError, TypeError) as exc:
        raise AcmeProblem("unauthorized", "the externalAccountBinding MAC does not verify") from exc
    return header, b64url_decode(obj["payload"])
