"""COSE_Sign1 against RFC 9052 appendix C.2.1 (the COSE WG example sign1-pass-01)."""

from __future__ import annotations

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from iotpki.errors import BadSignature, MalformedInput
from iotpki.messages.cose import (
    decode_sign1,
    encode_sign1,
    sig_structure,
    sign1,
    verify_sign1,
)

# RFC 9052 appendix C.7.1 / cose-wg Examples: the P-256 key with kid "11".
_X = "bac5b11cad8f99f9c72b05cf4b9e26d244dc189f745228255a219a86d6a09eff"
_Y = "20138bf82dc1b6d562be0fa54ab7804a3a64b6d72ccfed6b6fb6ed28bbfc117e"
_D = "57c92077664146e876760c9520d054aa93c3afb04e306705db6090308507b4d3"
# RFC 9052 appendix C.2.1: Sign1 with ECDSA P-256 over 'This is the content.'
_SIGNATURE = bytes.fromhex(
    "8eb33e4ca31d1c465ab05aac34cc6b23d58fef5c083106c4d25a91aef0b0117e"
    "2af9a291aa32e14ab834dc56ed2a223444547e01f11d3b0916e5a4c345cacb36"
)
_PAYLOAD = b"This is the content."
# sign1-pass-01.json "ToBeSign_hex" and "output.cbor": the exact bytes of the example.
_TO_BE_SIGNED = bytes.fromhex(
    "846a5369676e61747572653143a101264054546869732069732074686520636f6e74656e742e"
)
_MESSAGE = (
    bytes.fromhex("d28443a10126a104423131")
    + bytes([0x54])
    + _PAYLOAD
    + bytes.fromhex("5840")
    + _SIGNATURE
)


def _vector_key() -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(int(_D, 16), ec.SECP256R1())


def test_rfc9052_c21_vector_decodes_and_verifies() -> None:
    public = ec.EllipticCurvePublicNumbers(int(_X, 16), int(_Y, 16), ec.SECP256R1()).public_key()
    message = decode_sign1(_MESSAGE)
    assert message.protected_bytes == bytes.fromhex("a10126")
    assert message.unprotected == {4: b"11"}
    assert message.payload == _PAYLOAD
    assert sig_structure(message.protected_bytes, message.payload) == _TO_BE_SIGNED
    verify_sign1(message, public)
    assert (
        encode_sign1(message.protected_bytes, message.unprotected, _PAYLOAD, _SIGNATURE) == _MESSAGE
    )


def test_signing_reproduces_the_vector_bytes_but_the_random_signature() -> None:
    key = _vector_key()
    ours = sign1(_PAYLOAD, key, unprotected={4: b"11"})
    assert ours[: len(_MESSAGE) - 64] == _MESSAGE[:-64]  # ECDSA signatures are randomised
    verify_sign1(decode_sign1(ours), key.public_key())


def test_tampered_vector_is_refused() -> None:
    public = _vector_key().public_key()
    tampered = _MESSAGE.replace(b"content", b"CONTENT")
    with pytest.raises(BadSignature):
        verify_sign1(decode_sign1(tampered), public)


@pytest.mark.parametrize(
    "key",
    [
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP384R1()),
        ed25519.Ed25519PrivateKey.generate(),
        rsa.generate_private_key(65537, 2048),
    ],
    ids=["ES256", "ES384", "EdDSA", "PS256"],
)
def test_each_algorithm_round_trips(key: object) -> None:
    ours = decode_sign1(sign1(b"telemetry", key, unprotected={4: b"k"}))  # type: ignore[arg-type]
    verify_sign1(ours, key.public_key())  # type: ignore[attr-defined]
    assert cbor2.loads(ours.protected_bytes)[1] in (-7, -35, -8, -37)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff",
        cbor2.dumps([b"", {}, b"x"]),
        cbor2.dumps(cbor2.CBORTag(98, [b"", {}, b"x", b"s"])),
        cbor2.dumps([b"", {}, None, b"s"]),  # detached payload
        cbor2.dumps([b"\x01", {}, b"x", b"s"]),  # protected header not a map
        cbor2.dumps([cbor2.dumps({1: -7}), {1: -7}, b"x", b"s"]),  # label in both buckets
        bytes.fromhex("5bffffffffffffffff"),  # a byte string claiming 2**64-1 bytes
        b"\x81" * 100_000,  # too large
    ],
)
def test_malformed_messages_are_refused(data: bytes) -> None:
    with pytest.raises(MalformedInput):
        decode_sign1(data)


def test_algorithm_must_fit_the_key() -> None:
    ours = sign1(b"x", ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(BadSignature):
        verify_sign1(decode_sign1(ours), ec.generate_private_key(ec.SECP384R1()).public_key())
