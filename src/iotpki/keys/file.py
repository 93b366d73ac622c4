"""The ``file`` key backend: PKCS#8 private keys encrypted under the passphrase, kept in the
database so that every replica that knows the passphrase can sign.

An installation made before keys moved into the database kept one 0600 file per key under
``<home>/keys``; such a key is read from there the first time it is needed and copied into the
database (the file stays, as the operator's backup).
"""

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
from iotpki.core.ports.shared import KeyVault
from iotpki.errors import BackendError, ConfigError, KeyMissing

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
    """Keys as encrypted PKCS#8 PEM in the database (older ones also under a directory)."""

    name = "file"

    def __init__(self, vault: KeyVault, passphrase: bytes, legacy_dir: Path) -> None:
        if not passphrase:
            raise ConfigError("the file key backend needs a non-empty passphrase")
        self._vault = vault
        self._dir = legacy_dir
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
        self._vault.put_wrapped_key(key_ref, pem)
        with self._lock:
            self._cache[key_ref] = key
        return key_ref

    def signer(self, key_ref: str) -> CertificateIssuerPrivateKeyTypes:
        """The decrypted key, loaded once and kept in memory."""
        with self._lock:
            key = self._cache.get(key_ref)
        if key is not None:
            return key
        pem = self._vault.wrapped_key(key_ref)
        legacy = pem is None
        if pem is None:
            pem = self._legacy_file(key_ref)
        try:
            loaded = serialization.load_pem_private_key(pem, self._passphrase)
        except (ValueError, TypeError) as exc:
            raise BackendError(
                f"cannot decrypt key {key_ref!r}: wrong passphrase or damaged key",
                key_ref=key_ref,
            ) from exc
        if not isinstance(loaded, _SIGNING):
            raise BackendError(f"key {key_ref!r} cannot sign certificates", key_ref=key_ref)
        if legacy:
            self._vault.put_wrapped_key(key_ref, pem)  # from now on every replica finds it
        with self._lock:
            self._cache[key_ref] = loaded
        return loaded

    def _legacy_file(self, key_ref: str) -> bytes:
        """The key file an older installation kept under its home."""
        path = self._dir / key_ref
        if "/" in key_ref or not path.is_file():
            raise KeyMissing(f"no key {key_ref!r} in the database", key_ref=key_ref)
        return path.read_bytes()

    def public_key(self, key_ref: str) -> CertificateIssuerPublicKeyTypes:
        """The public half of a stored key."""
        return self.signer(key_ref).public_key()
