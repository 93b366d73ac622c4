"""The agent's link when the broker is all a device reaches: provisioning over MQTT 5.

The same operations as :class:`iotpki.agent.client.EstClient` (``cacerts``, ``simpleenroll``,
``simplereenroll``) and the same errors, so the agent's schedule, back-off and exit codes do
not change with the transport. Each request connects with the certificate it is signed with
(a batch's claim certificate, an IDevID, or the current certificate), subscribes below its own
reply topic, publishes the signed request with a Response Topic and Correlation Data, and waits
for the answer. The request ID is derived from the CSR, so a request sent again after a lost
answer or a broker restart is the same request and is never issued twice.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import ssl
import threading
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from iotpki.agent.client import EstPending, EstRefused, EstUnreachable
from iotpki.errors import ConfigError
from iotpki.protocols.mqtt.messages import sign_request
from iotpki.protocols.mqtt.topics import Topics
from iotpki.protocols.mqtt.transport import no_delay

__all__ = ["MqttClient", "Signer"]

_DER = serialization.Encoding.DER
_STATUS = {"rate_limited": 429, "forbidden": 403, "conflict": 409, "not_found": 404}


@dataclass(frozen=True)
class Signer:
    """The certificate chain (PEM, leaf first) and key (PEM) a request is connected and signed
    with: a claim certificate, an IDevID, or the current certificate."""

    chain_file: Path
    key_file: Path

    @cached_property
    def chain(self) -> list[x509.Certificate]:
        """The certificates, leaf first."""
        return x509.load_pem_x509_certificates(self.chain_file.read_bytes())

    @cached_property
    def key(self) -> CertificateIssuerPrivateKeyTypes:
        """The private key."""
        key = serialization.load_pem_private_key(self.key_file.read_bytes(), None)
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | Ed25519PrivateKey):
            raise ConfigError(f"unsupported key type in {self.key_file}")
        return key

    @property
    def identity(self) -> str:
        """The certificate's commonName: the broker's user name for it."""
        values = self.chain[0].subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if not values:
            raise ConfigError("the connection certificate has no commonName")
        return str(values[0].value)

    def present(self, context: ssl.SSLContext) -> None:
        """Present this certificate on the TLS connections ``context`` makes."""
        context.load_cert_chain(self.chain_file, self.key_file)


@dataclass(frozen=True)
class MqttClient:
    """Provisioning operations through one broker."""

    url: str  # mqtts://host[:port]
    context: ssl.SSLContext  # trusts the broker; holds the signer's certificate and key
    client_id: str
    signer: Signer | None = None
    prefix: str = "iotpki/"
    timeout: float = 30.0

    def cacerts(self) -> list[x509.Certificate]:
        """The CA certificates (default issuing chain and active roots)."""
        answer = self._request("cacerts", secrets.token_hex(8).encode(), None)
        return [x509.load_pem_x509_certificate(c.encode()) for c in answer["certificates"]]

    def simpleenroll(
        self, csr: x509.CertificateSigningRequest, basic: tuple[str, str] | None = None
    ) -> x509.Certificate:
        """A first certificate, authorized by the claim certificate or IDevID."""
        if basic is not None:
            raise ConfigError("enrollment secrets are not sent over MQTT: use a claim or IDevID")
        return self._signed("enroll", csr)

    def simplereenroll(self, csr: x509.CertificateSigningRequest) -> x509.Certificate:
        """A renewal (same or new key), authorized by the current certificate."""
        return self._signed("renew", csr)

    def _signed(self, operation: str, csr: x509.CertificateSigningRequest) -> x509.Certificate:
        if self.signer is None:
            raise ConfigError(f"{operation} over MQTT needs a certificate to sign with")
        request_id = hashlib.sha256(csr.public_bytes(_DER)).hexdigest()[:32]
        payload = sign_request(self.signer.key, self.signer.chain, request_id, csr)
        answer = self._request(operation, payload, request_id)
        if answer.get("status") == "pending":
            raise EstPending(int(answer.get("retry_after", 60)))
        return x509.load_pem_x509_certificate(str(answer["certificate"]).encode())

    def _request(self, operation: str, payload: bytes, request_id: str | None) -> dict[str, Any]:
        """Publish one request and wait for its answer (EstUnreachable on timeout)."""
        parts = urlsplit(self.url)
        if parts.scheme != "mqtts" or not parts.hostname:
            raise ConfigError(f"the broker URL must be mqtts://host[:port], not {self.url!r}")
        identity = self.signer.identity if self.signer else self.client_id
        topics = Topics(self.prefix)
        own = topics.reply(identity, self.client_id)
        correlation = secrets.token_bytes(16)
        response_topic = f"{own}/{correlation.hex()}"
        done = threading.Event()
        result: dict[str, Any] = {}
        subscribed = threading.Event()

        def on_connect(client: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
            if reason.is_failure:
                result["unreachable"] = f"the broker refused the connection: {reason}"
                done.set()
                return
            client.subscribe(f"{own}/#", qos=1)

        def on_subscribe(_c: paho.Client, _u: Any, _m: Any, reasons: Any, _p: Any) -> None:
            if any(r.is_failure for r in reasons):
                result["refused"] = "the broker refused the reply subscription"
                done.set()
            else:
                subscribed.set()

        def on_message(_c: paho.Client, _u: Any, message: paho.MQTTMessage) -> None:
            props = getattr(message, "properties", None)
            if getattr(props, "CorrelationData", None) != correlation:
                return
            try:
                result["answer"] = json.loads(message.payload)
            except ValueError:
                result["unreachable"] = "the answer is not JSON"
            done.set()

        client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=paho.MQTTv5
        )
        client.tls_set_context(self.context)
        client.on_socket_open = no_delay
        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_message = on_message
        try:
            client.connect(parts.hostname, parts.port or 8883, keepalive=30)
        except (OSError, ssl.SSLError) as exc:
            raise EstUnreachable(f"{operation}: cannot reach the broker: {exc}") from exc
        client.loop_start()
        try:
            if subscribed.wait(self.timeout):
                properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
                properties.ResponseTopic = response_topic
                properties.CorrelationData = correlation
                request_topic = topics.request(operation, identity, self.client_id)
                client.publish(request_topic, payload, qos=1, properties=properties)
            done.wait(self.timeout)
        finally:
            client.disconnect()
            client.loop_stop()
        return _answer(operation, result)


def _answer(operation: str, result: dict[str, Any]) -> dict[str, Any]:
    if "refused" in result:
        raise EstRefused(403, result["refused"])
    if "unreachable" in result:
        raise EstUnreachable(f"{operation}: {result['unreachable']}")
    answer = result.get("answer")
    if not isinstance(answer, dict):
        raise EstUnreachable(f"{operation}: no answer from the provisioning service in time")
    if answer.get("status") == "error":
        error = answer.get("error") or {}
        code = str(error.get("code", "error"))
        if code in ("internal", "busy"):  # busy: a campaign's rate; ask again later
            raise EstUnreachable(f"{operation}: {error.get('message', 'service fault')}")
        raise EstRefused(_STATUS.get(code, 400), f"{code}: {error.get('message', '')}")
    return answer
