"""The agent's pure parts: trust-anchor acceptance, renewal time, back-off, storage, config."""

from __future__ import annotations

import os
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from iotpki.agent import Agent, AgentConfig, load_config
from iotpki.agent.agent import accept_anchors
from iotpki.agent.store import IdentityStore
from iotpki.errors import ConfigError

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def _cert(
    cn: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[str, ec.EllipticCurvePrivateKey] | None = None,
    lifetime: timedelta = timedelta(days=30),
) -> x509.Certificate:
    issuer_cn, issuer_key = issuer or (cn, key)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW)
        .not_valid_after(NOW + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(issuer_key, hashes.SHA256())
    )


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def test_anchors_must_chain_to_what_is_trusted() -> None:
    old_key, new_key, evil_key, sub_key = _key(), _key(), _key(), _key()
    old_root = _cert("Root", old_key)
    cross = _cert("Root 2", new_key, ("Root", old_key))  # new root cross-signed by the old
    new_root = _cert("Root 2", new_key)  # its self-signed twin
    sub = _cert("Issuing 2", sub_key, ("Root 2", new_key))
    evil = _cert("Root", evil_key)  # same name as the old root, other key
    accepted = accept_anchors([old_root], [evil, sub, new_root, cross])
    assert set(accepted) == {old_root, cross, new_root, sub}
    assert accept_anchors([old_root], [new_root]) == [old_root]


def test_pinned_fingerprint_is_accepted() -> None:
    root = _cert("Root", _key())
    pin = root.fingerprint(hashes.SHA256()).hex()
    assert accept_anchors([], [root], pin) == [root]
    assert accept_anchors([], [root], "00" * 32) == []


def _config(tmp_path: Path, **extra: object) -> AgentConfig:
    return AgentConfig(
        server="https://127.0.0.1:8443",
        device_id="dev-1",
        state_dir=tmp_path / "state",
        **extra,  # type: ignore[arg-type]
    )


def test_renewal_time_has_jitter_below_the_fraction(tmp_path: Path) -> None:
    agent = Agent(_config(tmp_path, jitter_fraction=0.1), rng=random.Random(1))
    times = []
    for _ in range(50):
        cert = _cert("dev-1", _key(), lifetime=timedelta(days=30))
        times.append(agent.renew_at(cert))
    latest = NOW + timedelta(days=20)  # one third of 30 days remains
    earliest = latest - timedelta(days=3)
    assert all(earliest <= t <= latest for t in times)
    assert max(times) - min(times) > timedelta(days=2)


def test_backoff_grows_and_is_capped(tmp_path: Path) -> None:
    agent = Agent(_config(tmp_path, backoff_initial=10.0, backoff_max=300.0))
    waits = [agent.backoff(n) for n in range(1, 12)]
    assert 5 <= waits[0] <= 10
    assert 40 <= waits[3] <= 80
    assert all(w <= 300 for w in waits)
    assert waits[-1] >= 150


def test_uncommitted_generation_leaves_the_identity_usable(tmp_path: Path) -> None:
    store = IdentityStore(tmp_path / "state")
    first = _cert("dev-1", _key())
    generation = store.new_generation()
    store.write_key(generation, _key())
    store.commit(generation, first, [])
    crashed = store.new_generation()  # a renewal that died before commit
    store.write_key(crashed, _key())
    (crashed / "cert.pem").write_bytes(b"partial")
    loaded = store.load()
    assert loaded is not None and loaded.certificate == first
    assert os.stat(loaded.key_path).st_mode & 0o777 == 0o600
    second = _cert("dev-1", _key())
    generation = store.new_generation()
    store.write_key(generation, _key())
    store.commit(generation, second, [])
    loaded = store.load()
    assert loaded is not None and loaded.certificate == second
    assert not crashed.exists()


def test_config_file_and_validation(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(
        'server = "https://est.example:8443"\ndevice_id = "d"\nstate_dir = "/tmp/x"\n'
        "renew_fraction = 0.25\n"
    )
    config = load_config(path, environ={"IOTPKI_AGENT_LABEL": "gateway"})
    assert config.renew_fraction == 0.25 and config.label == "gateway"
    with pytest.raises(ConfigError):
        load_config(path, environ={}, server="http://plain")
    path.write_text('server = "https://x"\nbogus = 1\n')
    with pytest.raises(ConfigError):
        load_config(path, environ={})
    with pytest.raises(ConfigError):
        _config(tmp_path, renew_fraction=0.1, jitter_fraction=0.2)
    with pytest.raises(ConfigError):
        _config(tmp_path, key_store="pkcs11")
