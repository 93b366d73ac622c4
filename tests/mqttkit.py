"""Provisioning over MQTT in tests: a claim CA and batch, a real mosquitto with the generated
configuration, the provisioning service connected to it, and paho device clients."""

from __future__ import annotations

import json
import queue
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion

from iotpki.agent.mqtt import MqttClient, Signer
from iotpki.core.models import BootstrapKind, KeyAlgorithm
from iotpki.protocols.mqtt.service import ProvisioningService
from iotpki.server import enrollment
from iotpki.services.installation import Installation
from iotpki.services.mqtt import issue_claim, provisioning_service
from iotpki.settings import MqttSettings
from mosquittokit import Mosquitto, start_broker

__all__ = [
    "Batch",
    "Provisioning",
    "RawDevice",
    "device_client",
    "issue_batch",
    "new_csr",
    "provisioning",
    "setup_claims",
    "wait_reconnected",
    "write_identity",
]

_PEM = serialization.Encoding.PEM


@dataclass
class Batch:
    """A production batch's claim certificate and key, as files."""

    name: str
    chain_file: Path
    key_file: Path
    serial: str

    @property
    def signer(self) -> Signer:
        return Signer(self.chain_file, self.key_file)


def write_identity(directory: Path, key: object, chain: list[x509.Certificate]) -> Signer:
    """Write a chain and key as PEM files; the signer over them."""
    directory.mkdir(parents=True, exist_ok=True)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    key_file, chain_file = directory / "key.pem", directory / "chain.pem"
    key_file.write_bytes(
        key.private_bytes(_PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    chain_file.write_bytes(b"".join(c.public_bytes(_PEM) for c in chain))
    return Signer(chain_file, key_file)


def setup_claims(
    inst: Installation, tmp: Path, pattern: str = "dev-[0-9]+", policy: str = "any"
) -> Batch:
    """A claim CA ``claims`` (issuing, under the root) registered for ``pattern``; a batch."""
    inst.authority.create_issuing(
        "claims",
        parent="root",
        common_name="Claims CA",
        algorithm=KeyAlgorithm.P256,
        lifetime=timedelta(days=365),
        backend="file",
        actor="test",
    )
    enrollment(inst).add_bootstrap_ca(
        "line-a",
        inst.authority.get_ca("claims").certificate,
        enroll_policy=policy,
        kind=BootstrapKind.CLAIM,
        device_pattern=pattern,
        actor="test",
    )
    return issue_batch(inst, tmp / "batch-7", "batch-7")


def issue_batch(inst: Installation, directory: Path, name: str) -> Batch:
    """A claim certificate from ``claims`` for batch ``name``."""
    issued = issue_claim(inst, name, "claims", directory, actor="test")
    return Batch(name, directory / "claim.pem", directory / "claim.key", issued.record.serial)


def new_csr(device_id: str) -> tuple[ec.EllipticCurvePrivateKey, x509.CertificateSigningRequest]:
    """A new P-256 key and its CSR for ``device_id``."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
        .sign(key, hashes.SHA256())
    )
    return key, csr


@dataclass
class Provisioning:
    """A running broker and provisioning service."""

    inst: Installation
    broker: Mosquitto
    service: ProvisioningService

    @property
    def url(self) -> str:
        return f"mqtts://127.0.0.1:{self.broker.port}"

    @property
    def trust(self) -> str:
        return self.broker.settings.path("ca.pem").read_text()


@contextmanager
def provisioning(inst: Installation, directory: Path, **settings: object) -> Iterator[Provisioning]:
    """mosquitto on the configuration ``iotpki broker config`` writes, and the service on it."""
    broker = start_broker(inst, directory)
    service = provisioning_service(
        inst,
        enrollment(inst),
        MqttSettings(
            broker_url=f"mqtts://127.0.0.1:{broker.port}",
            client_dir=directory,
            **settings,  # type: ignore[arg-type]
        ),
    )
    service.start()
    try:
        if not service.connected.wait(30):
            raise RuntimeError(f"the provisioning service did not connect: {broker.stop()}")
        yield Provisioning(inst, broker, service)
    finally:
        service.stop()
        broker.stop()


def wait_reconnected(service: ProvisioningService) -> None:
    """Until the service has seen the broker go and has connected again (generous bounds)."""
    deadline = time.monotonic() + 30
    while service.connected.is_set() and time.monotonic() < deadline:
        time.sleep(0.05)
    if not service.connected.wait(90):
        raise AssertionError("the provisioning service did not reconnect")


def device_client(
    setup: Provisioning, signer: Signer, client_id: str, timeout: float = 30.0
) -> MqttClient:
    """A device's provisioning client connecting with ``signer``'s certificate."""
    context = ssl.create_default_context(cadata=setup.trust)
    signer.present(context)
    return MqttClient(setup.url, context, client_id, signer, timeout=timeout)


class RawDevice:
    """A paho MQTT 5 client on a device certificate, for requests the agent would never send."""

    def __init__(
        self,
        setup: Provisioning,
        signer: Signer,
        client_id: str,
        protocol: paho.MQTTProtocolVersion = paho.MQTTv5,
    ) -> None:
        self.answers: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.granted: queue.Queue[list[bool]] = queue.Queue()
        self.identity = signer.identity
        self.client_id = client_id
        context = ssl.create_default_context(cadata=setup.trust)
        signer.present(context)
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol
        )
        self.client.tls_set_context(context)
        self.client.on_message = lambda _c, _u, m: self.answers.put((m.topic, bytes(m.payload)))
        self.client.on_subscribe = lambda _c, _u, _m, codes, _p: self.granted.put(
            [not code.is_failure for code in codes]
        )
        self.client.connect("127.0.0.1", setup.broker.port)
        self.client.loop_start()

    def subscribe(self, topic: str) -> bool:
        """Whether the broker grants the subscription."""
        self.client.subscribe(topic, qos=1)
        return all(self.granted.get(timeout=30))

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(30)

    def answer(self, timeout: float = 30.0) -> dict[str, Any]:
        """The next answer on a subscribed topic."""
        _, payload = self.answers.get(timeout=timeout)
        value: dict[str, Any] = json.loads(payload)
        return value

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
