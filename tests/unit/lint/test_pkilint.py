"""PkilintLinter against certificates built with cryptography, clean and deliberately defective."""

from __future__ import annotations

import ipaddress
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from iotpki.core.models import LintFinding
from iotpki.core.ports import Linter
from iotpki.lint import DECODING_FAILED_CODE, PkilintLinter, worst_severity

NOW = datetime(2025, 1, 1, tzinfo=UTC)
SKI_INFO = LintFinding(
    "INFO",
    "pkix.subject_key_identifier_method_1_identified",
    "certificate.tbsCertificate.extensions.3.extnValue.subjectKeyIdentifier",
    "",
)


@dataclass(frozen=True)
class _CA:
    key: ec.EllipticCurvePrivateKey
    name: x509.Name


@pytest.fixture(scope="session")
def ca() -> _CA:
    return _CA(
        ec.generate_private_key(ec.SECP256R1()),
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "iotpki test CA")]),
    )


@pytest.fixture(scope="session")
def device_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="session")
def linter() -> PkilintLinter:
    return PkilintLinter()


def _key_usage(*, key_cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _leaf(
    ca: _CA,
    key: ec.EllipticCurvePrivateKey,
    *,
    subject: x509.Name | None = None,
    key_usage: x509.KeyUsage | None = None,
    key_usage_critical: bool = True,
    names: tuple[x509.GeneralName, ...] = (x509.DNSName("device-0001.iot.example"),),
) -> bytes:
    """A P-256 device certificate; the keyword arguments each introduce one defect."""
    if subject is None:
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "device-0001")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.name)
        .public_key(key.public_key())
        .serial_number(0x1F2E3D4C5B6A)
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage or _key_usage(), critical=key_usage_critical)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return certificate.public_bytes(Encoding.DER)


def _with_serial(ca: _CA, der: bytes, serial: int) -> bytes:
    """Re-sign ``der`` with a serial cryptography's builder refuses (zero or negative)."""
    original = asn1_x509.Certificate.load(der)
    tbs = original["tbs_certificate"].copy()
    tbs["serial_number"] = serial
    tbs_der = tbs.dump(force=True)
    resigned: bytes = asn1_x509.Certificate(
        {
            "tbs_certificate": asn1_x509.TbsCertificate.load(tbs_der),
            "signature_algorithm": original["signature_algorithm"],
            "signature_value": ca.key.sign(tbs_der, ec.ECDSA(hashes.SHA256())),
        }
    ).dump(force=True)
    return resigned


def test_pkilint_linter_implements_the_linter_port(linter: PkilintLinter) -> None:
    port: Linter = linter
    assert callable(port.lint)


def test_clean_leaf_has_only_the_ski_method_notice(
    linter: PkilintLinter, ca: _CA, device_key: ec.EllipticCurvePrivateKey
) -> None:
    findings = linter.lint(_leaf(ca, device_key))

    assert findings == [SKI_INFO]
    assert worst_severity(findings) == "pass"


def test_key_cert_sign_on_end_entity_is_an_error(
    linter: PkilintLinter, ca: _CA, device_key: ec.EllipticCurvePrivateKey
) -> None:
    der = _leaf(ca, device_key, key_usage=_key_usage(key_cert_sign=True))

    findings = linter.lint(der)

    assert findings == [
        LintFinding(
            "ERROR",
            "pkix.ee_certificate_keycertsign_keyusage_set",
            "certificate.tbsCertificate.extensions.1.extnValue.keyUsage",
            "",
        ),
        SKI_INFO,
    ]
    assert worst_severity(findings) == "error"


@pytest.mark.parametrize("serial", [0, -5])
def test_serial_outside_one_to_2_159_is_an_error(
    linter: PkilintLinter, ca: _CA, device_key: ec.EllipticCurvePrivateKey, serial: int
) -> None:
    der = _with_serial(ca, _leaf(ca, device_key), serial)

    findings = linter.lint(der)

    errors = [f for f in findings if f.severity == "ERROR"]
    assert [(f.code, f.node) for f in errors] == [
        ("pkix.certificate_serial_number_out_of_range", "certificate.tbsCertificate.serialNumber")
    ]
    assert f'on content "{serial}"' in errors[0].message
    assert worst_severity(findings) == "error"


def test_empty_subject_with_non_critical_san_is_an_error(
    linter: PkilintLinter, ca: _CA, device_key: ec.EllipticCurvePrivateKey
) -> None:
    # RFC 5280 section 4.2.1.6: with an empty subject the SAN extension MUST be critical.
    der = _leaf(ca, device_key, subject=x509.Name([]))

    findings = linter.lint(der)

    assert [(f.severity, f.code) for f in findings if f.severity == "ERROR"] == [
        ("ERROR", "pkix.san_extension_not_critical_empty_subject")
    ]


def test_non_critical_key_usage_is_a_warning(
    linter: PkilintLinter, ca: _CA, device_key: ec.EllipticCurvePrivateKey
) -> None:
    findings = linter.lint(_leaf(ca, device_key, key_usage_critical=False))

    assert ("WARNING", "pkix.key_usage_extension_not_critical") in [
        (f.severity, f.code) for f in findings
    ]
    assert worst_severity(findings) == "warn"


@pytest.mark.parametrize("name", ["localhost", "broker", "gw-01", "3com"])
def test_single_label_dns_name_is_rfc_5280_syntax(
    linter: PkilintLinter, ca: _CA, device_key: ec.EllipticCurvePrivateKey, name: str
) -> None:
    # RFC 5280 4.2.1.6 -> RFC 1034 3.5 (RFC 1123 2.1): one label is a valid domain name.
    ip = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
    findings = linter.lint(_leaf(ca, device_key, names=(x509.DNSName(name), ip)))

    assert findings == [SKI_INFO]


@pytest.mark.parametrize("name", ["bad_name", "-lead", "trail-", "a..b", "dot.", " "])
def test_malformed_dns_name_is_still_an_error(
    linter: PkilintLinter, ca: _CA, device_key: ec.EllipticCurvePrivateKey, name: str
) -> None:
    findings = linter.lint(_leaf(ca, device_key, names=(x509.DNSName(name),)))

    assert ("ERROR", "pkix.invalid_domain_name_syntax") in [(f.severity, f.code) for f in findings]


@pytest.mark.parametrize(
    "der",
    [b"", b"not a certificate", b"\x30\x03abc", b"\x30\x82\x01\x00" + b"\x00" * 16],
    ids=["empty", "garbage", "short-sequence", "truncated"],
)
def test_undecodable_bytes_give_one_fatal_finding(linter: PkilintLinter, der: bytes) -> None:
    findings = linter.lint(der)

    assert len(findings) == 1
    assert findings[0].severity == "FATAL"
    assert findings[0].code == DECODING_FAILED_CODE
    assert findings[0].node == "certificate"
    assert findings[0].message
    assert worst_severity(findings) == "error"


def test_truncated_real_certificate_gives_one_fatal_finding(
    linter: PkilintLinter, ca: _CA, device_key: ec.EllipticCurvePrivateKey
) -> None:
    findings = linter.lint(_leaf(ca, device_key)[:-10])

    assert [(f.severity, f.code) for f in findings] == [("FATAL", DECODING_FAILED_CODE)]


def test_one_linter_gives_the_same_findings_from_many_threads(
    linter: PkilintLinter, ca: _CA, device_key: ec.EllipticCurvePrivateKey
) -> None:
    ders = [
        _leaf(ca, device_key),
        _leaf(ca, device_key, key_usage=_key_usage(key_cert_sign=True)),
        _leaf(ca, device_key, subject=x509.Name([])),
        _leaf(ca, device_key, key_usage_critical=False),
        b"garbage",
    ] * 40
    expected = [linter.lint(der) for der in ders]

    with ThreadPoolExecutor(max_workers=8) as pool:
        actual = list(pool.map(linter.lint, ders))

    assert actual == expected


@pytest.mark.parametrize(
    ("severities", "status"),
    [
        ([], "pass"),
        (["INFO", "NOTICE", "DEBUG"], "pass"),
        (["INFO", "WARNING", "NOTICE"], "warn"),
        (["WARNING", "ERROR"], "error"),
        (["FATAL"], "error"),
    ],
)
def test_worst_severity(severities: list[str], status: str) -> None:
    findings = [LintFinding(s, "code", "node", "") for s in severities]

    assert worst_severity(findings) == status


def test_worst_severity_rejects_an_unknown_severity() -> None:
    with pytest.raises(ValueError, match="'CRITICAL'"):
        worst_severity([LintFinding("CRITICAL", "code", "node", "")])
