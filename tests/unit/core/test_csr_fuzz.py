"""Property: a mutated CSR is refused by the decoder with the project's error, or decodes into
a request that policy, the ACME name check and the SCEP password read can use without raising
anything but the project's errors."""

from __future__ import annotations

import contextlib
import ipaddress
from datetime import UTC, datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import AttributeOID, ExtendedKeyUsageOID, NameOID
from hypothesis import given

from csrkit import KEY, resign
from fuzzkit import FUZZ, der_mutated, mutated
from iotpki.core import policy
from iotpki.core.csr import decode_csr
from iotpki.errors import BadSignature, IotpkiError, MalformedInput
from iotpki.protocols.acme.messages import csr_identifiers

NOW = datetime(2030, 1, 1, tzinfo=UTC)
PROFILES = [
    policy.profile_from_mapping("device", {}),
    policy.profile_from_mapping("server", {"identity": "server"}),
]


def _seed() -> x509.CertificateSigningRequest:
    """A CSR using every field the server reads: several RDNs, each SAN type, usages, a password."""
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme"),
            x509.NameAttribute(NameOID.COMMON_NAME, "dev-1.example"),
        ]
    )
    sans = [
        x509.DNSName("dev-1.example"),
        x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
        x509.UniformResourceIdentifier("urn:dev:1"),
        x509.RFC822Name("dev@example.com"),
        x509.DirectoryName(name),
    ]
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(name)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_attribute(AttributeOID.CHALLENGE_PASSWORD, b"s3cret")
        .sign(KEY, hashes.SHA256())
    )


SEED = _seed()
SEED_DER = SEED.public_bytes(serialization.Encoding.DER)


def _use(csr: x509.CertificateSigningRequest) -> None:
    """Everything downstream reads from a decoded CSR."""
    for profile in PROFILES:
        with contextlib.suppress(IotpkiError):
            policy.decide(csr, profile, now=NOW, device_id="dev-1")
    with contextlib.suppress(IotpkiError):
        csr_identifiers(csr)
    with contextlib.suppress(x509.AttributeNotFound):
        csr.attributes.get_attribute_for_oid(AttributeOID.CHALLENGE_PASSWORD).value.decode()


def _decode_and_use(der: bytes) -> None:
    try:
        csr = decode_csr(der)
    except (MalformedInput, BadSignature):
        return
    _use(csr)


def test_the_seed_decodes() -> None:
    _use(decode_csr(SEED_DER))


@FUZZ
@given(mutated(SEED_DER))
def test_mutated_der(der: bytes) -> None:
    _decode_and_use(der)


@FUZZ
@given(der_mutated(SEED.tbs_certrequest_bytes))
def test_mutated_and_resigned(info: bytes) -> None:
    """Structural mutations under a valid signature reach every field reader."""
    _decode_and_use(resign(info))


@pytest.mark.parametrize("cut", range(0, len(SEED_DER), 7))
def test_every_truncation(cut: int) -> None:
    with pytest.raises(MalformedInput):
        decode_csr(SEED_DER[:cut])
