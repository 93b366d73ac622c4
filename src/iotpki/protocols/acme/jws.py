"""Strict JWS for ACME requests (RFC 8555 section 6.2, RFC 7515), verified with jwcrypto.

Parsing is sans-I/O: :func:`parse` checks the flattened JSON form and the protected header,
:func:`verify` checks the signature with the key the caller found (``jwk`` or ``kid``).
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from typing import Any, Protocol, cast

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
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
_MAX_RSA_BITS = 8192
_MAX_DEPTH = 32
_MAX_NONCE = 128
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKETS = re.compile(r"[\[\]{}]")
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")
_CURVES: dict[str, ec.EllipticCurve] = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1()}


def b64url_decode(text: str) -> bytes:
    """Decode unpadded base64url (RFC 7515 section 2), refusing other alphabets and padding."""
    if not isinstance(text, str) or not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise AcmeProblem("malformed", "not unpadded base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


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
        return json_object(self.payload, "the JWS payload")

    @property
    def is_post_as_get(self) -> bool:
        """Whether the payload is the empty string (section 6.3)."""
        return self.payload == b""


def json_object(data: bytes | str, what: str) -> dict[str, Any]:
    """Parse a JSON object, refusing anything else as ``malformed``.

    RFC 8259 section 8.1: JSON between systems is UTF-8 (no other encoding, no byte order
    mark); RFC 7515 section 4: no duplicate member names; nesting is bounded.
    """
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError:
        raise AcmeProblem("malformed", f"{what} is not UTF-8 JSON") from None
    if text.startswith("\ufeff"):
        raise AcmeProblem("malformed", f"{what} is not UTF-8 JSON (byte order mark)")
    if _depth_exceeds(text, _MAX_DEPTH):
        raise AcmeProblem("malformed", f"{what} nests deeper than {_MAX_DEPTH} levels")
    try:
        value = json.loads(text, object_pairs_hook=_unique_members, parse_constant=_no_constant)
    except ValueError as exc:
        raise AcmeProblem("malformed", f"{what} is not JSON") from exc
    if not isinstance(value, dict):
        raise AcmeProblem("malformed", f"{what} must be a JSON object")
    return value


def _depth_exceeds(text: str, limit: int) -> bool:
    """Whether arrays and objects nest deeper than ``limit`` (brackets inside strings aside)."""
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    for bracket in _BRACKETS.findall(_STRINGS.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        if depth > limit:
            return True
    return False


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate member names")
    return obj


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


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
    elif len(nonce) > _MAX_NONCE or not _B64URL.fullmatch(nonce):
        # Section 6.5.1: a nonce is a short base64url string; this server never issued it.
        raise AcmeProblem("badNonce", "the nonce is not one this server issues")
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
    """A public account key from a JWK, refusing private members and weak or mismatched keys.

    The whole key is decoded here, once: every member the server reads is checked and the
    key built with cryptography (which refuses off-curve points), so nothing fails later.
    """
    if not isinstance(jwk, dict):
        raise AcmeProblem("malformed", "a JWK is a JSON object")
    if any(member in jwk for member in _PRIVATE_MEMBERS):
        raise AcmeProblem("badPublicKey", "the JWK must be a public key")
    kty, crv = jwk.get("kty"), jwk.get("crv")
    if kty == "RSA":
        fits = ["RS256"]
        key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
        key = _rsa_key(jwk)
    elif kty == "EC" and isinstance(crv, str) and crv in _CURVES:
        fits = [a for a, (want_kty, want_crv) in ALGORITHMS.items() if want_crv == crv]
        key = _ec_key(jwk, str(crv))
    elif kty == "OKP" and crv == "Ed25519":
        fits = ["EdDSA"]
        key = ed25519.Ed25519PublicKey.from_public_bytes(_member(jwk, "x", 32, 32))
    else:
        raise AcmeProblem("badPublicKey", f"unsupported account key type {kty!r}/{crv!r}"[:120])
    if alg is not None and alg not in fits:
        raise AcmeProblem(
            "badSignatureAlgorithm",
            f"algorithm {alg} does not fit a {kty} key",
            extra={"algorithms": fits},
        )
    return jose_jwk.JWK.from_pyca(key)


def _member(jwk: dict[str, Any], name: str, least: int, most: int) -> bytes:
    """A base64url member of a JWK of ``least`` to ``most`` octets (RFC 7518 section 6)."""
    value = jwk.get(name)
    if not isinstance(value, str):
        raise AcmeProblem("malformed", f"the JWK member {name} must be a base64url string")
    raw = b64url_decode(value)
    if not least <= len(raw) <= most:
        raise AcmeProblem("badPublicKey", f"the JWK member {name} has the wrong size")
    return raw


def _rsa_key(jwk: dict[str, Any]) -> rsa.RSAPublicKey:
    """RFC 7518 section 6.3.1: an odd modulus of 2048 to 8192 bits, an odd exponent
    in [3, 2^256) (the bounds of NIST SP 800-56B section 6.2.1)."""
    n = int.from_bytes(_member(jwk, "n", 1, _MAX_RSA_BITS // 8), "big")
    e = int.from_bytes(_member(jwk, "e", 1, 32), "big")
    if n.bit_length() < _MIN_RSA_BITS:
        raise AcmeProblem("badPublicKey", f"RSA account keys need {_MIN_RSA_BITS} bits")
    if n % 2 == 0 or e < 3 or e % 2 == 0:
        raise AcmeProblem("badPublicKey", "the RSA modulus and exponent must be odd, e >= 3")
    try:
        return rsa.RSAPublicNumbers(e, n).public_key()
    except ValueError as exc:
        raise AcmeProblem("badPublicKey", "not a usable RSA public key") from exc


def _ec_key(jwk: dict[str, Any], crv: str) -> ec.EllipticCurvePublicKey:
    """RFC 7518 section 6.2.1: x and y of the curve's full size, a point on the curve."""
    curve = _CURVES[crv]
    size = (curve.key_size + 7) // 8
    x = int.from_bytes(_member(jwk, "x", size, size), "big")
    y = int.from_bytes(_member(jwk, "y", size, size), "big")
    try:
        return ec.EllipticCurvePublicNumbers(x, y, curve).public_key()
    except ValueError as exc:
        raise AcmeProblem("badPublicKey", f"the point is not on {crv}") from exc


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
