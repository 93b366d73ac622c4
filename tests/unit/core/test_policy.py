"""Policy: one pytest.raises per refused input, and what a granted certificate contains."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from iotpki.core import policy
from iotpki.errors import ConfigError, KeyRejected, PolicyViolation

from conftest import device_csr

NOW = datetime(2026, 1, 1, tzinfo=UTC)
DEVICE = policy.DEFAULT_PROFILES["device"]
SERVER = policy.DEFAULT_PROFILES["server"]


def test_device_identity_is_cn_and_uri_san() -> None:
    decision = policy.decide(device_csr("dev-7"), DEVICE, now=NOW)
    assert decision.device_id == "dev-7"
    assert decision.subject.rfc4514_string() == "CN=dev-7"
    assert decision.sans == (x509.UniformResourceIdentifier("urn:dev:ops:iotpki-dev-7"),)
    assert decision.not_after - NOW == timedelta(days=30)
    extensions = {type(ext): (ext, critical) for ext, critical in decision.extensions}
    basic, critical = extensions[x509.BasicConstraints]
    assert critical and not basic.ca  # type: ignore[attr-defined]
    eku, _ = extensions[x509.ExtendedKeyUsage]
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]  # type: ignore[call-overload]


def test_device_id_argument_fills_missing_cn() -> None:
    decision = policy.decide(device_csr(None), DEVICE, now=NOW, device_id="sensor-9")
    assert decision.device_id == "sensor-9"


def test_lifetime_capped_by_ca_expiry() -> None:
    decision = policy.decide(device_csr(), DEVICE, now=NOW, ca_not_after=NOW + timedelta(days=3))
    assert decision.not_after == NOW + timedelta(days=3)


def test_server_cn_becomes_a_dns_san() -> None:
    decision = policy.decide(device_csr("api.example.com"), SERVER, now=NOW)
    assert x509.DNSName("api.example.com") in decision.sans


@pytest.mark.parametrize(
    "key",
    [
        rsa.generate_private_key(65537, 1024),
        ec.generate_private_key(ec.SECP224R1()),
        ec.generate_private_key(ec.SECP256K1()),
        dsa.generate_private_key(2048),
        ed448.Ed448PrivateKey.generate(),
    ],
    ids=["rsa1024", "p224", "secp256k1", "dsa", "ed448"],
)
def test_weak_or_unknown_keys_refused(key: object) -> None:
    csr = device_csr(key=key)
    with pytest.raises(KeyRejected):
        policy.decide(csr, DEVICE, now=NOW)


def test_ed25519_device_key_accepted() -> None:
    csr = device_csr(key=ed25519.Ed25519PrivateKey.generate())
    assert policy.decide(csr, DEVICE, now=NOW).device_id == "dev-1"


def test_csr_asking_for_ca_refused() -> None:
    csr = device_csr(extensions=[(x509.BasicConstraints(ca=True, path_length=None), True)])
    with pytest.raises(PolicyViolation, match="CA:true"):
        policy.decide(csr, DEVICE, now=NOW)


def test_csr_asking_for_forbidden_eku_refused() -> None:
    eku = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING])
    with pytest.raises(PolicyViolation, match="extended key usages"):
        policy.decide(device_csr(extensions=[(eku, False)]), DEVICE, now=NOW)


def test_lifetime_above_maximum_refused() -> None:
    with pytest.raises(PolicyViolation, match="exceeds"):
        policy.decide(device_csr(), DEVICE, now=NOW, lifetime=timedelta(days=398))


def test_cn_differing_from_device_id_refused() -> None:
    with pytest.raises(PolicyViolation, match="not the device ID"):
        policy.decide(device_csr("dev-1"), DEVICE, now=NOW, device_id="dev-2")


def test_foreign_uri_san_refused() -> None:
    sans = [x509.UniformResourceIdentifier("urn:dev:ops:iotpki-other")]
    with pytest.raises(PolicyViolation, match="does not match device"):
        policy.decide(device_csr(sans=sans), DEVICE, now=NOW)


def test_dns_san_not_allowed_for_device() -> None:
    with pytest.raises(PolicyViolation, match="does not allow"):
        policy.decide(device_csr(sans=[x509.DNSName("x.example")]), DEVICE, now=NOW)


def test_invalid_device_id_refused() -> None:
    with pytest.raises(PolicyViolation, match="not a valid device ID"):
        policy.decide(device_csr("bad id with spaces"), DEVICE, now=NOW)


def test_wildcard_refused() -> None:
    with pytest.raises(PolicyViolation, match="wildcard"):
        policy.decide(device_csr(None, sans=[x509.DNSName("*.example.com")]), SERVER, now=NOW)


def test_unknown_critical_extension_refused() -> None:
    ext = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00")
    with pytest.raises(PolicyViolation, match="unknown critical"):
        policy.decide(device_csr(extensions=[(ext, True)]), DEVICE, now=NOW)


def test_server_without_names_refused() -> None:
    with pytest.raises(PolicyViolation, match="at least one"):
        policy.decide(device_csr(None), SERVER, now=NOW)


def test_profile_from_settings_overrides_a_builtin() -> None:
    profile = policy.profile_from_mapping("device", {"default_lifetime": "2h", "lint": "always"})
    assert profile.default_lifetime == timedelta(hours=2)
    assert profile.key_types == DEVICE.key_types


@pytest.mark.parametrize(
    "values",
    [
        {"min_rsa_bits": 1024},
        {"key_types": ["dsa"]},
        {"default_lifetime": "400d"},
        {"extended_key_usage": ["anything"]},
        {"lint": "sometimes"},
        {"unknown_field": 1},
    ],
)
def test_bad_profile_settings_refused(values: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        policy.profile_from_mapping("device", values)


def test_parse_duration() -> None:
    assert policy.parse_duration("90m") == timedelta(minutes=90)
    with pytest.raises(ConfigError):
        policy.parse_duration("soon")
