"""The authority over a real store: SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificateIssuerPublicKeyTypes,
)
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.utils import Buffer
from sqlalchemy import delete, event, func, select, update

from iotpki.core.audit import verify_chain
from iotpki.core.authority import Authority, AuthorityConfig
from iotpki.core.models import (
    CAStatus,
    CertificateQuery,
    CertStatus,
    KeyAlgorithm,
    LintFinding,
    RevocationReason,
)
from iotpki.core.ports import KeyBackend
from iotpki.errors import (
    BadSignature,
    ConfigError,
    Conflict,
    KeyRejected,
    NotFound,
    PolicyViolation,
)
from iotpki.keys.held import HeldEcKey
from iotpki.services.installation import Installation
from iotpki.store import SqlStore, schema

from conftest import ManualClock, device_csr, make_installation

DER = Encoding.DER


def _certificate_count(inst: Installation) -> int:
    return inst.store.count_certificates()


def _actions(inst: Installation) -> list[str]:
    return [event.action for event in inst.store.audit_events()]


def test_issue_records_before_returning(any_inst: Installation) -> None:
    issued = any_inst.authority.issue(device_csr("dev-1"), profile="device", actor="test")
    stored = any_inst.authority.get(issued.record.serial)
    assert stored.der == issued.certificate.public_bytes(DER)
    assert stored.device_id == "dev-1"
    assert issued.certificate.serial_number.bit_length() >= 64
    issued.certificate.verify_directly_issued_by(issued.chain[1])
    assert _actions(any_inst)[-1] == "certificate.issued"


def test_refusal_is_audited_and_changes_nothing(any_inst: Installation) -> None:
    before = _certificate_count(any_inst)
    with pytest.raises(PolicyViolation):
        any_inst.authority.issue(device_csr("dev-1"), profile="device", actor="t", device_id="x")
    with pytest.raises(NotFound):
        any_inst.authority.issue(device_csr("dev-1"), profile="nope", actor="t")
    with pytest.raises(NotFound):
        any_inst.authority.issue(device_csr("dev-1"), profile="device", ca="nope", actor="t")
    assert _certificate_count(any_inst) == before
    assert _actions(any_inst)[-3:] == ["certificate.issue.refused"] * 3


def test_bad_csr_signature_refused(inst: Installation) -> None:
    der = device_csr("dev-1").public_bytes(DER)
    forged = x509.load_der_x509_csr(der.replace(b"dev-1", b"dev-2"))  # body changed, signature not
    with pytest.raises(BadSignature):
        inst.authority.issue(forged, profile="device", actor="t")


def test_key_reuse_across_devices_refused(any_inst: Installation) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    any_inst.authority.issue(device_csr("dev-1", key=key), profile="device", actor="t")
    any_inst.authority.issue(device_csr("dev-1", key=key), profile="device", actor="t")
    with pytest.raises(KeyRejected, match="another identity"):
        any_inst.authority.issue(device_csr("dev-2", key=key), profile="device", actor="t")


def test_key_compromise_blocks_key(any_inst: Installation) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    issued = any_inst.authority.issue(device_csr("dev-1", key=key), profile="device", actor="t")
    revoked = any_inst.authority.revoke(
        issued.record.serial, reason=RevocationReason.KEY_COMPROMISE, actor="t"
    )
    assert revoked.status is CertStatus.REVOKED
    assert revoked.revocation_reason is RevocationReason.KEY_COMPROMISE
    with pytest.raises(KeyRejected, match="compromise"):
        any_inst.authority.issue(device_csr("dev-1", key=key), profile="device", actor="t")
    with pytest.raises(Conflict, match="already revoked"):
        any_inst.authority.revoke(
            issued.record.serial, reason=RevocationReason.SUPERSEDED, actor="t"
        )


def test_renew_keeps_identity(inst: Installation, clock: ManualClock) -> None:
    first = inst.authority.issue(device_csr("dev-1"), profile="device", actor="t")
    clock.advance(timedelta(days=20))
    same_key = inst.authority.renew(first.record.serial, actor="t")
    assert same_key.record.key_fingerprint == first.record.key_fingerprint
    assert same_key.certificate.subject == first.certificate.subject
    rekeyed = inst.authority.renew(first.record.serial, csr=device_csr("dev-1"), actor="t")
    assert rekeyed.record.key_fingerprint != first.record.key_fingerprint
    with pytest.raises(PolicyViolation):
        inst.authority.renew(first.record.serial, csr=device_csr("dev-2"), actor="t")


def test_search_filters(inst: Installation, clock: ManualClock) -> None:
    for n in range(3):
        inst.authority.issue(device_csr(f"pump-{n}"), profile="device", actor="t")
    inst.authority.issue(
        device_csr("gw-1"), profile="gateway", actor="t", lifetime=timedelta(days=2)
    )
    assert len(inst.authority.search(CertificateQuery(subject_contains="pump"))) == 3
    assert len(inst.authority.search(CertificateQuery(profile="gateway"))) == 1
    soon = clock.now() + timedelta(days=3)
    expiring = inst.authority.search(CertificateQuery(expiring_before=soon, profile="gateway"))
    assert [r.device_id for r in expiring] == ["gw-1"]
    assert inst.authority.search(CertificateQuery(subject_contains="%")) == []


def test_several_issuing_cas(inst: Installation) -> None:
    inst.authority.create_issuing(
        "meters",
        parent="root",
        common_name="Meters CA",
        algorithm=KeyAlgorithm.P384,
        lifetime=timedelta(days=365),
        backend="file",
        actor="t",
    )
    issued = inst.authority.issue(device_csr("m-1"), profile="device", ca="meters", actor="t")
    assert issued.record.ca_name == "meters"
    assert issued.certificate.issuer.rfc4514_string() == "CN=Meters CA"


def test_revoking_a_sub_ca_stops_it(inst: Installation) -> None:
    ca_cert = inst.authority.get_ca("issuing").certificate
    inst.authority.revoke(
        format(ca_cert.serial_number, "x"), reason=RevocationReason.CA_COMPROMISE, actor="t"
    )
    assert inst.authority.get_ca("issuing").status is CAStatus.REVOKED
    with pytest.raises(Conflict):
        inst.authority.issue(device_csr("dev-1"), profile="device", ca="issuing", actor="t")
    with pytest.raises(ConfigError, match="no active issuing CA"):
        inst.authority.issue(device_csr("dev-1"), profile="device", actor="t")


def test_offline_root(tmp_path: Path) -> None:
    root_machine = make_installation(tmp_path / "root")  # has root + issuing
    online = make_installation(tmp_path / "online")
    csr = online.authority.create_ca_csr(
        "plant-a", common_name="Plant A CA", algorithm=KeyAlgorithm.P256, backend="file", actor="t"
    )
    assert online.authority.get_ca("plant-a").status is CAStatus.PENDING
    cert = root_machine.authority.sign_ca_csr(csr, parent="root", actor="t")
    root_cert = root_machine.authority.get_ca("root").certificate
    online.authority.import_ca(
        "plant-a", cert, parent_certificate=root_cert, parent_name="offline-root", actor="t"
    )
    issued = online.authority.issue(device_csr("p-1"), profile="device", ca="plant-a", actor="t")
    chain = online.authority.chain("plant-a")
    assert chain[-1] == root_cert
    issued.certificate.verify_directly_issued_by(chain[0])
    offline = online.authority.get_ca("offline-root")
    assert offline.key_ref is None


def test_audit_chain_intact_and_tamper_evident(any_inst: Installation) -> None:
    for n in range(4):
        any_inst.authority.issue(device_csr(f"dev-{n}"), profile="device", actor="t")
    store = any_inst.store
    assert verify_chain(store.audit_events(), store.audit_head()).ok
    events = schema.audit_events
    with store.engine.begin() as conn:
        conn.execute(update(events).where(events.c.seq == 3).values(actor="mallory"))
    report = verify_chain(store.audit_events(), store.audit_head())
    assert (report.ok, report.first_bad_seq) == (False, 3)


def test_audit_deletion_detected(inst: Installation) -> None:
    inst.authority.issue(device_csr("dev-1"), profile="device", actor="t")
    with inst.store.engine.begin() as conn:
        conn.execute(delete(schema.audit_events).where(schema.audit_events.c.seq == 2))
    report = verify_chain(inst.store.audit_events(), inst.store.audit_head())
    assert (report.ok, report.first_bad_seq) == (False, 2)


def test_audit_chain_linear_under_concurrent_writers(any_inst: Installation) -> None:
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(10):
                any_inst.authority.issue(device_csr(f"c{n}-{i}"), profile="device", actor="t")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    report = verify_chain(any_inst.store.audit_events(), any_inst.store.audit_head())
    assert report.ok
    with any_inst.store.engine.connect() as conn:
        issued = conn.execute(
            select(func.count())
            .select_from(schema.audit_events)
            .where(schema.audit_events.c.action == "certificate.issued")
        ).scalar_one()
    assert issued == 40


def test_background_lint_keeps_findings(inst: Installation) -> None:
    issued = inst.authority.issue(device_csr("dev-1"), profile="device", actor="t")
    assert inst.authority.lint_pending() >= 1
    record = inst.authority.get(issued.record.serial)
    assert record.lint_status == "pass"


def test_settings_changes_are_audited(tmp_path: Path, clock: ManualClock) -> None:
    from iotpki.services.installation import open_installation

    from conftest import make_settings

    home = tmp_path / "home"
    make_installation(home, clock=clock).close()
    open_installation(make_settings(home), clock=clock).close()
    changed = open_installation(make_settings(home, organization="Acme"), clock=clock)
    events = [e for e in changed.store.audit_events() if e.action == "settings.changed"]
    assert len(events) == 2
    assert events[-1].data["changed"] == ["organization"]
    assert "test-passphrase" not in str(events[-1].data)


@pytest.mark.parametrize(
    "algorithm",
    [
        KeyAlgorithm.P384,
        KeyAlgorithm.RSA3072,
        KeyAlgorithm.ED25519,
        KeyAlgorithm.MLDSA44,
        KeyAlgorithm.MLDSA65,
    ],
)
def test_every_ca_algorithm_issues_linted_certificates(
    tmp_path: Path, clock: ManualClock, algorithm: KeyAlgorithm
) -> None:
    from iotpki.services.installation import open_installation

    from conftest import make_settings

    inst = open_installation(make_settings(tmp_path / "home"), create=True, clock=clock)
    inst.initialise(root_algorithm=algorithm, issuing_algorithm=algorithm, actor="t")
    issued = inst.authority.issue(device_csr("dev-1"), profile="device", actor="t")
    issued.certificate.verify_directly_issued_by(issued.chain[1])
    issued.chain[1].verify_directly_issued_by(inst.authority.chain("issuing")[-1])
    inst.authority.lint_pending()
    assert inst.authority.get(issued.record.serial).lint_status == "pass"


class _CountingKey(HeldEcKey):
    """A CA key that counts its signatures (as an HSM would bill them)."""

    where = "test"
    export_refusal = "is counted"

    def __init__(self, inner: ec.EllipticCurvePrivateKey, counter: list[int]) -> None:
        super().__init__("counted", inner.public_key())
        self._inner = inner
        self._counter = counter

    def sign(self, data: Buffer, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        self._counter.append(1)
        return self._inner.sign(data, signature_algorithm)


class _CountingBackend:
    """The installation's file backend, with every signer counted."""

    name = "file"

    def __init__(self, inner: KeyBackend) -> None:
        self._inner = inner
        self.signatures: list[int] = []

    def generate(self, label: str, algorithm: KeyAlgorithm) -> str:
        return self._inner.generate(label, algorithm)

    def signer(self, key_ref: str) -> CertificateIssuerPrivateKeyTypes:
        key = self._inner.signer(key_ref)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return _CountingKey(key, self.signatures)

    def public_key(self, key_ref: str) -> CertificateIssuerPublicKeyTypes:
        return self._inner.public_key(key_ref)


class _RecordingLinter:
    """Keeps every draft it lints; fails those whose subject is ``CN=lint-me``."""

    def __init__(self) -> None:
        self.drafts: list[x509.Certificate] = []

    def lint(self, der: bytes) -> list[LintFinding]:
        draft = x509.load_der_x509_certificate(der)
        self.drafts.append(draft)
        if draft.subject.rfc4514_string() == "CN=lint-me":
            return [LintFinding("ERROR", "test.failure", "tbsCertificate", "refused by the test")]
        return []


def _linted_authority(
    inst: Installation, clock: ManualClock
) -> tuple[Authority, _CountingBackend, _RecordingLinter]:
    backend = _CountingBackend(inst.keys["file"])
    linter = _RecordingLinter()
    profiles = {
        name: replace(profile, lint="always")
        for name, profile in inst.settings.resolved_profiles().items()
    }
    config = AuthorityConfig(public_base_url="http://pki.test", profiles=profiles)
    return (
        Authority(inst.store, {"file": backend}, config, clock=clock, linter=linter),
        backend,
        linter,
    )


def test_lint_failure_never_reaches_the_ca_key(inst: Installation, clock: ManualClock) -> None:
    authority, backend, linter = _linted_authority(inst, clock)
    with pytest.raises(PolicyViolation, match=r"pre-issuance lint failed: test\.failure"):
        authority.issue(device_csr("lint-me"), profile="device", actor="t")
    assert linter.drafts  # the template and the refused draft were linted
    assert backend.signatures == []  # and the CA key signed nothing


def test_the_linted_draft_is_the_issued_certificate(inst: Installation, clock: ManualClock) -> None:
    authority, backend, linter = _linted_authority(inst, clock)
    issued = authority.issue(device_csr("dev-9"), profile="device", actor="t")
    draft = linter.drafts[-1]
    assert backend.signatures == [1]
    assert draft.serial_number == issued.certificate.serial_number
    assert draft.tbs_certificate_bytes == issued.certificate.tbs_certificate_bytes


def test_reads_pass_a_held_write_lock(inst: Installation) -> None:
    issued = inst.authority.issue(device_csr("dev-1"), profile="device", actor="t")
    store = SqlStore(str(inst.store.engine.url))

    @event.listens_for(store.engine, "connect")
    def _short_wait(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute("PRAGMA busy_timeout=50")  # a write would fail fast, not hang

    config = AuthorityConfig(public_base_url="http://pki.test")
    authority = Authority(store, inst.keys, config)
    writer = sqlite3.connect(store.engine.url.database or "", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # another process holds the write lock throughout
    try:
        assert [ca.name for ca in authority.list_cas()] == ["root", "issuing"]
        assert authority.get_ca("issuing").status is CAStatus.ACTIVE
        assert len(authority.chain("issuing")) == 2
        assert authority.get(issued.record.serial).device_id == "dev-1"
        assert [r.serial for r in authority.search(CertificateQuery(device_id="dev-1"))] == [
            issued.record.serial
        ]
        assert authority.attested([issued.record]) == set()
    finally:
        writer.execute("ROLLBACK")
        writer.close()
        store.dispose()
