"""Installation secrets every replica needs (the AK CA's challenge key, the ACME nonce key):
random bytes made once, kept in the database sealed under the passphrase.

Sealing is AES-256-GCM under a key derived from the passphrase with scrypt and a salt of the
secret's own; the secret's name is the associated data, so a sealed value cannot be passed off
as another. A value made by one replica is read by every other one that knows the passphrase.
"""

from __future__ import annotations

import os
import threading

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from iotpki.core.ports.shared import KeyVault
from iotpki.errors import BackendError

__all__ = ["SealedSecrets"]

_SCRYPT_N = 2**15


class SealedSecrets:
    """Named 32-byte secrets, made on first use and unsealed once per process."""

    def __init__(self, vault: KeyVault, passphrase: bytes) -> None:
        self._vault = vault
        self._passphrase = passphrase
        self._open: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> bytes:
        """The secret called ``name`` (made and sealed if no replica made it yet)."""
        with self._lock:
            secret = self._open.get(name)
            if secret is None:
                secret = self._open[name] = self._unseal(name)
        return secret

    def _unseal(self, name: str) -> bytes:
        kept = self._vault.sealed_secret(name)
        if kept is None:
            salt = os.urandom(16)
            nonce = os.urandom(12)
            sealed = nonce + AESGCM(self._key(salt)).encrypt(nonce, os.urandom(32), name.encode())
            kept = self._vault.put_sealed_secret(name, salt, sealed)  # another replica may win
        salt, sealed = kept
        try:
            return AESGCM(self._key(salt)).decrypt(sealed[:12], sealed[12:], name.encode())
        except InvalidTag as exc:
            raise BackendError(f"cannot unseal the secret {name!r}: wrong passphrase") from exc

    def _key(self, salt: bytes) -> bytes:
        return Scrypt(salt=salt, length=32, n=_SCRYPT_N, r=8, p=1).derive(self._passphrase)
