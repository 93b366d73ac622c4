"""The egress policy: which addresses ACME validation and webhooks may reach."""

from __future__ import annotations

from pathlib import Path

import pytest

from iotpki.errors import ConfigError, PolicyViolation
from iotpki.net.egress import EgressPolicy
from iotpki.settings import load_settings

STRICT = EgressPolicy()

INTERNAL = [
    "127.0.0.1",
    "127.255.255.254",
    "::1",
    "0.0.0.0",
    "::",
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "169.254.169.254",  # cloud metadata
    "fe80::1",
    "fe80::1%eth0",
    "fc00::1",
    "fd12:3456::1",
    "100.64.0.1",  # CGNAT
    "224.0.0.251",
    "ff02::1",
    "255.255.255.255",
    "240.0.0.1",
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:169.254.169.254",
    "::ffff:10.0.0.1",
    "::127.0.0.1",  # IPv4-compatible
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "fec0::1",
    "2001:db8::1",
]


@pytest.mark.parametrize("address", INTERNAL)
def test_internal_addresses_are_refused(address: str) -> None:
    with pytest.raises(PolicyViolation) as caught:
        STRICT.check(address)
    assert caught.value.data["rule"] == "egress"


@pytest.mark.parametrize(
    "address", ["93.184.215.14", "::ffff:93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"]
)
def test_public_addresses_pass(address: str) -> None:
    assert STRICT.check(address) == address


def test_allowed_networks_open_only_themselves() -> None:
    policy = EgressPolicy.from_text(["127.0.0.0/8", "10.20.0.0/16", "fd00::/8"])
    for address in ("127.0.0.1", "::ffff:127.0.0.1", "10.20.3.4", "fd00::5"):
        assert policy.check(address) == address
    for address in ("::1", "10.21.0.1", "169.254.169.254", "192.168.0.1"):
        with pytest.raises(PolicyViolation):
            policy.check(address)


def test_one_refused_address_refuses_the_name() -> None:
    """A name that resolves to a public and an internal address is refused whole."""
    with pytest.raises(PolicyViolation):
        STRICT.check_all(["93.184.215.14", "127.0.0.1"])
    with pytest.raises(PolicyViolation):
        STRICT.check_all([])
    assert STRICT.check_all(["93.184.215.14"]) == ["93.184.215.14"]


@pytest.mark.parametrize("name", ["localhost", "LOCALHOST.", "a.b.localhost", "10.0.0.1", "::1"])
def test_names_known_to_be_internal(name: str) -> None:
    """RFC 6761 section 6.3: localhost names are loopback; IP literals are themselves."""
    with pytest.raises(PolicyViolation):
        STRICT.check_name(name)
    if "localhost" in name.lower():
        EgressPolicy.from_text(["127.0.0.0/8"]).check_name(name)


def test_ordinary_names_wait_for_resolution() -> None:
    STRICT.check_name("example.com")
    STRICT.check_name("localhost.example.com")


def test_bad_allow_entries_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        EgressPolicy.from_text(["not-a-network"])
    (tmp_path / "iotpki.toml").write_text('egress_allow = ["127.0.0.0/33"]\n')
    with pytest.raises(ConfigError, match="egress_allow"):
        load_settings(tmp_path, environ={})
    settings = load_settings(tmp_path, environ={"IOTPKI_EGRESS_ALLOW": "127.0.0.0/8, 10.0.0.0/8"})
    assert settings.egress_allow == ("127.0.0.0/8", "10.0.0.0/8")
