"""One key-type vocabulary: profiles, algorithms and keys by KeyType; aliases only in settings."""

from __future__ import annotations

import pytest

from iotpki.core.keytypes import generate_private_key, key_type_of, parse_key_type
from iotpki.core.models import KeyAlgorithm, KeyType
from iotpki.core.policy import DEFAULT_PROFILES, Profile, profile_from_mapping
from iotpki.errors import ConfigError


@pytest.mark.parametrize("algorithm", list(KeyAlgorithm))
def test_each_algorithm_is_a_key_type_and_its_keys_say_so(algorithm: KeyAlgorithm) -> None:
    assert algorithm.key_type in KeyType
    if algorithm in (KeyAlgorithm.RSA3072, KeyAlgorithm.RSA4096):
        return  # slow to generate; RSA2048 stands for them
    key = generate_private_key(algorithm).public_key()
    assert key_type_of(key) is algorithm.key_type


def test_profiles_hold_key_types() -> None:
    for profile in DEFAULT_PROFILES.values():
        assert all(isinstance(k, KeyType) for k in profile.key_types), profile.name


@pytest.mark.parametrize(
    ("text", "key_type"),
    [
        ("p256", KeyType.P256),
        ("ecdsa-p256", KeyType.P256),
        ("EC-P384", KeyType.P384),
        ("prime256v1", KeyType.P256),
        ("ML-DSA-65", KeyType.MLDSA65),
        ("rsa", KeyType.RSA),
    ],
)
def test_settings_may_use_the_documented_aliases(text: str, key_type: KeyType) -> None:
    assert parse_key_type(text) is key_type
    profile = profile_from_mapping("device", {"key_types": [text]})
    assert profile.key_types == (key_type,)
    assert isinstance(profile.key_types[0], KeyType)


def test_aliases_are_not_names_inside_iotpki() -> None:
    with pytest.raises(ConfigError):
        Profile(
            name="x",
            identity="device",
            key_types=("ecdsa-p256",),  # type: ignore[arg-type]
            default_lifetime=DEFAULT_PROFILES["device"].default_lifetime,
            max_lifetime=DEFAULT_PROFILES["device"].max_lifetime,
            key_usage=("digital_signature",),
        )
    with pytest.raises(ConfigError, match="unknown key type 'dsa'"):
        parse_key_type("dsa")
