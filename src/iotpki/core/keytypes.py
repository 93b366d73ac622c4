"""Key algorithms: generation, recognition and the signature hash each one uses."""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)

from iotpki.core.models import KeyAlgorithm, KeyType
from iotpki.errors import ConfigError

__all__ = [
    "KEY_TYPE_ALIASES",
    "algorithm_of",
    "describe_key",
    "generate_private_key",
    "key_fingerprint",
    "key_type_of",
    "parse_key_type",
    "signature_hash",
]

KEY_TYPE_ALIASES: dict[str, KeyType] = {
    **{alias: KeyType.P256 for alias in ("ec-p256", "ecdsa-p256", "p-256", "secp256r1")},
    **{alias: KeyType.P384 for alias in ("ec-p384", "ecdsa-p384", "p-384", "secp384r1")},
    "prime256v1": KeyType.P256,
    "ml-dsa-44": KeyType.MLDSA44,
    "ml-dsa-65": KeyType.MLDSA65,
}
"""Other spellings of key types accepted where settings are read (curve and FIPS 204 names);
never used inside iotpki, where :class:`KeyType` names them."""

_CURVES: dict[KeyAlgorithm, ec.EllipticCurve] = {
    KeyAlgorithm.P256: ec.SECP256R1(),
    KeyAlgorithm.P384: ec.SECP384R1(),
}
_RSA_BITS = {KeyAlgorithm.RSA2048: 2048, KeyAlgorithm.RSA3072: 3072, KeyAlgorithm.RSA4096: 4096}


def generate_private_key(algorithm: KeyAlgorithm) -> CertificateIssuerPrivateKeyTypes:
    """A fresh software private key of the given algorithm."""
    if algorithm in _CURVES:
        return ec.generate_private_key(_CURVES[algorithm])
    if algorithm in _RSA_BITS:
        return rsa.generate_private_key(public_exponent=65537, key_size=_RSA_BITS[algorithm])
    if algorithm is KeyAlgorithm.ED25519:
        return ed25519.Ed25519PrivateKey.generate()
    if algorithm is KeyAlgorithm.MLDSA44:
        return mldsa.MLDSA44PrivateKey.generate()
    if algorithm is KeyAlgorithm.MLDSA65:
        return mldsa.MLDSA65PrivateKey.generate()
    raise ValueError(f"unsupported key algorithm {algorithm}")


def algorithm_of(key: CertificatePublicKeyTypes) -> KeyAlgorithm | None:
    """The algorithm of a public key, or None if it is none that iotpki knows."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        return {"secp256r1": KeyAlgorithm.P256, "secp384r1": KeyAlgorithm.P384}.get(key.curve.name)
    if isinstance(key, rsa.RSAPublicKey):
        return {2048: KeyAlgorithm.RSA2048, 3072: KeyAlgorithm.RSA3072}.get(
            key.key_size, KeyAlgorithm.RSA4096 if key.key_size >= 4096 else None
        )
    if isinstance(key, ed25519.Ed25519PublicKey):
        return KeyAlgorithm.ED25519
    if isinstance(key, mldsa.MLDSA44PublicKey):
        return KeyAlgorithm.MLDSA44
    if isinstance(key, mldsa.MLDSA65PublicKey):
        return KeyAlgorithm.MLDSA65
    return None


def parse_key_type(text: str) -> KeyType:
    """A key type from settings: its name, or one of :data:`KEY_TYPE_ALIASES`, any case."""
    name = text.strip().lower()
    try:
        return KEY_TYPE_ALIASES.get(name) or KeyType(name)
    except ValueError:
        known = ", ".join(KeyType)
        raise ConfigError(f"unknown key type {text!r}: use one of {known}") from None


def key_type_of(key: CertificatePublicKeyTypes) -> KeyType | None:
    """The key type of a public key (RSA of any size), or None if it is none that iotpki knows."""
    if isinstance(key, rsa.RSAPublicKey):
        return KeyType.RSA
    algorithm = algorithm_of(key)
    return algorithm.key_type if algorithm else None


def describe_key(key: CertificatePublicKeyTypes) -> str:
    """A short human description such as ``RSA-1024`` or ``EC secp224r1``."""
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA-{key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    return type(key).__name__.removesuffix("PublicKey").lstrip("_")


def signature_hash(key: CertificateIssuerPrivateKeyTypes) -> hashes.SHA256 | hashes.SHA384 | None:
    """The hash a CA key signs with (None for Ed25519 and ML-DSA, which hash internally)."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return hashes.SHA384() if key.curve.key_size >= 384 else hashes.SHA256()
    if isinstance(key, rsa.RSAPrivateKey):
        return hashes.SHA256()
    return None


def key_fingerprint(key: CertificatePublicKeyTypes) -> str:
    """SHA-256 over the DER SubjectPublicKeyInfo, lower-case hex."""
    spki = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()
