"""The pkcsPKIEnvelope (RFC 8894 section 3.2.2): CMS EnvelopedData to and from the RA.

Requests are read with :mod:`iotpki.protocols.scep.der` and decrypted with the RA key object
for the key transport, so the key stays in its backend (``key.decrypt`` runs inside it). Replies are
encrypted with pyca/cryptography's ``PKCS7EnvelopeBuilder`` (AES-CBC, RFC 8894 section 3.5.2).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from asn1crypto import algos
from cryptography import x509
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import BlockCipherAlgorithm, Cipher, algorithms, modes
from cryptography.hazmat.primitives.serialization import pkcs7

from iotpki.protocols.scep import der
from iotpki.protocols.scep.messages import FailInfo, ScepFailure

__all__ = ["Envelope", "Recipient", "decrypt", "encrypt", "parse"]

# Content-encryption algorithms accepted in requests: name -> (cipher, key length).
# RC2 and anything else are refused with badAlg.
_CIPHERS: dict[str, tuple[Callable[[bytes], BlockCipherAlgorithm], int, int]] = {
    # name: (cipher, key bytes, block bytes)
    "aes128_cbc": (algorithms.AES, 16, 16),
    "aes192_cbc": (algorithms.AES, 24, 16),
    "aes256_cbc": (algorithms.AES, 32, 16),
    "tripledes_3key": (TripleDES, 24, 8),
    # Legacy single DES: micromdm's scepclient (and old device firmware) encrypt with nothing
    # else whatever GetCACaps says. Accepted for requests only; replies are always AES.
    "des": (lambda key: TripleDES(key * 3), 8, 8),  # DES is 3DES with K1 = K2 = K3
}


@dataclass(frozen=True, slots=True)
class Recipient:
    """Who an envelope is encrypted to: issuer DER and serial, or a subject key identifier."""

    issuer: bytes | None
    serial: int | None
    key_identifier: bytes | None

    def matches(self, certificate: x509.Certificate) -> bool:
        """Whether ``certificate`` is this recipient."""
        if self.serial is not None:
            return (
                certificate.serial_number == self.serial
                and certificate.issuer.public_bytes() == self.issuer
            )
        try:
            ski = certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        except x509.ExtensionNotFound:
            return False
        return ski.value.digest == self.key_identifier


@dataclass(frozen=True, slots=True)
class Envelope:
    """A parsed EnvelopedData: its key-transport recipients and its encrypted content."""

    transports: tuple[tuple[Recipient, list[der.Element]], ...]  # recipient, KTRI fields
    algorithm: str  # the content cipher's OID (dotted) or name
    parameters: der.Element | None
    ciphertext: bytes | None

    @property
    def recipients(self) -> list[Recipient]:
        """Who the content key is encrypted to (to pick the RA)."""
        return [recipient for recipient, _ in self.transports]


_ENVELOPED_DATA = der.oid("1.2.840.113549.1.7.3")
_RSA_PKCS1 = der.oid("1.2.840.113549.1.1.1")
_CIPHER_NAMES = {der.oid(algos.EncryptionAlgorithmId(name).dotted): name for name in _CIPHERS}


def _recipient(rid: der.Element) -> Recipient:
    if rid.is_(0, 16):  # issuerAndSerialNumber
        issuer, serial = der.children(rid)
        return Recipient(issuer.encoded, int.from_bytes(serial.contents, "big", signed=True), None)
    if rid.is_(2, 0):  # [0] subjectKeyIdentifier
        return Recipient(None, None, rid.contents)
    raise ValueError("bad RecipientIdentifier")


def parse(data: bytes) -> Envelope:
    """Read a pkcsPKIEnvelope (RFC 5652 section 6.1); badMessageCheck if it does not parse."""
    try:
        return _parse(data)
    except (ValueError, TypeError, IndexError) as exc:
        raise ScepFailure(
            f"the pkcsPKIEnvelope does not parse: {str(exc)[:120]}", FailInfo.BAD_MESSAGE_CHECK
        ) from None


def _parse(data: bytes) -> Envelope:
    content_type, wrapped = der.children(der.read(data), 16)
    if content_type.encoded != _ENVELOPED_DATA or not wrapped.is_(2, 0):
        raise ValueError("not an EnvelopedData")
    # EnvelopedData ::= SEQUENCE { version, [0] originatorInfo OPTIONAL, recipientInfos,
    #   encryptedContentInfo, [1] unprotectedAttrs OPTIONAL }
    fields = der.children(der.children(wrapped)[0], 16)
    fields = fields[2:] if fields[1].is_(2, 0) else fields[1:]
    transports = []
    for info in der.children(fields[0], 17):
        if info.is_(0, 16):  # KeyTransRecipientInfo; kari, kekri, pwri are [1] to [4]
            # KeyTransRecipientInfo ::= SEQUENCE { version, rid, keyEncryptionAlgorithm,
            #   encryptedKey OCTET STRING }
            ktri = der.children(info)
            if len(ktri) != 4 or not der.children(ktri[2], 16):
                raise ValueError("bad KeyTransRecipientInfo")
            transports.append((_recipient(ktri[1]), ktri))
    # EncryptedContentInfo ::= SEQUENCE { contentType, contentEncryptionAlgorithm,
    #   [0] IMPLICIT encryptedContent OPTIONAL }; BER senders may chunk it (constructed).
    content = der.children(fields[1], 16)
    algorithm = der.children(content[1], 16)
    if not algorithm:
        raise ValueError("no content-encryption algorithm")
    ciphertext = None
    if len(content) > 2 and content[2].is_(2, 0):
        ciphertext = der.octets(content[2])
    return Envelope(
        transports=tuple(transports),
        algorithm=_CIPHER_NAMES.get(algorithm[0].encoded, "unsupported"),
        parameters=algorithm[1] if len(algorithm) > 1 else None,
        ciphertext=ciphertext,
    )


def decrypt(
    envelope: Envelope, certificate: x509.Certificate, key: rsa.RSAPrivateKey
) -> tuple[bytes, str]:
    """The envelope's content and its cipher's name, decrypted by the RA key."""
    transport = next((k for r, k in envelope.transports if r.matches(certificate)), None)
    if transport is None:
        raise ScepFailure("the envelope is not encrypted to this RA", FailInfo.BAD_MESSAGE_CHECK)
    key_algorithm, encrypted_key = transport[2], transport[3]
    if der.children(key_algorithm)[0].encoded != _RSA_PKCS1:
        raise ScepFailure("only RSA PKCS#1 v1.5 key transport is supported", FailInfo.BAD_ALG)
    name = envelope.algorithm
    if name not in _CIPHERS:
        raise ScepFailure("the content encryption is not supported", FailInfo.BAD_ALG)
    make_cipher, key_size, block = _CIPHERS[name]
    iv = envelope.parameters
    ciphertext = envelope.ciphertext
    if iv is None or not iv.is_(0, 4) or len(iv.contents) != block or ciphertext is None:
        raise ScepFailure("bad IV or no encrypted content", FailInfo.BAD_MESSAGE_CHECK)
    if not ciphertext or len(ciphertext) % block or not encrypted_key.is_(0, 4):
        raise ScepFailure("the encrypted content is not whole blocks", FailInfo.BAD_MESSAGE_CHECK)
    try:
        content_key = key.decrypt(encrypted_key.contents, padding.PKCS1v15())
    except ValueError:
        # RFC 3218 section 2.3.2: go on with a random key so that a padding error looks no
        # different from a wrong key (Bleichenbacher); the content check below fails instead.
        content_key = os.urandom(key_size)
    if len(content_key) != key_size:
        content_key = os.urandom(key_size)
    decryptor = Cipher(make_cipher(content_key), modes.CBC(iv.contents)).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    unpadder = sym_padding.PKCS7(block * 8).unpadder()
    try:
        plain = unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise ScepFailure("the envelope does not decrypt", FailInfo.BAD_MESSAGE_CHECK) from None
    return plain, name


def encrypt(content: bytes, recipient: x509.Certificate, request_cipher: str) -> bytes:
    """An EnvelopedData of ``content`` to the requester: AES-256 if it used it, else AES-128."""
    if not isinstance(recipient.public_key(), rsa.RSAPublicKey):
        raise ScepFailure("the requester's certificate has no RSA key", FailInfo.BAD_ALG)
    cipher = algorithms.AES256 if request_cipher == "aes256_cbc" else algorithms.AES128
    return (
        pkcs7.PKCS7EnvelopeBuilder()
        .set_data(content)
        .add_recipient(recipient)
        .set_content_encryption_algorithm(cipher)
        .encrypt(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
    )
