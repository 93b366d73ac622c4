"""mosquitto with iotpki's TLS settings, driven by mosquitto_pub / mosquitto_sub and paho-mqtt:
valid devices accepted, a revoked one refused after the CRL publication, a foreign CA refused,
and signed telemetry verified by a subscriber."""

from __future__ import annotations

import queue
import shutil
import signal
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from channelkit import Issuance, issue, publish_crls
from iotpki.core.models import RevocationReason
from iotpki.messages import MessageSigner, MessageVerifier
from iotpki.net.revocation_check import CrlCache, RevocationChecker
from iotpki.net.tls import Channel
from iotpki.services.broker import refresh
from iotpki.services.installation import Installation
from iotpki.services.revocation import RevocationService
from mosquittokit import Mosquitto, start_broker

from conftest import ManualClock, make_installation

pytestmark = pytest.mark.interop

_PEM = serialization.Encoding.PEM


@pytest.fixture
def broker(inst: Installation, tmp_path: Path) -> Iterator[Mosquitto]:
    if shutil.which("mosquitto_pub") is None:
        pytest.skip("mosquitto-clients is not installed")
    publish_crls(inst)
    running = start_broker(inst, tmp_path / "broker", readers=("verifier",))
    yield running
    running.stop()


def _pub(broker: Mosquitto, device: Issuance, topic: str, cafile: Path | None = None) -> int:
    done = subprocess.run(
        [
            "mosquitto_pub",
            "-h",
            "127.0.0.1",
            "-p",
            str(broker.port),
            "--cafile",
            str(cafile or broker.settings.path("ca.pem")),
            "--cert",
            str(device.identity.chain),
            "--key",
            str(device.identity.key),
            "--tls-version",
            "tlsv1.3",
            "-t",
            topic,
            "-m",
            "hello",
        ],
        capture_output=True,
        timeout=30,
        check=False,
    )
    return done.returncode


def test_mosquitto_clients_accepted_then_revoked_device_refused(
    inst: Installation, broker: Mosquitto, tmp_path: Path
) -> None:
    device = issue(inst, tmp_path / "dev", "dev-1")
    assert _pub(broker, device, "devices/dev-1/t") == 0
    inst.authority.revoke(
        device.issued.record.serial, reason=RevocationReason.KEY_COMPROMISE, actor="test"
    )
    publish_crls(inst)
    assert refresh(inst, broker.settings.directory)  # rewrites crl.pem and sends SIGHUP
    # mosquitto reloads on SIGHUP between connections; the next ones are refused
    for _ in range(3):
        if _pub(broker, device, "devices/dev-1/t") != 0:
            break
    else:
        pytest.fail("the revoked device still connects")
    other = issue(inst, tmp_path / "dev2", "dev-2")
    assert _pub(broker, other, "devices/dev-2/t") == 0  # the others are not affected


def test_foreign_ca_refused(inst: Installation, broker: Mosquitto, tmp_path: Path) -> None:
    other = make_installation(tmp_path / "other")
    try:
        foreign = issue(other, tmp_path / "foreign", "dev-1")
        assert _pub(broker, foreign, "devices/dev-1/t") != 0
    finally:
        other.close()


def _paho(name: str, channel: Channel, port: int) -> mqtt.Client:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name)
    client.tls_set_context(channel.context())
    client.connect("127.0.0.1", port)
    return client


def test_paho_through_iotpki_tls_with_signed_telemetry(
    inst: Installation, broker: Mosquitto, tmp_path: Path
) -> None:
    trust = broker.settings.path("ca.pem")
    device = issue(inst, tmp_path / "dev", "meter-7")
    reader = issue(inst, tmp_path / "reader", "verifier")
    cas = [c.certificate for c in inst.authority.list_cas() if c.certificate_der]
    crls = CrlCache(issuers=lambda: cas, directories=[inst.home / "crl"])
    verifier = MessageVerifier(
        lambda: [c for c in cas if c.issuer == c.subject], revocation=RevocationChecker(crls)
    )
    received: queue.Queue[bytes] = queue.Queue()
    subscribed: queue.Queue[bool] = queue.Queue()
    sub = _paho("verifier", Channel("client", trust=trust, identity=reader.identity), broker.port)
    sub.on_message = lambda client, userdata, message: received.put(message.payload)
    sub.on_subscribe = lambda *args: subscribed.put(True)
    sub.subscribe("devices/#", qos=1)
    sub.loop_start()
    try:
        subscribed.get(timeout=60)
        pub = _paho(
            "meter-7", Channel("client", trust=trust, identity=device.identity), broker.port
        )
        signer = MessageSigner(device.key, device.issued.chain)
        pub.loop_start()
        pub.publish(
            "devices/meter-7/telemetry", signer.sign(b'{"kwh": 3.2}'), qos=1
        ).wait_for_publish(60)
        pub.publish("devices/other/telemetry", signer.sign(b"not mine"), qos=1).wait_for_publish(60)
        pub.loop_stop()
        pub.disconnect()
        message = verifier.verify(received.get(timeout=60))
        assert (message.device_id, message.payload) == ("meter-7", b'{"kwh": 3.2}')
        with pytest.raises(queue.Empty):  # the ACL kept it off another device's topic
            received.get(timeout=1)
    finally:
        sub.loop_stop()
        sub.disconnect()


def _partitions_only_crlfile(inst: Installation, crlfile: Path) -> None:
    """crl.pem from the issuing CA's partition CRLs (and the root's CRL), no CA-wide CRL."""
    service = RevocationService(inst)
    service.publish_partitions()
    parts = sorted((inst.home / "crl" / "issuing").glob("*[0-9].crl"))
    assert parts, "no partition CRL was published"
    root = service.store.get_crl("root", "full")
    assert root is not None and root.der is not None
    ders = [p.read_bytes() for p in parts] + [root.der]
    crlfile.write_bytes(b"".join(x509.load_der_x509_crl(d).public_bytes(_PEM) for d in ders))


def test_mosquitto_refuses_a_revoked_device_with_partition_crls_only(
    inst: Installation, broker: Mosquitto, tmp_path: Path, clock: ManualClock
) -> None:
    # The broker checks CRL times against the real clock: keep the virtual one behind it, so
    # that the CRLs made after the advances below are not "not yet valid" to mosquitto.
    clock.advance(-timedelta(minutes=1))
    device = issue(inst, tmp_path / "dev", "dev-p")
    other = issue(inst, tmp_path / "dev2", "dev-q")
    crlfile = broker.settings.path("crl.pem")
    _partitions_only_crlfile(inst, crlfile)
    broker.process.send_signal(signal.SIGHUP)
    assert _pub(broker, device, "devices/dev-p/t") == 0  # its partition lists nothing
    clock.advance(timedelta(seconds=5))
    inst.authority.revoke(
        device.issued.record.serial, reason=RevocationReason.KEY_COMPROMISE, actor="test"
    )
    clock.advance(timedelta(seconds=2))
    _partitions_only_crlfile(inst, crlfile)
    broker.process.send_signal(signal.SIGHUP)
    for _ in range(3):
        if _pub(broker, device, "devices/dev-p/t") != 0:
            break
    else:
        pytest.fail("the revoked device still connects")
    assert _pub(broker, other, "devices/dev-q/t") == 0
