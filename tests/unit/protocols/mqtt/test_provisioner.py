"""The provisioning service's answers without a broker: topics, claims, renewals, duplicates,
approvals, refusals and the per-client rate limit."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from channelkit import publish_crls
from iotpki.core.models import BootstrapKind, CertificateQuery
from iotpki.errors import RequestError
from iotpki.protocols.mqtt.messages import sign_request
from iotpki.protocols.mqtt.provisioner import Provisioner, ProvisionerConfig
from iotpki.protocols.mqtt.topics import Topics
from iotpki.server import enrollment
from iotpki.services.installation import Installation
from iotpki.services.mqtt import announcements
from mqttkit import Batch, new_csr, setup_claims, write_identity

from conftest import ManualClock


def _provisioner(inst: Installation, per_minute: int = 30) -> Provisioner:
    return Provisioner(
        enrollment(inst), inst.store, ProvisionerConfig(requests_per_minute=per_minute)
    )


def _ask(
    prov: Provisioner, topic: str, payload: bytes, response_topic: str | None = None
) -> tuple[str, dict[str, Any]]:
    answer = prov.handle(topic, payload, response_topic)
    assert answer is not None
    return answer.topic, json.loads(answer.payload)


def _enroll(prov: Provisioner, batch: Batch, device_id: str, request_id: str = "r1") -> Any:
    key, csr = new_csr(device_id)
    payload = sign_request(batch.signer.key, batch.signer.chain, request_id, csr)
    return key, _ask(prov, f"iotpki/enroll/{batch.name}/{device_id}", payload)[1]


def _certs(inst: Installation, device_id: str) -> int:
    with inst.store.transaction(readonly=True) as tx:
        return len(
            tx.list_certificates(CertificateQuery(device_id=device_id), inst.authority.clock.now())
        )


def test_topics_parse_and_confine_answers() -> None:
    topics = Topics()
    request = topics.parse("iotpki/enroll/batch-7/dev-1")
    assert (request.operation, request.identity, request.client_id) == (
        "enroll",
        "batch-7",
        "dev-1",
    )
    own = "iotpki/reply/batch-7/dev-1"
    assert topics.answer_topic(request, None) == own
    assert topics.answer_topic(request, own + "/abc") == own + "/abc"
    for elsewhere in (
        "iotpki/reply/batch-7/dev-2",
        "iotpki/reply/batch-7/dev-10",
        own + "/+",
        "devices/x",
    ):
        assert topics.answer_topic(request, elsewhere) == own
    for bad in (
        "iotpki/enroll/batch-7",
        "iotpki/delete/a/b",
        "other/enroll/a/b",
        "iotpki/enroll/a//b",
    ):
        with pytest.raises(RequestError):
            topics.parse(bad)
    assert topics.subscriptions("g") == [
        "$share/g/iotpki/enroll/+/+",
        "$share/g/iotpki/renew/+/+",
        "$share/g/iotpki/cacerts/+/+",
    ]


def test_claim_enrollment_renewal_and_duplicates(inst: Installation, tmp_path: Path) -> None:
    batch = setup_claims(inst, tmp_path)
    prov = _provisioner(inst)
    key, first = _enroll(prov, batch, "dev-1")
    assert first["status"] == "issued" and first["request_id"] == "r1"
    assert len(first["chain"]) == 2  # leaf and issuing CA, no root
    # the same request again (a duplicate delivery) answers with the same certificate
    payload = sign_request(batch.signer.key, batch.signer.chain, "r1", new_csr("dev-1")[1])
    _, again = _ask(prov, "iotpki/enroll/batch-7/dev-1", payload)
    assert again["error"]["code"] == "conflict"  # same request ID, another key
    # a second claim for an enrolled device is refused: it renews with its certificate
    _, second = _enroll(prov, batch, "dev-1", "r2")
    assert second["error"]["code"] == "conflict"
    assert _certs(inst, "dev-1") == 1
    cert = x509.load_pem_x509_certificate(first["certificate"].encode())
    current = write_identity(tmp_path / "dev-1", key, [cert])
    _, csr2 = new_csr("dev-1")
    renew = sign_request(current.key, current.chain, "n1", csr2)
    _, renewed = _ask(prov, "iotpki/renew/dev-1/dev-1", renew)
    assert renewed["status"] == "issued", renewed
    _, repeated = _ask(prov, "iotpki/renew/dev-1/dev-1", renew)
    assert repeated["serial"] == renewed["serial"]
    assert _certs(inst, "dev-1") == 2
    # the claim certificate cannot renew, and a device certificate cannot act as a claim
    _, as_renewal = _ask(
        prov,
        "iotpki/renew/batch-7/dev-1",
        sign_request(batch.signer.key, batch.signer.chain, "n2", csr2),
    )
    assert as_renewal["error"]["code"] in ("forbidden", "unauthorized")


def test_claim_rules_pattern_registry_and_revoked_ca(inst: Installation, tmp_path: Path) -> None:
    batch = setup_claims(inst, tmp_path, pattern="dev-[0-9]+", policy="registered")
    prov = _provisioner(inst)
    _, outside = _enroll(prov, batch, "plant-1")
    assert outside["error"]["code"] == "forbidden"
    _, unregistered = _enroll(prov, batch, "dev-1")
    assert "not registered" in unregistered["error"]["message"]
    enrollment(inst).register_device("dev-1", actor="test")
    _, registered = _enroll(prov, batch, "dev-1")
    assert registered["status"] == "issued"
    enrollment(inst).revoke_bootstrap_ca("line-a", actor="test")
    enrollment(inst).register_device("dev-2", actor="test")
    _, revoked = _enroll(prov, batch, "dev-2")
    assert "revoked" in revoked["error"]["message"]
    actions = [e.action for e in inst.store.audit_events()]
    assert "mqtt.claim_ca.added" in actions and "mqtt.claim_ca.revoked" in actions
    assert actions.count("mqtt.authenticate.refused") >= 2


def test_approval_answers_pending_then_issues(inst: Installation, tmp_path: Path) -> None:
    batch = setup_claims(inst, tmp_path)
    enrollment(inst).add_bootstrap_ca(
        "line-a",
        inst.authority.get_ca("claims").certificate,
        enroll_policy="any",
        kind=BootstrapKind.CLAIM,
        device_pattern="dev-[0-9]+",
        approval=True,
        actor="test",
    )
    prov = _provisioner(inst)
    _, csr = new_csr("dev-1")
    payload = sign_request(batch.signer.key, batch.signer.chain, "r1", csr)
    _, pending = _ask(prov, "iotpki/enroll/batch-7/dev-1", payload)
    assert pending["status"] == "pending" and pending["retry_after"] > 0
    enrollment(inst).decide(pending["approval"], approve=True, actor="test")
    _, issued = _ask(prov, "iotpki/enroll/batch-7/dev-1", payload)
    assert issued["status"] == "issued"


def test_a_flooding_client_is_rate_limited(
    inst: Installation, tmp_path: Path, clock: ManualClock
) -> None:
    setup_claims(inst, tmp_path)
    prov = _provisioner(inst, per_minute=5)
    codes = [_ask(prov, "iotpki/cacerts/batch-7/dev-1", b"{}")[1]["status"] for _ in range(8)]
    assert codes[:5] == ["cacerts"] * 5
    assert codes[5:] == ["error"] * 3
    assert _ask(prov, "iotpki/cacerts/batch-7/dev-2", b"{}")[1]["status"] == "cacerts"
    clock.advance(timedelta(minutes=3))
    assert _ask(prov, "iotpki/cacerts/batch-7/dev-1", b"{}")[1]["status"] == "cacerts"
    refused = [e for e in inst.store.audit_events() if e.action == "mqtt.cacerts.refused"]
    assert refused  # folded: the first refusal of the window at once


def test_messages_on_other_topics_are_ignored(inst: Installation) -> None:
    prov = _provisioner(inst)
    assert prov.handle("iotpki/reply/a/b", b"x") is None
    assert prov.handle("devices/dev-1/telemetry", b"x") is None


def test_announcements_carry_the_trust_bundle_and_crls(inst: Installation) -> None:
    publish_crls(inst)
    prov = _provisioner(inst)
    topics = announcements(inst, prov)
    trust = json.loads(topics["iotpki/trust"])
    assert len(trust["certificates"]) == 2  # issuing and root
    crl = json.loads(topics[f"iotpki/crl/{inst.authority.default_issuing_ca()}"])
    assert crl["number"] >= 1 and crl["url"].endswith(".crl")
