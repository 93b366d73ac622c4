"""CRL and OCSP response building: parsed and verified by cryptography, byte-exact where fixed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID

from iotpki.core.models import RevocationReason
from iotpki.core.revocation import (
    OCSP_STATUS_MALFORMED,
    OCSP_STATUS_UNAUTHORIZED,
    CertId,
    SingleStatus,
    build_crl,
    build_ocsp_response,
    issuer_hashes,
    ocsp_error,
)
from iotpki.core.revocation import CrlEntry as Entry

NOW = datetime(2030, 5, 4, 3, 2, 1, tzinfo=UTC)


def _ca(key: CertificateIssuerPrivateKeyTypes, name: str = "Test CA") -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    digest = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, digest)  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def ca(ec_key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    return _ca(ec_key)


def _crl_of(ca: x509.Certificate, key: ec.EllipticCurvePrivateKey, entries: list[Entry]) -> bytes:
    return build_crl(
        issuer=ca, key=key, entries=entries, number=1, this_update=NOW, next_update=NOW
    )


def test_crl_entries_are_byte_exact(
    ca: x509.Certificate, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    when = b"\x17\x0d300504030201Z"  # UTCTime of NOW
    naive = NOW.replace(tzinfo=None)  # the store's form: naive UTC, the same encoding
    der = _crl_of(ca, ec_key, [("0", NOW, None, None), ("7f", naive, None, None)])
    assert b"\x30\x12\x02\x01\x00" + when + b"\x30\x12\x02\x01\x7f" + when in der
    der = _crl_of(ca, ec_key, [("80", NOW, None, None), ("abc", NOW, "superseded", None)])
    reason = bytes.fromhex("300c300a0603551d1504030a0104")  # crlEntryExtensions { reason 4 }
    assert b"\x30\x13\x02\x02\x00\x80" + when in der
    assert b"\x30\x21\x02\x02\x0a\xbc" + when + reason in der


def test_crl_entry_with_a_long_form_length(
    ca: x509.Certificate, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    serial = "7" + "f" * 251  # 126 octets: the entry outgrows the short length form
    der = _crl_of(ca, ec_key, [(serial, NOW, "keyCompromise", NOW)])
    (entry,) = list(x509.load_der_x509_crl(der))
    assert entry.serial_number == int(serial, 16)
    with pytest.raises(ValueError, match="126 octets"):
        _crl_of(ca, ec_key, [(serial + "ff", NOW, None, None)])


def test_ocsp_error_is_the_bare_status() -> None:
    assert ocsp_error(OCSP_STATUS_MALFORMED) == bytes.fromhex("30030a0101")
    assert ocsp_error(OCSP_STATUS_UNAUTHORIZED) == bytes.fromhex("30030a0106")
    parsed = ocsp.load_der_ocsp_response(ocsp_error(OCSP_STATUS_UNAUTHORIZED))
    assert parsed.response_status is ocsp.OCSPResponseStatus.UNAUTHORIZED


def test_complete_crl_parses_and_verifies(
    ca: x509.Certificate, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    later = datetime(2051, 1, 1, tzinfo=UTC)  # GeneralizedTime from 2050 (RFC 5280 5.1.2.4)
    entries = [
        ("1", NOW, None, None),
        ("ff00", NOW, "keyCompromise", NOW - timedelta(days=2)),
        ("0123456789abcdef0123456789abcdef01234567", later, "unspecified", None),
    ]
    der = build_crl(
        issuer=ca,
        key=ec_key,
        entries=entries,
        number=7,
        this_update=NOW,
        next_update=NOW + timedelta(days=1),
        freshest_url="http://pki.example/crl/test-delta.crl",
    )
    crl = x509.load_der_x509_crl(der)
    assert crl.is_signature_valid(ec_key.public_key())
    assert crl.issuer == ca.subject
    assert crl.last_update_utc == NOW and crl.next_update_utc == NOW + timedelta(days=1)
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 7
    freshest = crl.extensions.get_extension_for_class(x509.FreshestCRL).value
    assert freshest[0].full_name == [
        x509.UniformResourceIdentifier("http://pki.example/crl/test-delta.crl")
    ]
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    revoked = {r.serial_number: r for r in crl}
    assert set(revoked) == {1, 0xFF00, 0x0123456789ABCDEF0123456789ABCDEF01234567}
    compromised = revoked[0xFF00].extensions
    assert compromised.get_extension_for_class(x509.CRLReason).value.reason is (
        x509.ReasonFlags.key_compromise
    )
    assert compromised.get_extension_for_class(x509.InvalidityDate).value.invalidity_date_utc == (
        NOW - timedelta(days=2)
    )
    # RFC 5280 5.3.1: unspecified is expressed by leaving the reason out.
    assert len(revoked[1].extensions) == 0
    assert len(revoked[0x0123456789ABCDEF0123456789ABCDEF01234567].extensions) == 0
    assert revoked[0x0123456789ABCDEF0123456789ABCDEF01234567].revocation_date_utc == later


def test_delta_crl_carries_a_critical_indicator(
    ca: x509.Certificate, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    der = build_crl(
        issuer=ca,
        key=ec_key,
        entries=[("2a", NOW, "superseded", None)],
        number=8,
        this_update=NOW,
        next_update=NOW + timedelta(hours=1),
        delta_base=7,
        freshest_url="http://ignored.example/",
    )
    crl = x509.load_der_x509_crl(der)
    indicator = crl.extensions.get_extension_for_class(x509.DeltaCRLIndicator)
    assert indicator.critical and indicator.value.crl_number == 7
    with pytest.raises(x509.ExtensionNotFound):
        crl.extensions.get_extension_for_class(x509.FreshestCRL)
    assert crl.is_signature_valid(ec_key.public_key())


def test_empty_crl_has_no_revoked_list(
    ca: x509.Certificate, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    der = build_crl(issuer=ca, key=ec_key, entries=[], number=1, this_update=NOW, next_update=NOW)
    crl = x509.load_der_x509_crl(der)
    assert len(crl) == 0 and crl.is_signature_valid(ec_key.public_key())


@pytest.mark.parametrize(
    "key",
    [
        ec.generate_private_key(ec.SECP384R1()),
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ed25519.Ed25519PrivateKey.generate(),
    ],
    ids=["p384", "rsa", "ed25519"],
)
def test_crl_signed_with_each_key_type(key: CertificateIssuerPrivateKeyTypes) -> None:
    issuer = _ca(key)
    der = build_crl(
        issuer=issuer,
        key=key,
        entries=[("5", NOW, None, None)],
        number=1,
        this_update=NOW,
        next_update=NOW + timedelta(days=1),
    )
    crl = x509.load_der_x509_crl(der)
    assert crl.is_signature_valid(key.public_key())  # type: ignore[arg-type]
    expected = {
        "p384": SignatureAlgorithmOID.ECDSA_WITH_SHA384,
        "rsa": SignatureAlgorithmOID.RSA_WITH_SHA256,
        "ed25519": SignatureAlgorithmOID.ED25519,
    }
    assert crl.signature_algorithm_oid in expected.values()
    if isinstance(key, ec.EllipticCurvePrivateKey):
        assert crl.signature_algorithm_oid == expected["p384"]


def _cert_id(ca: x509.Certificate, serial: int, algorithm: str = "sha1") -> CertId:
    name_hash, key_hash = issuer_hashes(ca, algorithm)
    return CertId(algorithm, name_hash, key_hash, serial)


def test_issuer_hashes_match_cryptography(ca: x509.Certificate) -> None:
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "leaf")]))
        .issuer_name(ca.subject)
        .public_key(leaf_key.public_key())
        .serial_number(2)
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=1))
        .sign(leaf_key, hashes.SHA256())
    )
    built = ocsp.OCSPRequestBuilder().add_certificate(leaf, ca, hashes.SHA256()).build()
    assert issuer_hashes(ca, "sha256") == (built.issuer_name_hash, built.issuer_key_hash)


def test_ocsp_response_statuses_and_nonce(
    ca: x509.Certificate, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    revoked = SingleStatus(
        _cert_id(ca, 10),
        "revoked",
        NOW,
        NOW + timedelta(hours=1),
        revoked_at=NOW - timedelta(minutes=5),
        reason=RevocationReason.KEY_COMPROMISE,
    )
    good = SingleStatus(_cert_id(ca, 11), "good", NOW, NOW + timedelta(hours=1))
    unknown = SingleStatus(_cert_id(ca, 12), "unknown", NOW, NOW + timedelta(hours=1))
    der = build_ocsp_response(
        responder=ca,
        key=ec_key,
        statuses=[revoked, good, unknown],
        produced_at=NOW,
        nonce=b"0123456789abcdef",
    )
    response = ocsp.load_der_ocsp_response(der)
    assert response.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    assert (
        response.responder_key_hash
        == x509.SubjectKeyIdentifier.from_public_key(ec_key.public_key()).digest
    )
    assert response.produced_at_utc == NOW
    singles = {single.serial_number: single for single in response.responses}
    assert singles[10].certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert singles[10].revocation_reason is x509.ReasonFlags.key_compromise
    assert singles[10].revocation_time_utc == NOW - timedelta(minutes=5)
    assert singles[11].certificate_status is ocsp.OCSPCertStatus.GOOD
    assert singles[12].certificate_status is ocsp.OCSPCertStatus.UNKNOWN
    assert singles[11].next_update_utc == NOW + timedelta(hours=1)
    nonce = response.extensions.get_extension_for_class(x509.OCSPNonce).value
    assert nonce.nonce == b"0123456789abcdef"
    assert response.certificates == [ca]
    ec_key.public_key().verify(
        response.signature, response.tbs_response_bytes, ec.ECDSA(hashes.SHA256())
    )


def test_revoked_unspecified_has_no_reason(
    ca: x509.Certificate, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    status = SingleStatus(
        _cert_id(ca, 3, "sha256"),
        "revoked",
        NOW,
        NOW,
        revoked_at=NOW,
        reason=RevocationReason.UNSPECIFIED,
    )
    der = build_ocsp_response(responder=ca, key=ec_key, statuses=[status], produced_at=NOW)
    response = ocsp.load_der_ocsp_response(der)
    assert response.revocation_reason is None
    assert isinstance(response.hash_algorithm, hashes.SHA256)


def test_unknown_status_name_is_refused(ca: x509.Certificate) -> None:
    with pytest.raises(ValueError):
        SingleStatus(_cert_id(ca, 1), "fine", NOW, NOW).encode()
