"""Provisioning over MQTT through a real mosquitto on the configuration iotpki writes, with
paho-mqtt device clients: claim enrollment and renewal, the broker's ACLs, revoked claim
certificates, a broker restart mid-provisioning, hostile payloads and a flooding client."""

from __future__ import annotations

import base64
import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from jwcrypto import jwk as jose_jwk
from jwcrypto import jws as jose_jws

from channelkit import publish_crls
from iotpki.agent import Agent, AgentConfig, ExitCode
from iotpki.agent.cli import execute
from iotpki.agent.client import EstRefused, EstUnreachable
from iotpki.core.models import CertificateQuery, RevocationReason
from iotpki.protocols.mqtt.messages import sign_request
from iotpki.services.broker import refresh
from iotpki.services.installation import Installation
from mosquittokit import start_broker
from mqttkit import (
    Provisioning,
    RawDevice,
    device_client,
    issue_batch,
    new_csr,
    provisioning,
    setup_claims,
    wait_reconnected,
    write_identity,
)

pytestmark = pytest.mark.interop

_PEM = serialization.Encoding.PEM


def _device_certs(inst: Installation, device_id: str) -> list[str]:
    with inst.store.transaction(readonly=True) as tx:
        held = tx.list_certificates(
            CertificateQuery(device_id=device_id, limit=500), inst.authority.clock.now()
        )
    return [record.serial for record in held]


def _audit_actions(inst: Installation, prefix: str) -> list[str]:
    return [e.action for e in inst.store.audit_events() if e.action.startswith(prefix)]


def _openssl_verify(inst: Installation, tmp: Path, cert: x509.Certificate) -> None:
    issuing = inst.authority.default_issuing_ca()
    chain = inst.authority.chain(issuing)
    (tmp / "root.pem").write_bytes(chain[-1].public_bytes(_PEM))
    (tmp / "untrusted.pem").write_bytes(b"".join(c.public_bytes(_PEM) for c in chain[:-1]))
    (tmp / "leaf.pem").write_bytes(cert.public_bytes(_PEM))
    done = subprocess.run(
        [
            "openssl", "verify", "-CAfile", str(tmp / "root.pem"),
            "-untrusted", str(tmp / "untrusted.pem"), "-purpose", "sslclient",
            str(tmp / "leaf.pem"),
        ],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def _issuing_chain(inst: Installation) -> list[x509.Certificate]:
    return inst.authority.chain(inst.authority.default_issuing_ca())[:-1]


def test_a_hundred_devices_provisioned_with_a_claim_then_renewed(
    inst: Installation, tmp_path: Path
) -> None:
    batch = setup_claims(inst, tmp_path)
    ids = [f"dev-{n:03d}" for n in range(100)]

    def lifecycle(device_id: str) -> tuple[str, str]:
        key, csr = new_csr(device_id)
        cert = device_client(setup, batch.signer, device_id).simpleenroll(csr)
        assert cert.public_key() == key.public_key()
        current = write_identity(
            tmp_path / "devices" / device_id, key, [cert, *_issuing_chain(inst)]
        )
        key2, csr2 = new_csr(device_id)
        renewed = device_client(setup, current, device_id).simplereenroll(csr2)
        assert renewed.public_key() == key2.public_key()
        return format(cert.serial_number, "x"), format(renewed.serial_number, "x")

    with provisioning(inst, tmp_path / "broker") as setup, ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lifecycle, ids))
    assert len({serial for pair in results for serial in pair}) == 200
    for device_id in ids:
        assert len(_device_certs(inst, device_id)) == 2
    last = inst.authority.get(results[-1][1])
    _openssl_verify(inst, tmp_path, last.certificate)
    assert last.device_id == ids[-1]
    assert _audit_actions(inst, "mqtt.enrolled").count("mqtt.enrolled") == 100


def test_a_claim_client_never_receives_another_devices_replies(
    inst: Installation, tmp_path: Path
) -> None:
    """mosquitto's acl_file grants every SUBSCRIBE and refuses the delivery of each message
    the ACL does not let the client read (mosquitto issue 2042): a batch-mate subscribed to
    every reply topic gets only its own answers."""
    batch = setup_claims(inst, tmp_path)
    with provisioning(inst, tmp_path / "broker") as setup:
        snoop = RawDevice(setup, batch.signer, "dev-1")
        try:
            for topic in ("iotpki/reply/#", "iotpki/reply/batch-7/dev-2/#", "#"):
                snoop.subscribe(topic)
            _, csr = new_csr("dev-2")
            device_client(setup, batch.signer, "dev-2").simpleenroll(csr)
            # Answers leave the service in order: its own answer, published after dev-2's,
            # is what the snoop receives first.
            snoop.publish("iotpki/cacerts/batch-7/dev-1", b"{}")
            topic, answer = snoop.answers.get(timeout=30)
            while not topic.startswith("iotpki/reply/"):  # the retained announcements
                topic, answer = snoop.answers.get(timeout=30)
            assert topic.startswith("iotpki/reply/batch-7/dev-1"), topic
            assert json.loads(answer)["status"] == "cacerts"
        finally:
            snoop.close()


def test_an_mqtt_3_1_1_device_gets_its_answer_on_its_reply_topic(
    inst: Installation, tmp_path: Path
) -> None:
    batch = setup_claims(inst, tmp_path)
    with provisioning(inst, tmp_path / "broker") as setup:
        device = RawDevice(setup, batch.signer, "dev-3", protocol=paho.MQTTv311)
        try:
            device.subscribe("iotpki/reply/batch-7/dev-3")
            key, csr = new_csr("dev-3")
            device.publish(
                "iotpki/enroll/batch-7/dev-3",
                sign_request(batch.signer.key, batch.signer.chain, "v311", csr),
            )
            topic, payload = device.answers.get(timeout=30)
        finally:
            device.close()
    answer = json.loads(payload)
    assert topic == "iotpki/reply/batch-7/dev-3" and answer["request_id"] == "v311"
    cert = x509.load_pem_x509_certificate(answer["certificate"].encode())
    assert cert.public_key() == key.public_key()


def test_a_request_on_another_identitys_topic_is_refused(
    inst: Installation, tmp_path: Path
) -> None:
    """The broker's ACL stops it; without the ACL the service refuses it (signature check)."""
    batch = setup_claims(inst, tmp_path)
    with provisioning(inst, tmp_path / "broker") as setup:
        _, csr = new_csr("dev-1")
        payload = sign_request(batch.signer.key, batch.signer.chain, "r1", csr)
        answer = setup.service.provisioner.handle("iotpki/enroll/dev-9/dev-1", payload)
        assert answer is not None
        assert json.loads(answer.payload)["error"]["code"] == "forbidden"
        assert answer.topic == "iotpki/reply/dev-9/dev-1"  # never the signer's reply topic
    assert _device_certs(inst, "dev-1") == []
    assert "mqtt.enroll.refused" in _audit_actions(inst, "mqtt.enroll.refused")


def test_a_revoked_claim_certificate_is_refused(inst: Installation, tmp_path: Path) -> None:
    batch = setup_claims(inst, tmp_path)
    with provisioning(inst, tmp_path / "broker") as setup:
        inst.authority.revoke(batch.serial, reason=RevocationReason.KEY_COMPROMISE, actor="test")
        # Before the broker reloads its CRL, the service refuses the request itself ...
        with pytest.raises(EstRefused, match="revoked"):
            device_client(setup, batch.signer, "dev-1").simpleenroll(new_csr("dev-1")[1])
        # ... and once the CRL is published and the broker reloaded, the broker refuses it.
        publish_crls(inst)
        assert refresh(inst, setup.broker.settings.directory)
        for _ in range(3):
            try:
                device_client(setup, batch.signer, "dev-2", timeout=5).simpleenroll(
                    new_csr("dev-2")[1]
                )
            except EstUnreachable:
                break
            except EstRefused:
                continue
        else:
            pytest.fail("the broker still accepts the revoked claim certificate")
    assert _device_certs(inst, "dev-1") == [] and _device_certs(inst, "dev-2") == []


def test_broker_restart_in_the_middle_issues_nothing_twice(
    inst: Installation, tmp_path: Path
) -> None:
    batch = setup_claims(inst, tmp_path)
    key, csr = new_csr("dev-1")
    with provisioning(inst, tmp_path / "broker") as setup:
        device = RawDevice(setup, batch.signer, "dev-1")
        device.subscribe("iotpki/reply/batch-7/dev-1/#")
        request_id = "req-1"
        device.publish(
            "iotpki/enroll/batch-7/dev-1",
            sign_request(batch.signer.key, batch.signer.chain, request_id, csr),
        )
        first = device.answer()
        device.close()
        assert first["status"] == "issued"
        setup.broker.stop()  # the answer is taken as lost: the device asks again after restart
        restarted = start_broker(inst, setup.broker.settings.directory, port=setup.broker.port)
        try:
            wait_reconnected(setup.service)
            again = RawDevice(Provisioning(inst, restarted, setup.service), batch.signer, "dev-1")
            again.subscribe("iotpki/reply/batch-7/dev-1/#")
            payload = sign_request(batch.signer.key, batch.signer.chain, request_id, csr)
            again.publish("iotpki/enroll/batch-7/dev-1", payload)
            again.publish("iotpki/enroll/batch-7/dev-1", payload)  # and a duplicate delivery
            second, third = again.answer(), again.answer()
            again.close()
        finally:
            restarted.stop()
    assert second["serial"] == third["serial"] == first["serial"]
    assert _device_certs(inst, "dev-1") == [first["serial"]]
    cert = x509.load_pem_x509_certificate(second["certificate"].encode())
    assert cert.public_key() == key.public_key()


def _signed(key: object, chain: list[x509.Certificate], payload: dict[str, str]) -> bytes:
    """A JWS as a device would sign it, around any payload."""
    x5c = [base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode() for c in chain]
    token = jose_jws.JWS(json.dumps(payload).encode())
    token.add_signature(
        jose_jwk.JWK.from_pyca(key), alg="ES256", protected=json.dumps({"alg": "ES256", "x5c": x5c})
    )
    return str(token.serialize(compact=True)).encode()


def _self_signed(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return key, cert


def test_hostile_payloads_get_error_answers_and_change_nothing(
    inst: Installation, tmp_path: Path
) -> None:
    batch = setup_claims(inst, tmp_path)
    other = issue_batch(inst, tmp_path / "b8", "batch-8")
    _, csr = new_csr("dev-1")
    good = sign_request(batch.signer.key, batch.signer.chain, "r1", csr).decode()
    header, body, signature = good.split(".")
    der = base64.b64encode(csr.public_bytes(serialization.Encoding.DER)).decode()
    forged_body = (
        base64.urlsafe_b64encode(
            json.dumps({"request_id": "r1", "csr": der[:-8] + "AAAAAAA="}).encode()
        )
        .rstrip(b"=")
        .decode()
    )
    _, bad_id_csr = new_csr("plant-9")
    foreign_key, _ = new_csr("x")
    unknown_key, unknown = _self_signed("batch-7")  # a claim from a CA nobody registered
    cases = {
        b"": "bad_request",
        b"not a jws": "bad_request",
        b"\xff\xfe\x00garbage": "bad_request",
        b"a" * 20_000: "bad_request",  # oversized
        f"{header}.{forged_body}.{signature}".encode(): "unauthorized",  # payload changed
        f"{header}.{body}.{signature[:-4]}AAAA".encode(): "unauthorized",  # bad signature
        f"e30.{body}.{signature}".encode(): "unauthorized",  # no x5c
        sign_request(batch.signer.key, batch.signer.chain, "r 1", csr): "bad_request",
        sign_request(batch.signer.key, batch.signer.chain, "r2", bad_id_csr): "forbidden",
        sign_request(foreign_key, batch.signer.chain, "r3", csr): "unauthorized",
        sign_request(other.signer.key, other.signer.chain, "r4", csr): "forbidden",
        _signed(batch.signer.key, batch.signer.chain, {"request_id": "r5", "csr": "MIIB"}): (
            "malformed"  # a CSR that is not DER
        ),
        _signed(batch.signer.key, batch.signer.chain, {"request_id": "r6"}): "bad_request",
        _signed(unknown_key, [unknown], {"request_id": "r7", "csr": der}): "unauthorized",
    }
    with provisioning(inst, tmp_path / "broker") as setup:
        device = RawDevice(setup, batch.signer, "dev-1")
        device.subscribe("iotpki/reply/batch-7/dev-1/#")
        codes = {}
        for payload, expected in cases.items():
            device.publish("iotpki/enroll/batch-7/dev-1", payload)
            answer = device.answer()
            assert answer["status"] == "error", payload[:40]
            codes[payload[:40]] = (answer["error"]["code"], expected)
        device.close()
        assert all(got == want for got, want in codes.values()), codes
        assert _device_certs(inst, "dev-1") == []
        # the service keeps serving
        key, csr = new_csr("dev-1")
        assert device_client(setup, batch.signer, "dev-1").simpleenroll(csr).public_key() == (
            key.public_key()
        )
    assert _audit_actions(inst, "mqtt.")


def test_the_agent_enrolls_and_renews_over_mqtt_with_its_exit_codes(
    inst: Installation, tmp_path: Path
) -> None:
    batch = setup_claims(inst, tmp_path)
    root = inst.authority.chain(inst.authority.default_issuing_ca())[-1]
    bundle = tmp_path / "root.pem"
    bundle.write_bytes(root.public_bytes(_PEM))
    with provisioning(inst, tmp_path / "broker") as setup:
        config = AgentConfig(
            server=setup.url,
            device_id="dev-42",
            state_dir=tmp_path / "agent",
            trust_bundle=bundle,
            claim_cert=batch.chain_file,
            claim_key=batch.key_file,
            timeout=20.0,
        )
        agent = Agent(config)
        assert execute("enroll", agent) is ExitCode.OK
        first = agent.status()
        assert first.enrolled and not first.expired
        assert execute("renew", agent) is ExitCode.OK
        assert agent.status().serial != first.serial
        # a device ID the claim CA does not cover: the service refuses, the agent says so
        other = Agent(
            AgentConfig(**{**config.__dict__, "device_id": "plant-1", "state_dir": tmp_path / "p"})
        )
        assert execute("enroll", other) is ExitCode.REFUSED
    # the broker is gone: unreachable
    assert execute("renew", agent) is ExitCode.UNREACHABLE
    assert len(_device_certs(inst, "dev-42")) == 2


def test_the_agent_gets_a_lost_answer_again_after_a_broker_restart(
    inst: Installation, tmp_path: Path
) -> None:
    """The first answer never reaches the agent, the broker restarts, the agent asks again:
    the same certificate, issued once."""
    batch = setup_claims(inst, tmp_path)
    root = inst.authority.chain(inst.authority.default_issuing_ca())[-1]
    bundle = tmp_path / "root.pem"
    bundle.write_bytes(root.public_bytes(_PEM))
    with provisioning(inst, tmp_path / "broker") as setup:
        provisioner = setup.service.provisioner
        answer = provisioner.handle
        dropped: list[str] = []

        def lose_the_first_answer(topic: str, payload: bytes, response: str | None = None):  # type: ignore[no-untyped-def]
            result = answer(topic, payload, response)
            if "/enroll/" in topic and not dropped:
                dropped.append(topic)
                return None
            return result

        provisioner.handle = lose_the_first_answer  # type: ignore[method-assign]
        config = AgentConfig(
            server=setup.url,
            device_id="dev-5",
            state_dir=tmp_path / "agent",
            trust_bundle=bundle,
            claim_cert=batch.chain_file,
            claim_key=batch.key_file,
            timeout=5.0,
        )
        agent = Agent(config)
        assert execute("enroll", agent) is ExitCode.UNREACHABLE
        assert len(_device_certs(inst, "dev-5")) == 1  # issued; the answer was lost
        setup.broker.stop()
        restarted = start_broker(inst, setup.broker.settings.directory, port=setup.broker.port)
        try:
            wait_reconnected(setup.service)
            assert execute("enroll", agent) is ExitCode.OK
        finally:
            restarted.stop()
    assert _device_certs(inst, "dev-5") == [agent.status().serial]
