"""The SCEP tables on each database: challenges are consumed once, transactions upsert."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from iotpki.core.models import ScepTransactionRecord
from iotpki.core.scep import ScepService
from iotpki.installation import Installation


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
