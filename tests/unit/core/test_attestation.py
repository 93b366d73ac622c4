"""The TPM attestation verifier against statements made by a real software TPM (swtpm)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

pytest.importorskip("tpm2_pytss")

from iotpki.core import attestation
from iotpki.core.attestation import (
    check_csr_key,
    parse_attestation_object,
    parse_public_area,
    verify_tpm_statement,
)
from iotpki.core.models import KeyAlgorithm
from iotpki.errors import AttestationRejected
from iotpki.keys.tpm import TpmBackend

from tpm import manufacture, require_swtpm, start_swtpm

KEY_AUTH = "token-abc.thumbprint-xyz"
DEVICE_ID = "urn:ek:sha256:dGVzdA=="
NOW = datetime.now(UTC).replace(microsecond=0)


def _ca(name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _ak_certificate(
    ak_public: ec.EllipticCurvePublicKey,
    ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate],
    *,
    eku: bool = True,
    not_after: datetime | None = None,
) -> x509.Certificate:
    permanent = attestation._PermanentIdentifier({"identifier_value": DEVICE_ID}).dump()
    module = attestation._HardwareModuleName(
        {"hw_type": "1.3.6.1.4.1.99999.1", "hw_serial_num": b"\x01\x02\x03"}
    ).dump()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca[1].subject)
        .public_key(ak_public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(hours=1))
        .not_valid_after(not_after or NOW + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.OtherName(attestation.OID_PERMANENT_IDENTIFIER, permanent),
                    x509.OtherName(attestation.OID_HARDWARE_MODULE_NAME, module),
                ]
            ),
            critical=True,
        )
    )
    if eku:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([attestation.OID_AK_CERTIFICATE]), critical=False
        )
    else:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    return builder.sign(ca[0], hashes.SHA256())


@dataclasses.dataclass
class Device:
    backend: TpmBackend
    key: str
    other_key: str
    loose_key: str  # created without fixedTPM / fixedParent
    ak: str
    ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate]
    ak_cert: x509.Certificate


@pytest.fixture(scope="module")
def device(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Device]:
    require_swtpm()
    base = tmp_path_factory.mktemp("attest")
    tpm = start_swtpm(manufacture(base / "m"), base)
    backend = TpmBackend(tpm.tcti, base / "keys")
    try:
        key = backend.generate("device", KeyAlgorithm.P256)
        other = backend.generate("other", KeyAlgorithm.P256)
        from tpm2_pytss.constants import TPMA_OBJECT

        loose = backend._create(
            "loose",
            "ecc256:ecdsa-sha256:null",
            TPMA_OBJECT.SIGN_ENCRYPT | TPMA_OBJECT.SENSITIVEDATAORIGIN | TPMA_OBJECT.USERWITHAUTH,
        )
        ak = backend.create_attestation_key("ak")
        ca = _ca("Test TPM attestation CA")
        ak_public = backend.public_key(ak)
        assert isinstance(ak_public, ec.EllipticCurvePublicKey)
        yield Device(backend, key, other, loose, ak, ca, _ak_certificate(ak_public, ca))
    finally:
        backend.close()
        tpm.stop()


def _statement(device: Device, key: str | None = None, auth: str = KEY_AUTH) -> bytes:
    return device.backend.attestation_object(key or device.key, device.ak, [device.ak_cert], auth)


def _verify(device: Device, att_obj: bytes, **overrides: object) -> attestation.AttestedKey:
    options: dict[str, object] = {
        "key_authorization": KEY_AUTH,
        "roots": [device.ca[1]],
        "at": NOW,
    }
    options.update(overrides)
    return verify_tpm_statement(parse_attestation_object(att_obj), **options)  # type: ignore[arg-type]


def _rebuild(att_obj: bytes, **fields: object) -> bytes:
    decoded = cbor2.loads(att_obj)
    decoded["attStmt"].update(fields)
    return bytes(cbor2.dumps(decoded))


def test_statement_from_swtpm_verifies(device: Device) -> None:
    attested = _verify(device, _statement(device))
    assert attested.public_key == device.backend.public_key(device.key)
    assert attested.root == device.ca[1]
    assert attested.identifies("permanent-identifier", DEVICE_ID)
    assert attested.identifies("hardware-module", "1.3.6.1.4.1.99999.1:010203")
    assert not attested.identifies("permanent-identifier", "urn:ek:sha256:other")
    assert attested.attributes & attestation.FIXED_TPM


def test_public_area_matches_the_tpm_key(device: Device) -> None:
    area = parse_public_area(device.backend.public_area(device.key))
    assert area.public_key == device.backend.public_key(device.key)
    assert area.missing_attributes() == []


def test_statement_over_another_key_is_refused(device: Device) -> None:
    other_area = device.backend.public_area(device.other_key)
    forged = _rebuild(_statement(device), pubArea=other_area)
    with pytest.raises(AttestationRejected) as info:
        _verify(device, forged)
    assert info.value.data["check"] == "name"


def test_tampered_cert_info_is_refused(device: Device) -> None:
    att_obj = _statement(device)
    cert_info = bytearray(cbor2.loads(att_obj)["attStmt"]["certInfo"])
    cert_info[-1] ^= 0x01
    with pytest.raises(AttestationRejected) as info:
        _verify(device, _rebuild(att_obj, certInfo=bytes(cert_info)))
    assert info.value.data["check"] == "signature"


def test_tampered_pub_area_is_refused(device: Device) -> None:
    att_obj = _statement(device)
    area = bytearray(cbor2.loads(att_obj)["attStmt"]["pubArea"])
    area[-1] ^= 0x01  # the last byte of the EC point's y
    with pytest.raises(AttestationRejected) as info:
        _verify(device, _rebuild(att_obj, pubArea=bytes(area)))
    assert info.value.data["check"] in {"name", "structure"}


def test_wrong_key_authorization_is_refused(device: Device) -> None:
    with pytest.raises(AttestationRejected) as info:
        _verify(device, _statement(device, auth="token-other.thumbprint-xyz"))
    assert info.value.data["check"] == "extra_data"


def test_untrusted_root_is_refused(device: Device) -> None:
    _, stranger = _ca("Some other CA")
    with pytest.raises(AttestationRejected) as info:
        _verify(device, _statement(device), roots=[stranger])
    assert info.value.data["check"] == "chain"


def test_no_roots_configured_is_refused(device: Device) -> None:
    with pytest.raises(AttestationRejected) as info:
        _verify(device, _statement(device), roots=[])
    assert info.value.data["check"] == "chain"


def test_expired_ak_certificate_is_refused(device: Device) -> None:
    with pytest.raises(AttestationRejected) as info:
        _verify(device, _statement(device), at=NOW + timedelta(days=31))
    assert info.value.data["check"] == "chain"


def test_ak_certificate_without_ak_purpose_is_refused(device: Device) -> None:
    ak_public = device.backend.public_key(device.ak)
    assert isinstance(ak_public, ec.EllipticCurvePublicKey)
    cert = _ak_certificate(ak_public, device.ca, eku=False)
    att_obj = _rebuild(_statement(device), x5c=[cert.public_bytes(serialization.Encoding.DER)])
    with pytest.raises(AttestationRejected) as info:
        _verify(device, att_obj)
    assert info.value.data["check"] == "ak_certificate"


def test_key_without_fixed_tpm_is_refused(device: Device) -> None:
    with pytest.raises(AttestationRejected) as info:
        _verify(device, _statement(device, key=device.loose_key))
    assert info.value.data["check"] == "attributes"
    assert "fixedTPM" in info.value.data["missing"]  # type: ignore[operator]


def test_csr_for_a_different_key_is_refused(device: Device) -> None:
    attested = _verify(device, _statement(device))
    stranger = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "device")])
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(stranger, hashes.SHA256())
    with pytest.raises(AttestationRejected) as info:
        check_csr_key(attested.public_key, csr)
    assert info.value.data["check"] == "csr_key"
    tpm_csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(name)
        .sign(device.backend.signer(device.key), hashes.SHA256())
    )
    assert tpm_csr.is_signature_valid
    check_csr_key(attested.public_key, tpm_csr)


def test_signature_by_a_different_ak_is_refused(device: Device) -> None:
    other_ak = ec.generate_private_key(ec.SECP256R1())
    att_obj = _statement(device)
    cert_info = cbor2.loads(att_obj)["attStmt"]["certInfo"]
    sig = other_ak.sign(cert_info, ec.ECDSA(hashes.SHA256()))
    with pytest.raises(AttestationRejected) as info:
        _verify(device, _rebuild(att_obj, sig=sig))
    assert info.value.data["check"] == "signature"


@pytest.mark.parametrize(
    ("att_obj", "check"),
    [
        (b"\xff\x00garbage", "cbor"),
        (cbor2.dumps([1, 2, 3]), "cbor"),
        (cbor2.dumps({"fmt": "packed", "attStmt": {}}), "format"),
        (cbor2.dumps({"fmt": "tpm", "attStmt": {"ver": "1.2"}}), "cbor"),
        (cbor2.dumps({"fmt": "tpm", "attStmt": {"ver": "2.0", "alg": -7, "x5c": []}}), "cbor"),
        (
            cbor2.dumps(
                {
                    "fmt": "tpm",
                    "attStmt": {
                        "ver": "2.0",
                        "alg": -7,
                        "x5c": [b"not der"],
                        "sig": b"",
                        "certInfo": b"",
                        "pubArea": b"",
                    },
                }
            ),
            "cbor",
        ),
    ],
)
def test_malformed_attestation_objects_are_refused(att_obj: bytes, check: str) -> None:
    with pytest.raises(AttestationRejected) as info:
        parse_attestation_object(att_obj)
    assert info.value.data["check"] == check


@pytest.mark.parametrize("cut", [0, 1, 5, 30, 87])
def test_truncated_public_areas_are_refused(device: Device, cut: int) -> None:
    area = device.backend.public_area(device.key)
    with pytest.raises(AttestationRejected) as info:
        parse_public_area(area[:cut])
    assert info.value.data["check"] == "structure"


def test_trailing_bytes_in_cert_info_are_refused(device: Device) -> None:
    cert_info = cbor2.loads(_statement(device))["attStmt"]["certInfo"]
    with pytest.raises(AttestationRejected) as info:
        attestation.parse_certify_info(cert_info + b"\x00")
    assert info.value.data["check"] == "structure"


def test_tpm_key_is_not_exportable(device: Device, tmp_path: Path) -> None:
    signer = device.backend.signer(device.key)
    with pytest.raises(Exception, match="fixedTPM"):
        signer.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
