"""COSE_Sign1 (RFC 9052 section 4.2) encoding, signing and signature verification.

Sans-I/O and small on purpose: the CBOR is done by ``cbor2``; the signature goes through the
private-key object's ``sign`` (cryptography's interface), so a key inside a PKCS#11 token signs
in its token. Algorithms (RFC 9053 section 2): ES256, ES384, EdDSA, PS256.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from iotpki.errors import BadSignature, MalformedInput

__all__ = [
    "ALG",
    "CONTENT_TYPE",
    "CWT_CLAIMS",
    "KID",
    "MAX_MESSAGE",
    "X5CHAIN",
    "Sign1",
    "algorithm_for",
    "decode_sign1",
    "encode_sign1",
    "sig_structure",
    "sign1",
    "verify_sign1",
]

# RFC 9052 section 3.1, RFC 9360 section 2, RFC 9597 section 2: header labels.
ALG = 1
CONTENT_TYPE = 3
KID = 4
CWT_CLAIMS = 15
X5CHAIN = 33
# RFC 9052 section 4.2: the COSE_Sign1 CBOR tag.
SIGN1_TAG = 18
MAX_MESSAGE = 64 * 1024

ES256, ES384, EDDSA, PS256 = -7, -35, -8, -37
_HASHES: dict[int, hashes.HashAlgorithm] = {
    ES256: hashes.SHA256(),
    ES384: hashes.SHA384(),
    PS256: hashes.SHA256(),
}
_EC_SIZES = {ES256: 32, ES384: 48}


@dataclass(frozen=True, slots=True)
class Sign1:
    """A decoded COSE_Sign1: the protected header as sent (bytes) and decoded."""

    protected_bytes: bytes
    protected: dict[Any, Any]
    unprotected: dict[Any, Any]
    payload: bytes
    signature: bytes

    def header(self, label: int) -> Any:
        """A header parameter, protected first (RFC 9052 section 3)."""
        if label in self.protected:
            return self.protected[label]
        return self.unprotected.get(label)


def algorithm_for(key: CertificateIssuerPrivateKeyTypes | CertificatePublicKeyTypes) -> int:
    """The COSE algorithm iotpki signs with for this key type."""
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        if key.curve.name == "secp256r1":
            return ES256
        if key.curve.name == "secp384r1":
            return ES384
    elif isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return EDDSA
    elif isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return PS256
    raise ValueError(f"no COSE algorithm for {type(key).__name__}")


def sig_structure(protected_bytes: bytes, payload: bytes, external_aad: bytes = b"") -> bytes:
    """RFC 9052 section 4.4: ToBeSigned = ["Signature1", protected, external_aad, payload]."""
    return cbor2.dumps(["Signature1", protected_bytes, external_aad, payload])


def _encode_protected(protected: Mapping[Any, Any]) -> bytes:
    """RFC 9052 section 3: an empty protected header is the zero-length byte string."""
    return cbor2.dumps(dict(protected)) if protected else b""


def encode_sign1(
    protected_bytes: bytes, unprotected: Mapping[Any, Any], payload: bytes, signature: bytes
) -> bytes:
    """The tagged COSE_Sign1 array (RFC 9052 section 4.2)."""
    message = [protected_bytes, dict(unprotected), payload, signature]
    return cbor2.dumps(cbor2.CBORTag(SIGN1_TAG, message))


def _raw_signature(key: CertificateIssuerPrivateKeyTypes, alg: int, data: bytes) -> bytes:
    if alg in _EC_SIZES and isinstance(key, ec.EllipticCurvePrivateKey):
        # RFC 9053 section 2.1: r and s, each left-padded to the curve's size.
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(_HASHES[alg])))
        size = _EC_SIZES[alg]
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    if alg == EDDSA and isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    if alg == PS256 and isinstance(key, rsa.RSAPrivateKey):
        # RFC 8230 section 2: PSS with MGF1 of the same hash and a salt of the hash's size.
        pss = padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH)
        return key.sign(data, pss, hashes.SHA256())
    raise ValueError(f"key {type(key).__name__} cannot sign with COSE algorithm {alg}")


def sign1(
    payload: bytes,
    key: CertificateIssuerPrivateKeyTypes,
    *,
    protected: Mapping[Any, Any] | None = None,
    unprotected: Mapping[Any, Any] | None = None,
    external_aad: bytes = b"",
) -> bytes:
    """Sign ``payload`` as a COSE_Sign1; ``alg`` is set in the protected header from the key."""
    alg = algorithm_for(key)
    headers = {ALG: alg, **(protected or {})}
    protected_bytes = _encode_protected(headers)
    signature = _raw_signature(key, alg, sig_structure(protected_bytes, payload, external_aad))
    return encode_sign1(protected_bytes, unprotected or {}, payload, signature)


def decode_sign1(data: bytes) -> Sign1:
    """Parse a tagged or untagged COSE_Sign1; anything else is ``MalformedInput``."""
    if len(data) > MAX_MESSAGE:
        raise MalformedInput(f"message larger than {MAX_MESSAGE} bytes", reason="too_large")
    try:
        decoded = cbor2.loads(data)
        if isinstance(decoded, cbor2.CBORTag):
            if decoded.tag != SIGN1_TAG:
                raise ValueError(f"CBOR tag {decoded.tag} is not COSE_Sign1")
            decoded = decoded.value
        # cbor2 decodes arrays and maps under a tag as tuples and frozendicts.
        if not isinstance(decoded, list | tuple) or len(decoded) != 4:
            raise ValueError("COSE_Sign1 is an array of four")
        protected_bytes, unprotected_map, payload, signature = decoded
        if not isinstance(protected_bytes, bytes) or not isinstance(unprotected_map, Mapping):
            raise ValueError("bad header types")
        unprotected = dict(unprotected_map)
        if not isinstance(payload, bytes) or not isinstance(signature, bytes):
            raise ValueError("detached or non-bytes payload, or bad signature type")
        protected = cbor2.loads(protected_bytes) if protected_bytes else {}
        if not isinstance(protected, dict):
            raise ValueError("the protected header is not a map")
    except (ValueError, TypeError, EOFError, cbor2.CBORDecodeError, RecursionError) as exc:
        raise MalformedInput(f"not a COSE_Sign1 message: {exc}", reason="malformed") from exc
    # RFC 9052 section 3: a label must not appear in both buckets.
    if set(protected) & set(unprotected):
        raise MalformedInput("a header label is both protected and unprotected", reason="malformed")
    return Sign1(protected_bytes, protected, unprotected, payload, signature)


def verify_sign1(message: Sign1, key: CertificatePublicKeyTypes, external_aad: bytes = b"") -> None:
    """Check the signature with ``key``; the algorithm must be the one for that key type."""
    alg = message.protected.get(ALG)
    if alg != algorithm_for(key):
        raise BadSignature(f"algorithm {alg!r} does not fit the signer's key", reason="bad_alg")
    data = sig_structure(message.protected_bytes, message.payload, external_aad)
    signature = message.signature
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            size = _EC_SIZES[alg]
            if len(signature) != 2 * size:
                raise InvalidSignature("wrong signature length")
            der = encode_dss_signature(
                int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
            )
            key.verify(der, data, ec.ECDSA(_HASHES[alg]))
        elif isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, data)
        elif isinstance(key, rsa.RSAPublicKey):
            pss = padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH)
            key.verify(signature, data, pss, hashes.SHA256())
    except InvalidSignature as exc:
        raise BadSignature("the message signature does not verify", reason="bad_signature") from exc
