"""File key backend: PKCS#8 private keys encrypted with a passphrase, one 0600 file each."""

from __future__ import annotations

import secrets
import threading
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, mldsa, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificateIssuerPublicKeyTypes,
)

from iotpki.core.keytypes import generate_private_key
from iotpki.core.models import KeyAlgorithm
from iotpki.errors import BackendError, ConfigError, KeyMissing
from iotpki.files import write_private

__all__ = ["FileKeyBackend"]

_SIGNING = (
    ec.EllipticCurvePrivateKey,
    rsa.RSAPrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
    mldsa.MLDSA44PrivateKey,
    mldsa.MLDSA65PrivateKey,
    mldsa.MLDSA87PrivateKey,
)


class FileKeyBackend:
    """Keys as encrypted PKCS#8 PEM files under one directory."""

    name = "file"

    def __init__(self, directory: Path, passphrase: bytes) -> None:
        if not passphrase:
            raise ConfigError("the file key backend needs a non-empty passphrase")
        self._dir = directory
        self._passphrase = passphrase
        self._cache: dict[str, CertificateIssuerPrivateKeyTypes] = {}
        self._lock = threading.Lock()

    def generate(self, label: str, algorithm: KeyAlgorithm) -> str:
        """Create a key, store it encrypted, and return its file name as the reference."""
        key = generate_private_key(algorithm)
        key_ref = f"{label}-{secrets.token_hex(4)}.key.pem"
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(self._passphrase),
        )
        write_private(self._dir / key_ref, pem)
        with self._lock:
            self._cache[key_ref] = key
        return key_ref

    def signer(self, key_ref: str) -> CertificateIssuerPrivateKeyTypes:
        """The decrypted key, loaded once and kept in memory."""
        with self._lock:
            key = self._cache.get(key_ref)
        if key is not None:
            return key
        path = self._dir / key_ref
        if "/" in key_ref or not path.is_file():
            raise KeyMissing(f"no key file {key_ref!r}", key_ref=key_ref)
        try:
            loaded = serialization.load_pem_private_key(path.read_bytes(), self._passphrase)
        except (ValueError, TypeError) as exc:
            raise BackendError(
                f"cannot decrypt key {key_ref!r}: wrong passphrase or damaged file",
                key_ref=key_ref,
            ) from exc
        if not isinstance(loaded, _SIGNING):
            raise BackendError(f"key {key_ref!r} cannot sign certificates", key_ref=key_ref)
        with self._lock:
            self._cache[key_ref] = loaded
        return loaded

    def public_key(self, key_ref: str) -> CertificateIssuerPublicKeyTypes:
        """The public half of a stored key."""
        return self.signer(key_ref).public_key()
