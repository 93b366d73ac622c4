"""``iotpki akca``: registering EK manufacturer roots makes the AK CA's CA a device-attest-01
root; withdrawing them removes it again. Every change is audited."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner

from iotpki.cli.main import app
from iotpki.errors import MalformedInput
from iotpki.services.attestation import AttestationTrust, EkRoots

from conftest import make_installation


def _root(ca: bool = True) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "TPM Vendor EK Root")])
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


def test_trust_list_untrust(tmp_path: Path) -> None:
    home = tmp_path / "home"
    inst = make_installation(home)
    roots = EkRoots(inst.store, home)
    root = _root()
    pem_file = tmp_path / "vendor.pem"
    pem_file.write_bytes(root.public_bytes(serialization.Encoding.PEM))
    runner = CliRunner(env={"IOTPKI_PASSPHRASE": "test-passphrase"})

    result = runner.invoke(app, ["--home", str(home), "akca", "trust-ek-root", str(pem_file)])
    assert result.exit_code == 0, result.output
    listed = runner.invoke(app, ["--home", str(home), "akca", "list"])
    assert "TPM Vendor EK Root" in listed.output and "device-attest-01" in listed.output
    audit = runner.invoke(app, ["--home", str(home), "audit", "verify"])
    assert audit.exit_code == 0, audit.output

    fingerprint = roots.add(root, datetime.now(UTC))
    result = runner.invoke(app, ["--home", str(home), "akca", "untrust-ek-root", fingerprint])
    assert result.exit_code == 0, result.output
    assert roots.certificates() == []
    missing = runner.invoke(app, ["--home", str(home), "akca", "untrust-ek-root", fingerprint])
    assert missing.exit_code != 0
    inst.close()


def test_roots_an_older_release_kept_as_files_move_into_the_store(tmp_path: Path) -> None:
    inst = make_installation(tmp_path / "home")
    try:
        legacy = inst.home / "akca" / "ek-roots"
        legacy.mkdir(parents=True)
        root = _root()
        (legacy / "vendor.pem").write_bytes(root.public_bytes(serialization.Encoding.PEM))
        EkRoots(inst.store, inst.home)
        other_replica = EkRoots(inst.store, tmp_path / "empty-home")
        assert other_replica.certificates() == [root]
    finally:
        inst.close()


def test_roots_follow_the_registered_ek_roots(tmp_path: Path) -> None:
    inst = make_installation(tmp_path / "home")
    try:
        roots = EkRoots(inst.store, inst.home)
        trust = AttestationTrust(inst.settings, inst.authority, roots)
        assert trust.roots() == []
        roots.add(_root(), inst.authority.clock.now())
        issuing = inst.authority.chain(inst.authority.default_issuing_ca())[0]
        assert trust.roots() == [issuing]
        actions = [e.action for e in inst.store.audit_events()]
        assert "akca.ek_root.trusted" not in actions  # only the CLI audits (it is the actor)
    finally:
        inst.close()


def test_non_ca_root_is_refused(tmp_path: Path) -> None:
    inst = make_installation(tmp_path / "home")
    try:
        with pytest.raises(MalformedInput):
            EkRoots(inst.store, inst.home).add(_root(ca=False), datetime.now(UTC))
    finally:
        inst.close()
