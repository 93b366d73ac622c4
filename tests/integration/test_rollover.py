"""Root and issuing-CA rollover: cross-certificates, EST cacerts, agents adopting the new
anchor, chains verifying from either anchor, renewals moving to the successor, retirement."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from starlette.testclient import TestClient

from channelkit import issue
from iotpki.agent.agent import accept_anchors
from iotpki.core.models import CAStatus
from iotpki.core.rollover import renew_issuing, retire_root, roll_root
from iotpki.errors import Conflict
from iotpki.protocols.est import messages
from iotpki.server import Service, build_https_app
from iotpki.services.installation import Installation

from conftest import ManualClock

EST = "https://est.test/.well-known/est"


@pytest.fixture
def inst(any_inst: Installation) -> Installation:
    """Rollover runs on SQLite and PostgreSQL."""
    return any_inst


@pytest.fixture
def client(inst: Installation) -> Iterator[TestClient]:
    with TestClient(build_https_app(Service(inst)), base_url="https://est.test") as c:
        yield c


def _cacerts(client: TestClient) -> list[x509.Certificate]:
    response = client.get(f"{EST}/cacerts")
    assert response.status_code == 200
    return messages.parse_certs_only(messages.decode_b64(response.content))


def _verifies(leaf: x509.Certificate, anchor: x509.Certificate, *others: x509.Certificate) -> bool:
    """Whether OpenSSL (what TLS peers and mosquitto use) finds a path to ``anchor``."""
    with tempfile.TemporaryDirectory() as tmp:
        files = {"anchor": [anchor], "others": list(others), "leaf": [leaf]}
        for name, certs in files.items():
            Path(tmp, name).write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in certs))
        command = ["openssl", "verify", "-CAfile", f"{tmp}/anchor"]
        if others:
            command += ["-untrusted", f"{tmp}/others"]
        done = subprocess.run([*command, f"{tmp}/leaf"], capture_output=True, check=False)
    return done.returncode == 0


def test_root_rollover_keeps_every_path(
    inst: Installation, client: TestClient, tmp_path: Path, clock: ManualClock
) -> None:
    authority = inst.authority
    old_root, old_issuing = authority.get_ca("root").certificate, authority.chain("issuing")[0]
    before = issue(inst, tmp_path / "before", "dev-1")
    done = roll_root(authority, "root", new_root="root-g2", overlap=timedelta(days=30), actor="t")
    assert done.successors == {"issuing": "issuing-root-g2"}
    assert authority.get_ca("issuing").status is CAStatus.RETIRED
    assert authority.default_issuing_ca() == "issuing-root-g2"
    new_root = authority.get_ca("root-g2").certificate
    new_with_old = authority.get_ca(done.new_with_old).certificate
    old_with_new = authority.get_ca(done.old_with_new).certificate
    new_with_old.verify_directly_issued_by(old_root)
    old_with_new.verify_directly_issued_by(new_root)

    after = issue(inst, tmp_path / "after", "dev-2")
    successor = authority.chain("issuing-root-g2")[0]
    assert after.certificate.issuer == successor.subject
    # a party trusting only the old root accepts the new chain through new-with-old, and one
    # trusting only the new root accepts the old chain through old-with-new
    assert _verifies(after.certificate, old_root, successor, new_with_old)
    assert not _verifies(after.certificate, old_root, successor)
    assert _verifies(before.certificate, new_root, old_issuing, old_with_new)

    # an agent that trusts the old root adopts the new one from EST cacerts
    offered = _cacerts(client)
    assert {new_root, new_with_old, old_root} <= set(offered)
    adopted = accept_anchors([old_root, old_issuing], offered)
    assert new_root in adopted and successor in adopted

    # renewal of a certificate of the retired CA comes from its successor
    renewed = authority.renew(before.issued.record.serial, actor="t")
    assert renewed.record.ca_name == "issuing-root-g2"

    with pytest.raises(Conflict):
        retire_root(authority, "root", actor="t")  # the overlap is still running
    clock.advance(timedelta(days=31))
    retired = retire_root(authority, "root", actor="t")
    assert set(retired) == {"root", done.new_with_old, done.old_with_new}
    assert old_root not in _cacerts(client)
    actions = [e.action for e in inst.store.audit_events()]
    assert "ca.rollover" in actions and "ca.cross_certified" in actions


def test_cross_certificate_that_does_not_chain_is_ignored(
    inst: Installation, client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    old_root = inst.authority.get_ca("root").certificate
    done = roll_root(inst.authority, "root", new_root="r2", overlap=timedelta(days=1), actor="t")
    genuine = inst.authority.get_ca(done.new_with_old).certificate
    impostor_key = ec.generate_private_key(ec.SECP256R1())
    forged = (
        x509.CertificateBuilder()
        .subject_name(genuine.subject)
        .issuer_name(old_root.subject)
        .public_key(impostor_key.public_key())
        .serial_number(1)
        .not_valid_before(genuine.not_valid_before_utc)
        .not_valid_after(genuine.not_valid_after_utc)
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .sign(impostor_key, hashes.SHA256())
    )
    adopted = accept_anchors([old_root], [forged])
    assert adopted == [old_root]
    assert "does not chain" in caplog.text


def test_issuing_ca_renewal_overlaps(inst: Installation, tmp_path: Path) -> None:
    authority = inst.authority
    old = authority.chain("issuing")[0]
    device = issue(inst, tmp_path / "d", "dev-3")
    successor = renew_issuing(authority, "issuing", new="issuing-2", actor="t")
    new = successor.certificate
    assert new.not_valid_before_utc < old.not_valid_after_utc  # overlapping validity
    assert authority.default_issuing_ca() == "issuing-2"
    root = authority.get_ca("root").certificate
    assert _verifies(device.certificate, root, old)  # old certificates stay valid
    assert authority.renew(device.issued.record.serial, actor="t").record.ca_name == "issuing-2"
    with pytest.raises(Conflict):
        renew_issuing(authority, "issuing", new="issuing-3", actor="t")  # retired already
