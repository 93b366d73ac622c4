"""The guarded CSR decode: every field read once, each hostile request refused with its reason.

Each case was a 500 before (cryptography parses lazily; the first read of the field raised
``ValueError`` deep inside policy or the authority).
"""

from __future__ import annotations

import base64

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AttributeOID

from csrkit import HOSTILE, build_csr, good_csr_der, rsa_spki
from iotpki.core import policy
from iotpki.core.csr import MAX_RSA_BITS, decode_csr, load_csr, signature_verified
from iotpki.errors import BadCSR, BadSignature

from conftest import device_csr

DER = serialization.Encoding.DER

# (case in csrkit.HOSTILE, the reason the error carries, what its message says)
CASES = [
    ("rsa-exponent-1", "public_key", "e must be >= 3 and < n"),
    ("rsa-exponent-even", "public_key", "e must be odd"),
    ("rsa-n3-e3", "public_key", "e must be >= 3 and < n"),
    ("rsa-exponent-4096-bit", "public_key", "e must be >= 3 and < n"),
    ("ec-point-off-curve", "public_key", "Invalid key"),
    ("ip-san-5-bytes", "extensions", "IPv4 or IPv6"),
    ("duplicate-san", "extensions", "Duplicate 2.5.29.17"),
    ("bad-extension-value", "extensions", "subject_alternative_name"),
    ("multi-valued-rdn", "subject", "multi-valued RDN"),
    ("multi-valued-rdn-unsorted", "encoding", "not in DER order"),
    ("empty-rdn", "subject", "cannot be empty"),
    ("non-utf8-name", "subject", "a value its type does not allow"),
    ("bad-challenge-password", "challenge_password", "not a text string"),
    ("long-form-length", "encoding", "a length inside the DER is wrong"),
    ("long-form-inner-length", "encoding", "a length inside the DER is wrong"),
    ("long-form-tag", "encoding", "not in its shortest form"),
    ("version-2", "encoding", "its version is not one the format defines"),
    ("truncated", "encoding", "the data ends early"),
    ("trailing-garbage", "encoding", "bytes follow the end"),
    ("not-der", "encoding", "not a valid certificate signing request"),
    ("empty", "encoding", "the input is empty"),
]


@pytest.mark.parametrize(("case", "reason", "match"), CASES)
def test_hostile_csr_refused_with_its_reason(case: str, reason: str, match: str) -> None:
    with pytest.raises(BadCSR, match=match) as caught:
        decode_csr(HOSTILE[case])
    assert caught.value.reason == reason
    assert caught.value.status == 400


def test_every_hostile_case_is_covered() -> None:
    assert {case for case, _, _ in CASES} == set(HOSTILE)


def test_forged_body_fails_the_signature() -> None:
    der = device_csr("dev-1").public_bytes(DER)
    with pytest.raises(BadSignature) as caught:
        decode_csr(der.replace(b"dev-1", b"dev-2"))
    assert caught.value.data["reason"] == "signature"


def test_rsa_modulus_above_the_bound() -> None:
    n = (1 << MAX_RSA_BITS) | 0xFFFF  # one bit too long, odd
    with pytest.raises(BadCSR, match=f"above {MAX_RSA_BITS} bits"):
        decode_csr(build_csr(spki=rsa_spki(n, 65537)))


def test_rsa_exponent_of_2_to_the_256_or_more() -> None:
    n = rsa.generate_private_key(65537, 2048).public_key().public_numbers().n
    with pytest.raises(BadCSR, match="2\\*\\*256"):
        decode_csr(build_csr(spki=rsa_spki(n, (1 << 256) + 1)))


def test_repeated_attribute_refused() -> None:
    password = b"\x30\x13\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x09\x07\x31\x06\x0c\x04open"
    with pytest.raises(BadCSR, match=r"repeats the attribute 1\.2\.840\.113549\.1\.9\.7"):
        decode_csr(build_csr(attributes=[password, password]))


def test_multi_valued_attribute_refused() -> None:
    two = b"\x30\x19\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x09\x07\x31\x0c\x0c\x04open\x0c\x04shut"
    with pytest.raises(BadCSR, match="single-valued"):
        decode_csr(build_csr(attributes=[two]))


def test_challenge_password_not_utf8_refused() -> None:
    bad = b"\x30\x13\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x09\x07\x31\x06\x0c\x04\xff\xfe\xfd\xfc"
    with pytest.raises(BadCSR, match="not UTF-8"):
        decode_csr(build_csr(attributes=[bad]))


def test_a_decoded_csr_reads_everywhere() -> None:
    """What the decoder passes, policy and the adapters can read without a guard."""
    csr = decode_csr(good_csr_der())
    assert csr.subject.rfc4514_string() == "CN=dev-1"
    assert csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    profile = policy.profile_from_mapping("device", {})
    policy.check_public_key(csr.public_key(), profile)


def test_challenge_password_kept_readable() -> None:
    builder = x509.CertificateSigningRequestBuilder().subject_name(device_csr("d").subject)
    builder = builder.add_attribute(AttributeOID.CHALLENGE_PASSWORD, b"s3cret")
    signed = builder.sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
    csr = decode_csr(signed.public_bytes(DER))
    assert csr.attributes.get_attribute_for_oid(AttributeOID.CHALLENGE_PASSWORD).value == b"s3cret"


def test_load_csr_takes_pem_and_der() -> None:
    csr = device_csr("dev-1")
    assert load_csr(csr.public_bytes(serialization.Encoding.PEM)) == csr
    assert load_csr(csr.public_bytes(DER)) == csr


def test_load_csr_reads_pem_through() -> None:
    pem = b"-----BEGIN CERTIFICATE REQUEST-----\n"
    pem += base64.encodebytes(HOSTILE["empty-rdn"]) + b"-----END CERTIFICATE REQUEST-----\n"
    with pytest.raises(BadCSR, match="cannot be empty"):
        load_csr(pem)


class _CountingCSR:
    """A decoded CSR whose signature checks are counted."""

    def __init__(self, csr: x509.CertificateSigningRequest) -> None:
        self._csr = csr
        self.checks = 0

    def public_bytes(self, encoding: serialization.Encoding) -> bytes:
        return self._csr.public_bytes(encoding)

    @property
    def is_signature_valid(self) -> bool:
        self.checks += 1
        return self._csr.is_signature_valid


def test_a_decoded_csr_is_not_verified_again() -> None:
    decoded = _CountingCSR(decode_csr(device_csr("dev-once").public_bytes(DER)))
    assert signature_verified(decoded)  # type: ignore[arg-type]
    assert decoded.checks == 0  # decode_csr verified these very bytes


def test_a_csr_not_decoded_is_verified() -> None:
    fresh = _CountingCSR(device_csr("dev-fresh"))
    assert signature_verified(fresh)  # type: ignore[arg-type]
    assert fresh.checks == 1


def test_a_forged_csr_is_verified_each_time_and_refused() -> None:
    der = device_csr("dev-1").public_bytes(DER)
    forged = _CountingCSR(x509.load_der_x509_csr(der.replace(b"dev-1", b"dev-2")))
    assert not signature_verified(forged)  # type: ignore[arg-type]
    assert not signature_verified(forged)  # type: ignore[arg-type]
    assert forged.checks == 2  # a failure is never remembered
