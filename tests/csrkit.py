"""Hostile PKCS#10 requests built from raw DER, each re-signed so that only the defect differs.

cryptography's builders refuse to make these (duplicate extensions, empty RDNs, a 5-byte
iPAddress): the request info is assembled as bytes here and signed with a real key.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

__all__ = [
    "CN",
    "HOSTILE",
    "KEY",
    "SAN",
    "atv",
    "build_csr",
    "good_csr_der",
    "resign",
    "rsa_spki",
    "tlv",
]

CN = bytes([0x55, 0x04, 0x03])  # 2.5.4.3 commonName
ORG = bytes([0x55, 0x04, 0x0A])  # 2.5.4.10 organizationName
SAN = bytes([0x55, 0x1D, 0x11])  # 2.5.29.17 subjectAltName
_EXTENSION_REQUEST = bytes.fromhex("2a864886f70d01090e")  # 1.2.840.113549.1.9.14
_CHALLENGE_PASSWORD = bytes.fromhex("2a864886f70d010907")  # 1.2.840.113549.1.9.7
_ECDSA_SHA256 = bytes.fromhex("2a8648ce3d040302")  # 1.2.840.10045.4.3.2
_RSA_ENCRYPTION = bytes.fromhex("2a864886f70d010101")
_EC_PUBLIC_KEY = bytes.fromhex("2a8648ce3d0201")
_P256 = bytes.fromhex("2a8648ce3d030107")

KEY = ec.generate_private_key(ec.SECP256R1())
"""The key every CSR here is signed with."""


def tlv(tag: int, content: bytes) -> bytes:
    """One DER element (minimal length)."""
    size = len(content)
    if size < 0x80:
        return bytes([tag, size]) + content
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + content


def atv(oid: bytes, value: bytes, string_tag: int = 0x0C) -> bytes:
    """An AttributeTypeAndValue with a UTF8String (or ``string_tag``) value."""
    return tlv(0x30, tlv(0x06, oid) + tlv(string_tag, value))


def _name(*rdns: bytes) -> bytes:
    return tlv(0x30, b"".join(tlv(0x31, rdn) for rdn in rdns))


def _extension(oid: bytes, value: bytes) -> bytes:
    return tlv(0x30, tlv(0x06, oid) + tlv(0x04, value))


def _spki() -> bytes:
    return KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def rsa_spki(n: int, e: int) -> bytes:
    """An RSA SubjectPublicKeyInfo with any modulus and exponent."""

    def integer(value: int) -> bytes:
        return tlv(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))

    key = tlv(0x30, integer(n) + integer(e))
    algorithm = tlv(0x30, tlv(0x06, _RSA_ENCRYPTION) + b"\x05\x00")
    return tlv(0x30, algorithm + tlv(0x03, b"\x00" + key))


def _ec_spki(point: bytes) -> bytes:
    algorithm = tlv(0x30, tlv(0x06, _EC_PUBLIC_KEY) + tlv(0x06, _P256))
    return tlv(0x30, algorithm + tlv(0x03, b"\x00" + point))


def build_csr(
    *,
    subject: bytes | None = None,
    spki: bytes | None = None,
    extensions: list[bytes] | None = None,
    attributes: list[bytes] | None = None,
    version: bytes = b"\x02\x01\x00",
) -> bytes:
    """A CSR (DER) from raw parts, signed with ECDSA P-256 over the assembled request info."""
    subject = _name(atv(CN, b"dev-1")) if subject is None else subject
    attrs = list(attributes or [])
    if extensions is not None:
        attrs.append(
            tlv(0x30, tlv(0x06, _EXTENSION_REQUEST) + tlv(0x31, tlv(0x30, b"".join(extensions))))
        )
    info = tlv(0x30, version + subject + (spki or _spki()) + tlv(0xA0, b"".join(attrs)))
    return resign(info)


def resign(info: bytes) -> bytes:
    """A CSR (DER) around any request-info bytes, validly signed over exactly those bytes."""
    signature = KEY.sign(info, ec.ECDSA(hashes.SHA256()))
    algorithm = tlv(0x30, tlv(0x06, _ECDSA_SHA256))
    return tlv(0x30, info + algorithm + tlv(0x03, b"\x00" + signature))


def good_csr_der() -> bytes:
    """A valid CSR for dev-1 with a DNS SAN, built the same way as the hostile ones."""
    sans = tlv(0x30, tlv(0x82, b"dev-1.example"))
    return build_csr(extensions=[_extension(SAN, sans)])


def _long_form(der: bytes) -> bytes:
    """The same CSR with its outer length in a needless long form (not DER)."""
    inner = der[2 + (der[1] & 0x7F) if der[1] & 0x80 else 2 :]
    return bytes([0x30, 0x84]) + len(inner).to_bytes(4, "big") + inner


def _hostile() -> dict[str, bytes]:
    rsa_n = rsa.generate_private_key(65537, 2048).public_key().public_numbers().n
    off_curve = b"\x04" + (1).to_bytes(32, "big") + (1).to_bytes(32, "big")
    ip5 = tlv(0x30, tlv(0x87, b"\x0a\x00\x00\x01\x05"))
    one_san = _extension(SAN, tlv(0x30, tlv(0x82, b"dev-1.example")))
    good = good_csr_der()
    return {
        "rsa-exponent-1": build_csr(spki=rsa_spki(rsa_n, 1)),
        "rsa-exponent-even": build_csr(spki=rsa_spki(rsa_n, 65536)),
        "rsa-n3-e3": build_csr(spki=rsa_spki(3, 3)),
        "rsa-exponent-4096-bit": build_csr(spki=rsa_spki(rsa_n, (1 << 4095) | 1)),
        "ec-point-off-curve": build_csr(spki=_ec_spki(off_curve)),
        "ip-san-5-bytes": build_csr(extensions=[_extension(SAN, ip5)]),
        "duplicate-san": build_csr(extensions=[one_san, one_san]),
        "multi-valued-rdn": build_csr(
            subject=_name(b"".join(sorted([atv(CN, b"dev-1"), atv(ORG, b"acme")])))
        ),
        "multi-valued-rdn-unsorted": build_csr(
            subject=_name(atv(CN, b"dev-1") + atv(ORG, b"acme"))
        ),
        "empty-rdn": build_csr(subject=_name(b"", atv(CN, b"dev-1"))),
        "non-utf8-name": build_csr(subject=_name(atv(CN, b"\xff\xfe"))),
        "bad-challenge-password": build_csr(
            attributes=[tlv(0x30, tlv(0x06, _CHALLENGE_PASSWORD) + tlv(0x31, b"\x02\x01\x05"))]
        ),
        "bad-extension-value": build_csr(extensions=[_extension(SAN, b"\x30\x03\x82\x05a")]),
        "long-form-length": _long_form(good),
        "long-form-inner-length": build_csr(version=b"\x02\x81\x01\x00"),
        "long-form-tag": build_csr(version=b"\x1f\x02\x01\x00"),
        "version-2": build_csr(version=b"\x02\x01\x01"),
        "truncated": good[:-7],
        "trailing-garbage": good + b"\x00\x00",
        "not-der": b"hello, CA",
        "empty": b"",
    }


HOSTILE: dict[str, bytes] = _hostile()
"""Hostile CSRs by name: each must be refused by the decoder with its own error."""
