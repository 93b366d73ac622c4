"""Private-key objects for keys that stay in hardware (a PKCS#11 token, a TPM).

cryptography's builders call ``sign`` on the key object they are given. These bases implement
the rest of cryptography's private-key interfaces for a key whose private half cannot be read:
the public half and sizes, and refusals of export, key agreement and decryption. Each backend
subclasses them and adds ``sign``.
"""

from __future__ import annotations

from typing import ClassVar, NoReturn, Self

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.utils import Buffer

from iotpki.errors import BackendError

__all__ = ["HeldEcKey", "HeldEd25519Key", "HeldKey", "HeldRsaKey", "digest"]


class HeldKey:
    """What every hardware-held key shares: its reference, and refusing to leave."""

    where: ClassVar[str]  # "PKCS#11", "TPM"
    export_refusal: ClassVar[str]  # how the backend words "the private key cannot be read"

    def __init__(self, key_ref: str) -> None:
        self._key_ref = key_ref

    def _refuse(self, what: str) -> NoReturn:
        """Raise for an operation the held key does not offer."""
        raise BackendError(
            f"{self.where} key {self._key_ref} does not support {what}", key_ref=self._key_ref
        )

    def _refuse_export(self) -> NoReturn:
        raise BackendError(
            f"{self.where} key {self._key_ref} {self.export_refusal}", key_ref=self._key_ref
        )

    def private_bytes(
        self,
        encoding: serialization.Encoding,
        format: serialization.PrivateFormat,
        encryption_algorithm: serialization.KeySerializationEncryption,
    ) -> bytes:
        """Refused: the key never leaves its hardware."""
        self._refuse_export()

    def __copy__(self) -> Self:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> Self:
        return self


class HeldEcKey(HeldKey, ec.EllipticCurvePrivateKey):
    """An EC key in hardware; subclasses sign."""

    def __init__(self, key_ref: str, public: ec.EllipticCurvePublicKey) -> None:
        super().__init__(key_ref)
        self._public = public

    def __repr__(self) -> str:
        return f"<{self.where} EC {self._public.curve.name} key {self._key_ref}>"

    @property
    def curve(self) -> ec.EllipticCurve:
        """The curve of the key."""
        return self._public.curve

    @property
    def key_size(self) -> int:
        """Bit size of the curve's order."""
        return self._public.key_size

    def public_key(self) -> ec.EllipticCurvePublicKey:
        """The public half."""
        return self._public

    def exchange(self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        """Refused: the key only signs."""
        self._refuse("key agreement")

    def private_numbers(self) -> ec.EllipticCurvePrivateNumbers:
        """Refused: the key never leaves its hardware."""
        self._refuse_export()


class HeldRsaKey(HeldKey, rsa.RSAPrivateKey):
    """An RSA key in hardware; subclasses sign."""

    def __init__(self, key_ref: str, public: rsa.RSAPublicKey) -> None:
        super().__init__(key_ref)
        self._public = public

    def __repr__(self) -> str:
        return f"<{self.where} RSA-{self.key_size} key {self._key_ref}>"

    @property
    def key_size(self) -> int:
        """Bit length of the modulus."""
        return self._public.key_size

    def public_key(self) -> rsa.RSAPublicKey:
        """The public half."""
        return self._public

    def decrypt(self, ciphertext: bytes, padding: asym_padding.AsymmetricPadding) -> bytes:
        """Refused: the key only signs."""
        self._refuse("decryption")

    def private_numbers(self) -> rsa.RSAPrivateNumbers:
        """Refused: the key never leaves its hardware."""
        self._refuse_export()


class HeldEd25519Key(HeldKey, ed25519.Ed25519PrivateKey):
    """An Ed25519 key in hardware; subclasses sign."""

    def __init__(self, key_ref: str, public: ed25519.Ed25519PublicKey) -> None:
        super().__init__(key_ref)
        self._public = public

    def __repr__(self) -> str:
        return f"<{self.where} Ed25519 key {self._key_ref}>"

    def public_key(self) -> ed25519.Ed25519PublicKey:
        """The public half."""
        return self._public

    def private_bytes_raw(self) -> bytes:
        """Refused: the key never leaves its hardware."""
        self._refuse_export()


def digest(data: Buffer, algorithm: Prehashed | hashes.HashAlgorithm) -> bytes:
    """The digest the hardware signs: computed here, or checked when the caller made it."""
    if isinstance(algorithm, Prehashed):
        value = bytes(data)
        if len(value) != algorithm.digest_size:
            raise ValueError(
                f"a prehashed {algorithm._algorithm.name} digest has {algorithm.digest_size} "
                f"bytes, not {len(value)}"
            )
        return value
    hasher = hashes.Hash(algorithm)
    hasher.update(data)
    return hasher.finalize()
