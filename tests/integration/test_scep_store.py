"""The SCEP tables on each database: challenges are consumed once, transactions upsert."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from iotpki.core.models import ScepTransactionRecord
from iotpki.core.scep import ScepService
from iotpki.services.installation import Installation
from scepkit import Device, rsa_key


def test_challenge_is_consumed_once(any_inst: Installation) -> None:
    service = ScepService(any_inst.authority, any_inst.keys)
    _, record = service.create_challenge("dev-1", actor="test", lifetime=timedelta(hours=1))
    now = any_inst.authority.clock.now()
    with any_inst.store.transaction() as tx:
        assert tx.get_scep_challenge(record.secret_hash) == record
        assert tx.use_scep_challenge(record.challenge_id, now, "t-1")
        assert not tx.use_scep_challenge(record.challenge_id, now, "t-2")
    with any_inst.store.transaction(readonly=True) as tx:
        used = tx.get_scep_challenge(record.secret_hash)
    assert used is not None and used.used_at == now and used.transaction_id == "t-1"


def test_transactions_upsert_and_list_by_status(any_inst: Installation) -> None:
    now = any_inst.authority.clock.now()
    record = ScepTransactionRecord(
        ca_name="issuing",
        transaction_id="t/1",
        kind="enroll",
        status="pending",
        key_fingerprint="ab" * 32,
        csr_der=b"csr",
        device_id="dev-1",
        profile="device",
        created_at=now,
        updated_at=now,
    )
    with any_inst.store.transaction() as tx:
        tx.add_scep_transaction(record)
        assert tx.list_scep_transactions("pending", 10) == [record]
        done = replace(record, status="success", serial="1f")
        assert tx.replace_scep_transaction(record, done)
        assert not tx.replace_scep_transaction(record, done)  # no longer as seen
        assert tx.get_scep_transaction("issuing", "t/1") == done
        assert tx.list_scep_transactions("pending", 10) == []


def test_ra_is_made_once_and_kept(any_inst: Installation) -> None:
    service = ScepService(any_inst.authority, any_inst.keys)
    first = service.registration_authorities("issuing")
    again = ScepService(any_inst.authority, any_inst.keys).registration_authorities("issuing")
    assert [ra.certificate for ra in first] == [ra.certificate for ra in again]
    assert first[0].record.key_backend == "file"


def test_a_pending_request_is_kept_sealed_and_dropped_once_decided(any_inst: Installation) -> None:
    """Issue 13: the CSR carries the challenge password; only the RA can read it back."""
    service = ScepService(any_inst.authority, any_inst.keys)
    password, _ = service.create_challenge("dev-9", actor="test", approval=True)
    device = Device("dev-9", rsa_key(90))
    csr = x509.load_der_x509_csr(device.csr(password))
    pending = service.enroll(csr, password, ca="issuing", transaction_id="t-9", actor="test")
    stored = pending.transaction
    assert stored.status == "pending" and stored.csr_der is None
    assert stored.sealed_csr is not None and password.encode() not in stored.sealed_csr
    assert stored.sealed_by == service.registration_authorities("issuing")[0].record.serial
    done = service.decide("issuing", "t-9", approve=True, actor="test")
    assert done.issued is not None and done.issued.certificate.public_key() == csr.public_key()
    with any_inst.store.transaction(readonly=True) as tx:
        after = tx.get_scep_transaction("issuing", "t-9")
    assert after is not None and after.status == "success"
    assert (after.csr_der, after.sealed_csr, after.sealed_by) == (None, None, None)


def test_a_request_pending_from_before_sealing_is_still_approved(any_inst: Installation) -> None:
    """A pending row upgraded by scep_0002 keeps its clear CSR until decided, then drops it."""
    service = ScepService(any_inst.authority, any_inst.keys)
    csr = x509.load_der_x509_csr(Device("dev-10", rsa_key(91)).csr(None))
    now = any_inst.authority.clock.now()
    legacy = ScepTransactionRecord(
        ca_name="issuing",
        transaction_id="t-10",
        kind="enroll",
        status="pending",
        key_fingerprint="cd" * 32,
        csr_der=csr.public_bytes(serialization.Encoding.DER),
        device_id="dev-10",
        profile="device",
        created_at=now,
        updated_at=now,
    )
    with any_inst.store.transaction() as tx:
        tx.add_scep_transaction(legacy)
    done = service.decide("issuing", "t-10", approve=True, actor="test")
    assert done.issued is not None and done.transaction.csr_der is None
