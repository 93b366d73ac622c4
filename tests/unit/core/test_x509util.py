"""The one issued_by check: name and signature both, never an exception."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from iotpki.core.x509util import issued_by

_NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    subject: str, issuer: str, key: ec.EllipticCurvePrivateKey, signer: ec.EllipticCurvePrivateKey
) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_NOW)
        .not_valid_after(_NOW + timedelta(days=1))
        .sign(signer, hashes.SHA256())
    )


def test_issued_by_needs_the_name_and_the_key() -> None:
    ca_key, other_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = _cert("ca", "ca", ca_key, ca_key)
    same_name_other_key = _cert("ca", "ca", other_key, other_key)
    other_name_same_key = _cert("other", "other", ca_key, ca_key)
    leaf = _cert("leaf", "ca", leaf_key, ca_key)
    assert issued_by(leaf, ca)
    assert issued_by(ca, ca)
    assert not issued_by(leaf, same_name_other_key)
    assert not issued_by(leaf, other_name_same_key)
    assert not issued_by(ca, leaf)


def test_issued_by_an_issuer_of_another_key_type_is_false() -> None:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ed = ed25519.Ed25519PrivateKey.generate()
    ed_ca = (
        x509.CertificateBuilder()
        .subject_name(_name("ca"))
        .issuer_name(_name("ca"))
        .public_key(ed.public_key())
        .serial_number(1)
        .not_valid_before(_NOW)
        .not_valid_after(_NOW + timedelta(days=1))
        .sign(ed, None)
    )
    leaf = _cert("leaf", "ca", ec.generate_private_key(ec.SECP256R1()), ca_key)
    assert not issued_by(leaf, ed_ca)
