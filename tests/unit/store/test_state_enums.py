"""Enrollment states come out of the store as the core's enums, and stay plain strings in JSON."""

from __future__ import annotations

import json
from datetime import datetime

from cryptography.hazmat.primitives.serialization import Encoding

from iotpki.core.models import (
    ApprovalRecord,
    ApprovalStatus,
    BootstrapCARecord,
    BootstrapCAStatus,
    DeviceRecord,
    DeviceStatus,
    EnrollMethod,
    EnrollPolicy,
    ScepTransactionKind,
    ScepTransactionRecord,
    ScepTransactionStatus,
)
from iotpki.services.installation import Installation

NOW = datetime.fromisoformat("2026-01-01T00:00:00+00:00")


def test_store_maps_states_to_enums(inst: Installation) -> None:
    der = inst.authority.chain("issuing")[0].public_bytes(Encoding.DER)
    with inst.store.transaction() as tx:
        tx.add_device(DeviceRecord("dev-1", created_at=NOW))
        tx.put_bootstrap_ca(
            BootstrapCARecord("mfr", der, "00" * 32, EnrollPolicy.ANY, created_at=NOW)
        )
        tx.add_approval(
            ApprovalRecord(
                "req-1", "dev-1", EnrollMethod.SECRET, "device", None, "11" * 32,
                ApprovalStatus.PENDING, NOW,
            )
        )  # fmt: skip
        tx.add_scep_transaction(
            ScepTransactionRecord(
                "issuing", "tx-1", ScepTransactionKind.ENROLL, ScepTransactionStatus.PENDING,
                "22" * 32, None, "dev-1", "device", NOW, NOW,
            )
        )  # fmt: skip
    with inst.store.transaction() as tx:
        device = tx.get_device("dev-1")
        bootstrap = tx.get_bootstrap_ca("mfr")
        approval = tx.get_approval("req-1")
        transaction = tx.get_scep_transaction("issuing", "tx-1")
    assert device is not None and device.status is DeviceStatus.ACTIVE
    assert bootstrap is not None and bootstrap.status is BootstrapCAStatus.ACTIVE
    assert bootstrap.enroll_policy is EnrollPolicy.ANY
    assert approval is not None and approval.status is ApprovalStatus.PENDING
    assert approval.method is EnrollMethod.SECRET
    assert transaction is not None and transaction.status is ScepTransactionStatus.PENDING
    assert transaction.kind is ScepTransactionKind.ENROLL
    assert json.dumps([approval.status, transaction.kind]) == '["pending", "enroll"]'
