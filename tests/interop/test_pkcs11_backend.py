"""The PKCS#11 backend against a real SoftHSM2 token, checked by ``openssl verify``."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote_to_bytes

import pkcs11
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificateIssuerPublicKeyTypes,
)
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID
from pkcs11 import Attribute, ObjectClass

from iotpki.core.keytypes import signature_hash
from iotpki.core.models import KeyAlgorithm
from iotpki.errors import BackendError, ConfigError, KeyMissing
from iotpki.keys.pkcs11 import Pkcs11Backend

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from softhsm import softhsm_token  # tests/ is not a package: import the helper by path

pytestmark = pytest.mark.interop

NOW = datetime(2025, 1, 1, tzinfo=UTC)  # openssl verify is given this time with -attime


@pytest.fixture
def token(tmp_path: Path) -> tuple[str, str, str]:
    return softhsm_token(tmp_path)


@pytest.fixture
def backend(token: tuple[str, str, str]) -> Iterator[Pkcs11Backend]:
    with Pkcs11Backend(*token) as opened:
        yield opened


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ca_certificate(
    signer: CertificateIssuerPrivateKeyTypes, **sign_options: object
) -> x509.Certificate:
    public = signer.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(_name("SoftHSM Test CA"))
        .issuer_name(_name("SoftHSM Test CA"))
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(signer, signature_hash(signer), **sign_options)  # type: ignore[arg-type]
    )


def _leaf_certificate(
    ca: x509.Certificate, signer: CertificateIssuerPrivateKeyTypes, **sign_options: object
) -> x509.Certificate:
    device_key = ec.generate_private_key(ec.SECP256R1())
    return (
        x509.CertificateBuilder()
        .subject_name(_name("device-0001"))
        .issuer_name(ca.subject)
        .public_key(device_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(hours=1))
        .not_valid_after(NOW + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("device-0001.example")]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),
            critical=False,
        )
        .sign(signer, signature_hash(signer), **sign_options)  # type: ignore[arg-type]
    )


def _crl(
    ca: x509.Certificate, signer: CertificateIssuerPrivateKeyTypes
) -> x509.CertificateRevocationList:
    return (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.subject)
        .last_update(NOW - timedelta(hours=1))
        .next_update(NOW + timedelta(days=7))
        .add_extension(x509.CRLNumber(1), critical=False)
        .sign(signer, signature_hash(signer))  # type: ignore[arg-type]
    )


def _openssl_verify(
    tmp_path: Path, signer: CertificateIssuerPrivateKeyTypes, **sign_options: object
) -> None:
    """A CA, a leaf and a CRL all signed by the token, then ``openssl verify -crl_check``."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    ca = _ca_certificate(signer, **sign_options)
    leaf = _leaf_certificate(ca, signer, **sign_options)
    crl = _crl(ca, signer)
    for name, item in (("ca", ca), ("leaf", leaf), ("crl", crl)):
        (tmp_path / f"{name}.pem").write_bytes(item.public_bytes(serialization.Encoding.PEM))
    result = subprocess.run(
        [
            openssl,
            "verify",
            "-attime",
            str(int(NOW.timestamp())),
            "-crl_check",
            "-CAfile",
            str(tmp_path / "ca.pem"),
            "-CRLfile",
            str(tmp_path / "crl.pem"),
            str(tmp_path / "leaf.pem"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("leaf.pem: OK")


def _key_id(key_ref: str) -> bytes:
    attributes = dict(
        part.partition("=")[::2] for part in key_ref.removeprefix("pkcs11:").split(";")
    )
    return unquote_to_bytes(attributes["id"])


def _verify(
    public: CertificateIssuerPublicKeyTypes,
    signature: bytes,
    data: bytes,
    hash_: hashes.HashAlgorithm,
) -> None:
    if isinstance(public, ec.EllipticCurvePublicKey):
        public.verify(signature, data, ec.ECDSA(hash_))
    elif isinstance(public, rsa.RSAPublicKey):
        public.verify(signature, data, padding.PKCS1v15(), hash_)
    else:
        raise AssertionError(f"unexpected key {public!r}")


# 1. keys generated on the token sign certificates and CRLs that OpenSSL accepts


@pytest.mark.parametrize(
    "algorithm",
    [
        KeyAlgorithm.P256,
        KeyAlgorithm.RSA3072,
        KeyAlgorithm.P384,
        KeyAlgorithm.RSA2048,
        KeyAlgorithm.ED25519,
    ],
)
def test_token_key_signs_a_chain_that_openssl_verifies(
    backend: Pkcs11Backend, algorithm: KeyAlgorithm, tmp_path: Path
) -> None:
    key_ref = backend.generate("Test CA", algorithm)
    signer = backend.signer(key_ref)

    assert key_ref.startswith("pkcs11:id=%")
    assert key_ref.endswith(";object=Test%20CA")
    assert signer.public_key() == backend.public_key(key_ref)
    _openssl_verify(tmp_path, signer)


@pytest.mark.parametrize("salt_length", [padding.PSS.DIGEST_LENGTH, padding.PSS.MAX_LENGTH])
def test_rsa_pss_chain_openssl_verifies(
    backend: Pkcs11Backend, salt_length: padding._MaxLength | padding._DigestLength, tmp_path: Path
) -> None:
    signer = backend.signer(backend.generate("PSS CA", KeyAlgorithm.RSA2048))

    _openssl_verify(
        tmp_path, signer, rsa_padding=padding.PSS(padding.MGF1(hashes.SHA256()), salt_length)
    )


def test_csr_and_ocsp_response_signed_on_the_token(backend: Pkcs11Backend) -> None:
    signer = backend.signer(backend.generate("Issuing CA", KeyAlgorithm.P256))
    assert isinstance(signer, ec.EllipticCurvePrivateKey)
    public = signer.public_key()

    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_name("Issuing CA"))
        .sign(signer, hashes.SHA256())
    )
    assert csr.is_signature_valid
    assert csr.public_key() == public

    ca = _ca_certificate(signer)
    leaf = _leaf_certificate(ca, signer)
    response = (
        ocsp.OCSPResponseBuilder()
        .add_response(
            cert=leaf,
            issuer=ca,
            algorithm=hashes.SHA256(),
            cert_status=ocsp.OCSPCertStatus.GOOD,
            this_update=NOW,
            next_update=NOW + timedelta(days=1),
            revocation_time=None,
            revocation_reason=None,
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, ca)
        .sign(signer, hashes.SHA256())
    )
    public.verify(response.signature, response.tbs_response_bytes, ec.ECDSA(hashes.SHA256()))


@pytest.mark.parametrize("algorithm", [KeyAlgorithm.P256, KeyAlgorithm.RSA2048])
@pytest.mark.parametrize(
    "hash_", [hashes.SHA256(), hashes.SHA384(), hashes.SHA512()], ids=lambda h: h.name
)
def test_sign_with_each_sha2_hash_and_prehashed(
    backend: Pkcs11Backend, algorithm: KeyAlgorithm, hash_: hashes.HashAlgorithm
) -> None:
    signer = backend.signer(backend.generate("CA", algorithm))
    data = b"to be signed"
    digester = hashes.Hash(hash_)
    digester.update(data)
    prehashed = utils.Prehashed(hash_)

    if isinstance(signer, ec.EllipticCurvePrivateKey):
        signatures = [
            signer.sign(data, ec.ECDSA(hash_)),
            signer.sign(digester.finalize(), ec.ECDSA(prehashed)),
        ]
    else:
        assert isinstance(signer, rsa.RSAPrivateKey)
        signatures = [
            signer.sign(data, padding.PKCS1v15(), hash_),
            signer.sign(digester.finalize(), padding.PKCS1v15(), prehashed),
        ]

    for signature in signatures:
        _verify(signer.public_key(), signature, data, hash_)


def test_rsa_sign_without_digest_info(backend: Pkcs11Backend) -> None:
    signer = backend.signer(backend.generate("CA", KeyAlgorithm.RSA2048))
    assert isinstance(signer, rsa.RSAPrivateKey)
    data = b"\x01" * 32

    signature = signer.sign(data, padding.PKCS1v15(), utils.NoDigestInfo())

    assert (
        signer.public_key().recover_data_from_signature(signature, padding.PKCS1v15(), None) == data
    )


def test_key_survives_a_new_backend(token: tuple[str, str, str], tmp_path: Path) -> None:
    with Pkcs11Backend(*token) as first:
        key_ref = first.generate("Persistent CA", KeyAlgorithm.P256)
        public = first.public_key(key_ref)

    with Pkcs11Backend(*token) as second:
        signer = second.signer(key_ref)
        assert second.public_key(key_ref) == public
        _openssl_verify(tmp_path, signer)


def test_lost_session_is_reopened(backend: Pkcs11Backend, token: tuple[str, str, str]) -> None:
    signer = backend.signer(backend.generate("CA", KeyAlgorithm.P256))
    assert isinstance(signer, ec.EllipticCurvePrivateKey)

    pkcs11.lib(token[0]).reinitialize()  # every session handle of the process is now invalid

    signature = signer.sign(b"data", ec.ECDSA(hashes.SHA256()))
    signer.public_key().verify(signature, b"data", ec.ECDSA(hashes.SHA256()))


def test_two_backends_share_one_token(token: tuple[str, str, str]) -> None:
    first, second = Pkcs11Backend(*token), Pkcs11Backend(*token)
    first_ref = first.generate("First CA", KeyAlgorithm.P256)
    second_ref = second.generate("Second CA", KeyAlgorithm.P256)  # the login is shared
    signer = second.signer(second_ref)
    assert isinstance(signer, ec.EllipticCurvePrivateKey)

    first.close()  # C_Logout logs out every session of the process

    signature = signer.sign(b"data", ec.ECDSA(hashes.SHA256()))
    signer.public_key().verify(signature, b"data", ec.ECDSA(hashes.SHA256()))
    assert second.signer(first_ref).public_key() == first.public_key(first_ref)
    second.close()
    first.close()


# 2. the private key cannot leave the token


@pytest.mark.parametrize(
    ("algorithm", "secret"),
    [(KeyAlgorithm.P256, Attribute.VALUE), (KeyAlgorithm.RSA3072, Attribute.PRIVATE_EXPONENT)],
)
def test_private_key_cannot_be_exported(
    token: tuple[str, str, str], algorithm: KeyAlgorithm, secret: Attribute
) -> None:
    module, label, pin = token
    with Pkcs11Backend(*token) as backend:
        key_ref = backend.generate("Sealed CA", algorithm)
        signer = backend.signer(key_ref)
        with pytest.raises(BackendError, match="non-extractable"):
            signer.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        with pytest.raises(BackendError, match="non-extractable"):
            signer.private_numbers()  # type: ignore[union-attr]
        assert copy.deepcopy(signer) is signer

    session = pkcs11.lib(module).get_token(token_label=label).open(user_pin=pin)
    try:
        key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, id=_key_id(key_ref))
        assert key[Attribute.TOKEN] is True
        assert key[Attribute.PRIVATE] is True
        assert key[Attribute.SENSITIVE] is True
        assert key[Attribute.ALWAYS_SENSITIVE] is True
        assert key[Attribute.EXTRACTABLE] is False
        assert key[Attribute.NEVER_EXTRACTABLE] is True
        assert key[Attribute.SIGN] is True
        assert key[Attribute.DECRYPT] is False
        with pytest.raises(pkcs11.exceptions.AttributeSensitive):
            key[secret]
        public = session.get_key(object_class=ObjectClass.PUBLIC_KEY, id=_key_id(key_ref))
        assert public[Attribute.TOKEN] is True
    finally:
        session.close()


def test_ec_key_refuses_key_agreement(backend: Pkcs11Backend) -> None:
    signer = backend.signer(backend.generate("CA", KeyAlgorithm.P256))
    assert isinstance(signer, ec.EllipticCurvePrivateKey)
    peer = ec.generate_private_key(ec.SECP256R1()).public_key()

    with pytest.raises(BackendError, match="key agreement"):
        signer.exchange(ec.ECDH(), peer)


def test_rsa_key_refuses_decryption(backend: Pkcs11Backend) -> None:
    signer = backend.signer(backend.generate("CA", KeyAlgorithm.RSA2048))
    assert isinstance(signer, rsa.RSAPrivateKey)

    with pytest.raises(BackendError, match="decryption"):
        signer.decrypt(b"\x00" * 256, padding.PKCS1v15())


def test_ed25519_key_refuses_raw_export(backend: Pkcs11Backend) -> None:
    signer = backend.signer(backend.generate("CA", KeyAlgorithm.ED25519))
    assert isinstance(signer, ed25519.Ed25519PrivateKey)

    with pytest.raises(BackendError, match="non-extractable"):
        signer.private_bytes_raw()


# 3. token failures surface as iotpki errors, never as pkcs11 exceptions


def test_wrong_pin(token: tuple[str, str, str]) -> None:
    module, label, _ = token
    with (
        Pkcs11Backend(module, label, "not-the-pin") as backend,
        pytest.raises(ConfigError, match="wrong PIN"),
    ):
        backend.generate("CA", KeyAlgorithm.P256)


def test_unknown_token(token: tuple[str, str, str]) -> None:
    module, _, pin = token
    with (
        Pkcs11Backend(module, "no-such-token", pin) as backend,
        pytest.raises(ConfigError, match="no token"),
    ):
        backend.public_key("pkcs11:id=%01")


def test_module_that_does_not_load(tmp_path: Path) -> None:
    with (
        Pkcs11Backend(str(tmp_path / "missing.so"), "t", "1234") as backend,
        pytest.raises(ConfigError, match="cannot use PKCS#11 module"),
    ):
        backend.public_key("pkcs11:id=%01")


def test_unknown_key_for_signer(backend: Pkcs11Backend) -> None:
    with pytest.raises(KeyMissing, match="no private key"):
        backend.signer("pkcs11:id=%00%11%22%33;object=gone")


def test_unknown_key_for_public_key(backend: Pkcs11Backend) -> None:
    with pytest.raises(KeyMissing, match="no public key"):
        backend.public_key("pkcs11:id=%00%11%22%33;object=gone")


@pytest.mark.parametrize(
    "key_ref", ["", "ca-key.pem", "file:%01", "pkcs11:object=Test%20CA", "pkcs11:id="]
)
def test_malformed_key_ref(backend: Pkcs11Backend, key_ref: str) -> None:
    with pytest.raises(ConfigError, match="not a pkcs11: URI"):
        backend.signer(key_ref)


@pytest.mark.parametrize("algorithm", [KeyAlgorithm.MLDSA44, KeyAlgorithm.MLDSA65])
def test_ml_dsa_is_refused(backend: Pkcs11Backend, algorithm: KeyAlgorithm) -> None:
    with pytest.raises(ConfigError, match="cannot hold ml"):
        backend.generate("PQ CA", algorithm)


# 4. several threads share one session


@pytest.mark.parametrize("algorithm", [KeyAlgorithm.P256, KeyAlgorithm.RSA2048])
def test_concurrent_signing(backend: Pkcs11Backend, algorithm: KeyAlgorithm) -> None:
    signer = backend.signer(backend.generate("Busy CA", algorithm))
    messages = [f"message {n}".encode() for n in range(80)]

    def sign(data: bytes) -> bytes:
        if isinstance(signer, ec.EllipticCurvePrivateKey):
            return signer.sign(data, ec.ECDSA(hashes.SHA256()))
        assert isinstance(signer, rsa.RSAPrivateKey)
        return signer.sign(data, padding.PKCS1v15(), hashes.SHA256())

    with ThreadPoolExecutor(max_workers=4) as pool:
        signatures = list(pool.map(sign, messages))

    for data, signature in zip(messages, signatures, strict=True):
        _verify(signer.public_key(), signature, data, hashes.SHA256())
