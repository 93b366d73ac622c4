"""The pkcsPKIEnvelope: ciphers accepted and refused, BER chunked content, broken envelopes."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from asn1crypto import cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import BlockCipherAlgorithm, Cipher, algorithms, modes
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7

from iotpki.protocols.scep import envelope
from iotpki.protocols.scep.messages import FailInfo, ScepFailure
from scepkit import Device, rsa_key

NOW = datetime(2026, 1, 1, tzinfo=UTC)
CONTENT = b"the CSR would be here" * 3


@pytest.fixture(scope="module")
def ra() -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    device = Device("ra", rsa_key(0))
    return device.self_signed(NOW), device.key


def _tlv(tag: int, body: bytes) -> bytes:
    size = len(body)
    if size < 0x80:
        return bytes([tag, size]) + body
    octets = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(octets)]) + octets + body


def _handmade(
    recipient: x509.Certificate,
    algorithm: str,
    cipher: Callable[[bytes], BlockCipherAlgorithm],
    key_size: int,
    block: int,
    *,
    chunks: int = 1,
    content_key: bytes | None = None,
    encrypted_key: bytes | None = None,
) -> bytes:
    """An EnvelopedData built by hand; ``chunks`` > 1 gives a BER constructed encryptedContent."""
    content_key = content_key or os.urandom(key_size)
    iv = os.urandom(block)
    padder = sym_padding.PKCS7(block * 8).padder()
    padded = padder.update(CONTENT) + padder.finalize()
    encryptor = Cipher(cipher(content_key), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    public_key = recipient.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    cert = asn1_x509.Certificate.load(recipient.public_bytes(Encoding.DER))
    ktri = cms.RecipientInfo(
        name="ktri",
        value={
            "version": "v0",
            "rid": {
                "issuer_and_serial_number": {
                    "issuer": cert.issuer,
                    "serial_number": cert.serial_number,
                }
            },
            "key_encryption_algorithm": {"algorithm": "rsaes_pkcs1v15"},
            "encrypted_key": encrypted_key or public_key.encrypt(content_key, padding.PKCS1v15()),
        },
    )
    algorithm_id = cms.EncryptionAlgorithm({"algorithm": algorithm, "parameters": iv})
    if chunks == 1:
        encrypted = _tlv(0x80, ciphertext)
    else:
        step = -(-len(ciphertext) // chunks)
        parts = [ciphertext[i : i + step] for i in range(0, len(ciphertext), step)]
        encrypted = _tlv(0xA0, b"".join(_tlv(0x04, part) for part in parts))
    info = _tlv(0x30, cms.ContentType("data").dump() + algorithm_id.dump() + encrypted)
    enveloped = _tlv(0x30, b"\x02\x01\x00" + _tlv(0x31, ktri.dump()) + info)
    return _tlv(0x30, cms.ContentType("enveloped_data").dump() + _tlv(0xA0, enveloped))


@pytest.mark.parametrize(
    ("name", "cipher", "key_size", "block"),
    [
        ("aes128_cbc", algorithms.AES, 16, 16),
        ("aes192_cbc", algorithms.AES, 24, 16),
        ("aes256_cbc", algorithms.AES, 32, 16),
        ("tripledes_3key", TripleDES, 24, 8),
        ("des", lambda key: TripleDES(key * 3), 8, 8),
    ],
)
def test_accepted_ciphers_decrypt(
    ra: tuple[x509.Certificate, rsa.RSAPrivateKey],
    name: str,
    cipher: Callable[[bytes], BlockCipherAlgorithm],
    key_size: int,
    block: int,
) -> None:
    der = _handmade(ra[0], name, cipher, key_size, block)
    assert envelope.decrypt(envelope.parse(der), *ra) == (CONTENT, name)


def test_ber_constructed_encrypted_content(ra: tuple[x509.Certificate, rsa.RSAPrivateKey]) -> None:
    """micromdm's scepclient sends encryptedContent as [0] constructed OCTET STRING chunks."""
    der = _handmade(ra[0], "des", lambda key: TripleDES(key * 3), 8, 8, chunks=3)
    assert envelope.decrypt(envelope.parse(der), *ra)[0] == CONTENT


def test_cryptography_envelope_round_trip(ra: tuple[x509.Certificate, rsa.RSAPrivateKey]) -> None:
    der = envelope.encrypt(CONTENT, ra[0], "aes256_cbc")
    assert envelope.decrypt(envelope.parse(der), *ra) == (CONTENT, "aes256_cbc")
    plain = pkcs7.pkcs7_decrypt_der(envelope.encrypt(CONTENT, ra[0], "des"), ra[0], ra[1], [])
    assert plain == CONTENT  # replies are AES-128 even to a DES request


def test_unsupported_cipher_is_bad_alg(ra: tuple[x509.Certificate, rsa.RSAPrivateKey]) -> None:
    der = _handmade(ra[0], "aes128_ofb", algorithms.AES, 16, 16)
    with pytest.raises(ScepFailure) as caught:
        envelope.decrypt(envelope.parse(der), *ra)
    assert caught.value.fail_info is FailInfo.BAD_ALG


def test_wrong_content_key_is_bad_message_check(
    ra: tuple[x509.Certificate, rsa.RSAPrivateKey],
) -> None:
    public_key = ra[0].public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    der = _handmade(
        ra[0],
        "aes128_cbc",
        algorithms.AES,
        16,
        16,
        encrypted_key=public_key.encrypt(os.urandom(16), padding.PKCS1v15()),
    )
    with pytest.raises(ScepFailure) as caught:
        envelope.decrypt(envelope.parse(der), *ra)
    assert caught.value.fail_info is FailInfo.BAD_MESSAGE_CHECK


def test_garbage_key_transport_is_bad_message_check(
    ra: tuple[x509.Certificate, rsa.RSAPrivateKey],
) -> None:
    der = _handmade(ra[0], "aes128_cbc", algorithms.AES, 16, 16, encrypted_key=bytes(256))
    with pytest.raises(ScepFailure) as caught:
        envelope.decrypt(envelope.parse(der), *ra)
    assert caught.value.fail_info is FailInfo.BAD_MESSAGE_CHECK


def test_other_recipient_is_bad_message_check(
    ra: tuple[x509.Certificate, rsa.RSAPrivateKey],
) -> None:
    other = Device("other", rsa_key(1)).self_signed(NOW)
    der = envelope.encrypt(CONTENT, other, "aes128_cbc")
    assert envelope.parse(der).recipients[0].matches(other)
    with pytest.raises(ScepFailure) as caught:
        envelope.decrypt(envelope.parse(der), *ra)
    assert caught.value.fail_info is FailInfo.BAD_MESSAGE_CHECK


@pytest.mark.parametrize("der", [b"", b"\x30\x00", b"\x30\x03\x06\x01\x00", bytes(64)])
def test_garbage_envelopes_are_bad_message_check(
    ra: tuple[x509.Certificate, rsa.RSAPrivateKey], der: bytes
) -> None:
    with pytest.raises(ScepFailure) as caught:
        envelope.decrypt(envelope.parse(der), *ra)
    assert caught.value.fail_info is FailInfo.BAD_MESSAGE_CHECK


def test_truncated_envelope_is_bad_message_check(
    ra: tuple[x509.Certificate, rsa.RSAPrivateKey],
) -> None:
    der = envelope.encrypt(CONTENT, ra[0], "aes128_cbc")
    with pytest.raises(ScepFailure):
        envelope.decrypt(envelope.parse(der[:-20]), *ra)
