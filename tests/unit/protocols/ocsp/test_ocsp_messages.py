"""OCSP request decoding: valid requests, multi-certificate requests, and hostile input."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest
from asn1crypto import algos, core
from asn1crypto import ocsp as asn1_ocsp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID

from iotpki.errors import MalformedInput
from iotpki.protocols.ocsp.messages import decode_get_path, parse_request

_DER = serialization.Encoding.DER


def _cert(serial: int) -> tuple[x509.Certificate, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "CA")])
    now = datetime.now(UTC)
    ca = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return leaf, ca


def _request(serial: int = 77, nonce: bytes | None = None, digest: object = None) -> bytes:
    leaf, ca = _cert(serial)
    builder = ocsp.OCSPRequestBuilder().add_certificate(leaf, ca, digest or hashes.SHA1())  # type: ignore[arg-type]
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(_DER)


def _multi(count: int, nonce: bytes | None = None) -> bytes:
    items = [
        {
            "req_cert": {
                "hash_algorithm": algos.DigestAlgorithm({"algorithm": "sha1"}),
                "issuer_name_hash": b"\x01" * 20,
                "issuer_key_hash": b"\x02" * 20,
                "serial_number": 1000 + i,
            }
        }
        for i in range(count)
    ]
    tbs: dict[str, object] = {"request_list": items}
    if nonce is not None:
        tbs["request_extensions"] = [
            {"extn_id": "nonce", "critical": False, "extn_value": core.OctetString(nonce)}
        ]
    return bytes(asn1_ocsp.OCSPRequest({"tbs_request": tbs}).dump())


def test_single_request() -> None:
    parsed = parse_request(_request(77), max_certs=4, max_nonce=32)
    assert [c.serial for c in parsed.cert_ids] == [77]
    assert parsed.cert_ids[0].hash_algorithm == "sha1"
    assert parsed.nonce is None


def test_sha256_cert_id_and_nonce() -> None:
    parsed = parse_request(_request(5, b"n" * 16, hashes.SHA256()), max_certs=4, max_nonce=32)
    assert parsed.cert_ids[0].hash_algorithm == "sha256"
    assert parsed.nonce == b"n" * 16


def test_several_certificates() -> None:
    parsed = parse_request(_multi(3, b"abc"), max_certs=4, max_nonce=32)
    assert [c.serial for c in parsed.cert_ids] == [1000, 1001, 1002]
    assert parsed.cert_ids[0].issuer_key_hash == b"\x02" * 20
    assert parsed.nonce == b"abc"


def test_too_many_certificates() -> None:
    with pytest.raises(MalformedInput):
        parse_request(_multi(5), max_certs=4, max_nonce=32)


def test_overlong_nonce() -> None:
    with pytest.raises(MalformedInput):
        parse_request(_request(nonce=b"x" * 33), max_certs=4, max_nonce=32)


def test_empty_nonce() -> None:
    with pytest.raises(MalformedInput):
        parse_request(_multi(2, b""), max_certs=4, max_nonce=32)


@pytest.mark.parametrize(
    "der",
    [b"", b"garbage", b"\x30\x00", b"\x30\x82\xff\xff", _request()[:-3], _request() + b"\x00"],
    ids=["empty", "garbage", "empty-seq", "bad-length", "truncated", "trailing"],
)
def test_malformed(der: bytes) -> None:
    with pytest.raises(MalformedInput):
        parse_request(der, max_certs=4, max_nonce=32)


def test_get_path_decoding() -> None:
    der = _request()
    encoded = base64.b64encode(der).decode()
    assert decode_get_path(quote(encoded, safe=""), 8192) == der
    assert decode_get_path(encoded, 8192) == der
    urlsafe = base64.urlsafe_b64encode(der).decode().rstrip("=")
    assert decode_get_path(urlsafe, 8192) == der


@pytest.mark.parametrize("path", ["%%%", "a", "!!!!", "é"])
def test_get_path_not_base64(path: str) -> None:
    with pytest.raises(MalformedInput):
        decode_get_path(path, 8192)


def test_get_path_too_long() -> None:
    with pytest.raises(MalformedInput):
        decode_get_path("A" * 100, 64)
