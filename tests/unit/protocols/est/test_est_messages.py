"""The EST codec: base64 bodies, certs-only CMS, PKCS#10 parsing, CSR attributes, multipart."""

from __future__ import annotations

import base64

import pytest
from asn1crypto import core
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from iotpki.core.policy import DEFAULT_PROFILES
from iotpki.errors import MalformedInput
from iotpki.protocols.est import messages
from iotpki.protocols.est.messages import UnsupportedMediaType

from conftest import device_csr


def test_b64_body_round_trips_in_64_columns() -> None:
    data = bytes(range(256)) * 3
    body = messages.b64_body(data)
    assert all(len(line) <= 64 for line in body.splitlines())
    assert b"\r" not in body
    assert messages.decode_b64(body) == data
    assert messages.decode_b64(body.replace(b"\n", b"\r\n  ")) == data


@pytest.mark.parametrize("body", [b"", b"   ", b"not base64!", b"QUJD=Q", "é".encode()])
def test_decode_b64_refuses(body: bytes) -> None:
    with pytest.raises(MalformedInput):
        messages.decode_b64(body)


def test_parse_csr() -> None:
    csr = device_csr("dev-1")
    body = base64.encodebytes(csr.public_bytes(serialization.Encoding.DER))
    assert messages.parse_csr(body, "application/pkcs10") == csr
    assert messages.parse_csr(body, "Application/PKCS10; charset=x") == csr


def test_parse_csr_wrong_media_type() -> None:
    with pytest.raises(UnsupportedMediaType):
        messages.parse_csr(b"MIIB", "text/plain")
    with pytest.raises(UnsupportedMediaType):
        messages.parse_csr(b"MIIB", None)


def test_parse_csr_not_pkcs10() -> None:
    with pytest.raises(MalformedInput):
        messages.parse_csr(base64.b64encode(b"\x30\x03\x02\x01\x00"), "application/pkcs10")


def test_certs_only_round_trip(inst: object) -> None:
    from iotpki.services.installation import Installation

    assert isinstance(inst, Installation)
    chain = inst.authority.chain("issuing")
    der = messages.certs_only(chain)
    assert der[:1] == b"\x30"
    assert set(messages.parse_certs_only(der)) == set(chain)
    with pytest.raises(MalformedInput):
        messages.parse_certs_only(b"\x30\x00")


def test_csr_attributes_vector() -> None:
    # SEQUENCE { SEQUENCE { id-ecPublicKey, SET { prime256v1 } }, ecdsa-with-SHA256 }
    der = messages.csr_attributes(["p256"])
    assert der == bytes.fromhex(
        "30 21 30 15 06 07 2a 86 48 ce 3d 02 01 31 0a 06 08 2a 86 48 ce 3d 03 01 07"
        " 06 08 2a 86 48 ce 3d 04 03 02".replace(" ", "")
    )
    assert messages.csr_attributes([]) == b"\x30\x00"


def test_csr_attributes_name_ml_dsa_for_a_profile_that_accepts_it() -> None:
    profile = DEFAULT_PROFILES["sub-ca"]
    assert {"mldsa44", "mldsa65"} <= set(profile.key_types)
    attrs = core.Sequence.load(messages.csr_attributes(profile.key_types))
    oids = {
        item.dotted
        for item in (attrs[i] for i in range(len(attrs)))
        if isinstance(item, core.ObjectIdentifier)
    }
    # id-ml-dsa-44 and id-ml-dsa-65 (RFC 9881); id-ml-dsa-87 only where a profile accepts it.
    assert {"2.16.840.1.101.3.4.3.17", "2.16.840.1.101.3.4.3.18"} <= oids
    assert "2.16.840.1.101.3.4.3.19" not in oids
    assert messages.csr_attributes(["mldsa87"]).endswith(bytes.fromhex("0609608648016503040313"))


def test_serverkeygen_multipart_round_trip(inst: object) -> None:
    from iotpki.services.installation import Installation

    assert isinstance(inst, Installation)
    key = ec.generate_private_key(ec.SECP256R1())
    issued = inst.authority.issue(device_csr("dev-k", key=key), profile="device", actor="t")
    key_der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    content_type, body = messages.encode_serverkeygen(key_der, issued.certificate)
    assert content_type.startswith("multipart/mixed; boundary=")
    parts = messages.parse_multipart(content_type, body)
    assert parts == [
        ("application/pkcs8", key_der),
        ("application/pkcs7-mime", messages.certs_only([issued.certificate])),
    ]
    with pytest.raises(MalformedInput):
        messages.parse_multipart("multipart/mixed", body)
    with pytest.raises(MalformedInput):
        messages.parse_multipart("text/plain", body)


@pytest.mark.parametrize(
    "kinds",
    [["p256", "p384", "rsa", "ed25519", "mldsa44"], ["p384"], ["mldsa65", "rsa"], []],
)
def test_csr_attributes_read_back_as_the_key_types_they_name(kinds: list[str]) -> None:
    assert messages.parse_csr_attributes(messages.csr_attributes(kinds)) == sorted(
        kinds, key=["p256", "p384", "rsa", "ed25519", "mldsa44", "mldsa65"].index
    )


@pytest.mark.parametrize("der", [b"", b"\x30\x03\x02\x01", b"garbage", b"\x02\x01\x00"])
def test_csr_attributes_refuse_what_is_no_csrattrs(der: bytes) -> None:
    with pytest.raises(MalformedInput):
        messages.parse_csr_attributes(der)
