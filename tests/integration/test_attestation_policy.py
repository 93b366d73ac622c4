"""Policy on attested keys: a profile may require attestation; the attestation is recorded with
the certificate in the issuing transaction, carried over by a same-key renewal and shown by the
admin API as ``attested``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from iotpki.core.access import create_token
from iotpki.core.keytypes import key_fingerprint
from iotpki.core.models import KeyAttestation, Role
from iotpki.errors import AttestationRejected, PolicyViolation
from iotpki.server import Service, build_https_app
from iotpki.services.installation import Installation

from conftest import ManualClock, device_csr, make_installation

PROFILES = {
    "tpm-device": {
        "identity": "device",
        "key_types": ["p256"],
        "default_lifetime": "30d",
        "max_lifetime": "90d",
        "key_usage": ["digital_signature"],
        "extended_key_usage": ["clientAuth"],
        "require_attestation": True,
    }
}


@pytest.fixture
def strict(tmp_path: Path, clock: ManualClock) -> Iterator[Installation]:
    inst = make_installation(tmp_path / "home", clock=clock, profiles=PROFILES)
    yield inst
    inst.close()


def attestation_of(key: ec.EllipticCurvePrivateKey, clock: ManualClock) -> KeyAttestation:
    return KeyAttestation(
        key_fingerprint=key_fingerprint(key.public_key()),
        method="tpm",
        attested_at=clock.now(),
        device_identity="permanent-identifier:dev-1",
        ak_fingerprint="a" * 64,
        ak_issuer="CN=AK CA",
        root_fingerprint="b" * 64,
        root_subject="CN=Root",
    )


def audited(inst: Installation, action: str) -> list[dict[str, object]]:
    return [dict(e.data) for e in inst.store.audit_events() if e.action == action]


def test_required_attestation_refuses_a_plain_key(strict: Installation) -> None:
    with pytest.raises(PolicyViolation, match="requires a TPM-attested key"):
        strict.authority.issue(
            device_csr("dev-1"), profile="tpm-device", actor="t", device_id="dev-1"
        )
    assert audited(strict, "certificate.issue.refused")[-1]["profile"] == "tpm-device"


def test_attestation_of_another_key_is_refused(strict: Installation, clock: ManualClock) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(AttestationRejected) as info:
        strict.authority.issue(
            device_csr("dev-1"),
            profile="tpm-device",
            actor="t",
            device_id="dev-1",
            attestation=attestation_of(other, clock),
        )
    assert info.value.data["check"] == "csr_key"
    assert audited(strict, "certificate.issue.refused")[-1]["code"] == "bad_attestation"


def test_attested_issue_record_renewal_and_api(strict: Installation, clock: ManualClock) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    authority = strict.authority
    issued = authority.issue(
        device_csr("dev-1", key),
        profile="tpm-device",
        actor="t",
        device_id="dev-1",
        attestation=attestation_of(key, clock),
    )
    record = authority.attestation(issued.record.serial)
    assert record is not None
    assert (record.ca_name, record.serial) == (issued.record.ca_name, issued.record.serial)
    assert audited(strict, "certificate.issued")[-1]["attested"] == "tpm"

    renewed = authority.renew(issued.record.serial, actor="t")  # same key: attestation carries
    assert authority.attestation(renewed.record.serial) is not None
    with pytest.raises(PolicyViolation):  # a new key was never attested
        authority.renew(issued.record.serial, actor="t", csr=device_csr("dev-1"))

    plain = authority.issue(device_csr("dev-2"), profile="device", actor="t", device_id="dev-2")
    assert authority.attestation(plain.record.serial) is None
    assert authority.attested([issued.record, plain.record]) == {
        (issued.record.ca_name, issued.record.serial)
    }

    token = create_token(strict.store, clock, role=Role.ADMIN, description="", actor="t")[0]
    app = build_https_app(Service(strict))

    async def get(path: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as c:
            return await c.get(path, headers={"authorization": f"Bearer {token}"})

    shown = asyncio.run(get(f"/api/v1/certificates/{issued.record.serial}")).json()
    assert shown["attested"] is True
    listed = asyncio.run(get("/api/v1/certificates?limit=50")).json()["items"]
    flags = {item["serial"]: item["attested"] for item in listed}
    assert flags[issued.record.serial] is True and flags[plain.record.serial] is False
