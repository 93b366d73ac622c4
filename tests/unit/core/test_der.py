"""The DER helper and its callers: the same bytes as the hand-rolled encoders they replaced."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

from iotpki.core.der import oid, sequence, tlv
from iotpki.core.revocation import CrlEntry, build_crl
from iotpki.protocols.est.messages import csr_attributes


def _old_tlv(tag: int, content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        return bytes([tag, size]) + content
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + content


def _old_oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    body = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body.extend(reversed(chunk))
    return _old_tlv(0x06, bytes(body))


@pytest.mark.parametrize("size", [0, 1, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 0x10000])
@pytest.mark.parametrize("tag", [0x02, 0x04, 0x06, 0x0A, 0x30, 0x31, 0xA0, 0xA3, 0x80])
def test_tlv_matches_the_hand_rolled_encoding(tag: int, size: int) -> None:
    content = bytes(i % 251 for i in range(size))
    assert tlv(tag, content) == _old_tlv(tag, content)


@pytest.mark.parametrize(
    "dotted",
    [
        "1.2.840.10045.2.1",
        "1.2.840.10045.3.1.7",
        "1.3.132.0.34",
        "1.2.840.113549.1.1.11",
        "1.3.101.112",
        "2.16.840.1.101.3.4.3.17",
        "2.5.29.21",
        "1.3.6.1.4.1.311.21.7",
        "0.9.2342.19200300.100.1.25",
    ],
)
def test_oid_matches_the_hand_rolled_encoding(dotted: str) -> None:
    assert oid(dotted) == _old_oid(dotted)


def test_sequence_wraps_its_parts() -> None:
    assert sequence(b"\x05\x00", b"\x05\x00") == bytes.fromhex("300405000500")


@pytest.mark.parametrize(
    ("kinds", "expected"),
    [
        ((), "3000"),
        (
            ("p256",),
            "3021301506072a8648ce3d0201310a06082a8648ce3d03010706082a8648ce3d040302",
        ),
        (("p384",), "301e301206072a8648ce3d0201310706052b8104002206082a8648ce3d040303"),
        (("rsa",), "301606092a864886f70d01010106092a864886f70d01010b"),
        (("ed25519",), "300506032b6570"),
        (
            ("p256", "p384", "rsa", "ed25519"),
            "3043301c06072a8648ce3d0201311106082a8648ce3d03010706052b8104002206082a8648ce3d"
            "04030206092a864886f70d01010106092a864886f70d01010b06032b6570",
        ),
        (
            ("p384", "p256"),
            "3028301c06072a8648ce3d0201311106052b8104002206082a8648ce3d03010706082a8648ce3d040303",
        ),
    ],
)
def test_csr_attributes_bytes_unchanged(kinds: tuple[str, ...], expected: str) -> None:
    assert csr_attributes(kinds).hex() == expected


_T0 = datetime(2025, 1, 2, 3, 4, 5)


def _issuer() -> tuple[x509.Certificate, ed25519.Ed25519PrivateKey]:
    key = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))  # Ed25519: deterministic
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "CRL test CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(_T0)
        .not_valid_after(_T0 + timedelta(days=1))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, None)
    )
    return cert, key


def _entries() -> list[CrlEntry]:
    """Short and long serials, UTCTime and GeneralizedTime, every reason, invalidity dates."""
    reasons = [None, "unspecified", "key_compromise", "superseded", "certificate_hold"]
    reasons.append("aa_compromise")
    entries: list[CrlEntry] = []
    for i in range(300):
        serial = (format(i * 7919 + 1, "x") * (1 + i % 40))[:250]
        late = datetime(2051, 1, 1, tzinfo=UTC) + timedelta(minutes=i)
        at = _T0 + timedelta(seconds=i) if i % 3 else late
        invalidity = _T0 - timedelta(days=i) if i % 5 == 0 else None
        entries.append((serial, at, reasons[i % len(reasons)], invalidity))
    return entries


@pytest.mark.parametrize(
    ("kind", "size", "digest"),
    [
        ("complete", 25111, "3801dfc58c1d332c538fa74f1f3a6c13779697a0a027bf8986d2ab15be46a13d"),
        ("delta", 208, "dbae04abc1daca57b36ea8a40cab273a16fe7d8aa7e44300add8d5ab3087a7db"),
        ("freshest", 331, "5295ce9f6382c2a92ebca266a420485da538bf00c3b708de522552faa0c27dd7"),
    ],
)
def test_crl_bytes_unchanged(kind: str, size: int, digest: str) -> None:
    cert, key = _issuer()
    entries = {"complete": _entries(), "delta": [], "freshest": _entries()[:3]}[kind]
    der = build_crl(
        issuer=cert,
        key=key,
        entries=entries,
        number={"complete": 42, "delta": 43, "freshest": 44}[kind],
        this_update=_T0,
        next_update=_T0 + timedelta(days=7),
        delta_base=42 if kind == "delta" else None,
        freshest_url="http://x/crl/d.crl" if kind == "freshest" else None,
    )
    assert (len(der), hashlib.sha256(der).hexdigest()) == (size, digest)
