"""The provisioning service's broker connection: paho-mqtt as a privileged MQTT 5 client.

It connects over mutual TLS with its own certificate, subscribes to every request topic as a
shared subscription (each request reaches one replica), answers each request on a small thread
pool, and keeps the retained announcements (trust bundle, CRLs) current: published on every
connection and again whenever they change. A lost connection is retried with back-off
(1 s doubling to 60 s) for as long as the service runs.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from iotpki.errors import ConfigError, IotpkiError
from iotpki.net.tls import Identity
from iotpki.protocols.mqtt import messages
from iotpki.protocols.mqtt.provisioner import Provisioner
from iotpki.protocols.mqtt.transport import no_delay

__all__ = ["BrokerConnection", "ProvisioningService"]

log = logging.getLogger(__name__)

Announcements = Callable[[], dict[str, bytes]]
"""The retained topics and their payloads as they should be now."""


@dataclass(frozen=True, slots=True)
class BrokerConnection:
    """Where the broker is and how to reach it."""

    host: str
    port: int
    tls: ssl.SSLContext
    client_id: str = "iotpki-provisioner"
    group: str = "iotpki"  # the shared subscription group of every replica

    @classmethod
    def from_url(cls, url: str, tls: ssl.SSLContext, client_id: str) -> BrokerConnection:
        """``mqtts://host[:port]`` (port 8883 by default)."""
        parts = urlsplit(url)
        try:
            port = parts.port or 8883
        except ValueError as exc:
            raise ConfigError(f"bad port in the broker URL {url!r}") from exc
        if parts.scheme != "mqtts" or not parts.hostname:
            raise ConfigError(f"the broker URL must be mqtts://host[:port], not {url!r}")
        return cls(parts.hostname, port, tls, client_id)


class ProvisioningService:
    """Serves provisioning requests from the broker until stopped."""

    def __init__(
        self,
        provisioner: Provisioner,
        connection: BrokerConnection,
        announcements: Announcements,
        *,
        threads: int = 4,
        announce_interval: float = 30.0,
        identity: Identity | None = None,
    ) -> None:
        """``identity`` (the files ``connection.tls`` was loaded from) is re-read into it when
        it changes on disk, so a renewed certificate is used from the next connection on."""
        self.provisioner = provisioner
        self._identity = identity
        self._identity_stamp = self._stamp()
        self.connection = connection
        self._announcements = announcements
        self._interval = announce_interval
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="mqtt-provision")
        self._stop = threading.Event()
        self._published: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self.connected = threading.Event()
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=connection.client_id,
            protocol=paho.MQTTv5,
        )
        self._client.tls_set_context(connection.tls)
        self._client.reconnect_delay_set(1, 60)
        self._client.on_socket_open = no_delay
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._announcer = threading.Thread(
            target=self._keep_announcing, name="mqtt-announce", daemon=True
        )

    def start(self) -> None:
        """Connect (retrying until the broker answers) and serve in background threads."""
        self._client.connect_async(self.connection.host, self.connection.port, keepalive=30)
        self._client.loop_start()
        self._announcer.start()
        log.info("provisioning over MQTT at %s:%d", self.connection.host, self.connection.port)

    def stop(self) -> None:
        """Disconnect and finish the requests being answered."""
        self._stop.set()
        self._client.disconnect()
        self._client.loop_stop()
        self._pool.shutdown(wait=True, cancel_futures=True)

    # -- paho callbacks (its network thread) ---------------------------------------------------

    def _on_connect(self, client: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.warning("the broker refused the provisioning service: %s", reason)
            return
        topics = self.provisioner.topics.subscriptions(self.connection.group)
        client.subscribe([(topic, 1) for topic in topics])
        with self._lock:
            self._published.clear()
        self._pool.submit(self._announce)
        self.connected.set()
        log.info("provisioning service connected to the broker")

    def _on_disconnect(self, _c: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.connected.clear()
        if not self._stop.is_set():
            log.warning("lost the broker (%s); reconnecting", reason)

    def _on_message(self, _c: paho.Client, _u: Any, message: paho.MQTTMessage) -> None:
        if not self._stop.is_set():
            self._pool.submit(self._answer, message)

    # -- work (the pool) -----------------------------------------------------------------------

    def _answer(self, message: paho.MQTTMessage) -> None:
        props = getattr(message, "properties", None)
        response_topic = getattr(props, "ResponseTopic", None)
        correlation = getattr(props, "CorrelationData", None)
        try:
            answer = self.provisioner.handle(message.topic, bytes(message.payload), response_topic)
        except Exception:  # a fault here must not stop the service; the device gets an error
            log.exception("provisioning request on %s failed", message.topic)
            try:
                request = self.provisioner.topics.parse(message.topic)
            except IotpkiError:
                return
            where = self.provisioner.topics.answer_topic(request, response_topic)
            fault = IotpkiError("the request could not be answered; try again later")
            request_id = messages.request_id_of(bytes(message.payload))
            self._publish(where, messages.error_answer(request_id, fault), correlation)
            return
        if answer is not None:
            self._publish(answer.topic, answer.payload, correlation)

    def _publish(self, topic: str, payload: bytes, correlation: bytes | None) -> None:
        properties = None
        if correlation is not None:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.CorrelationData = correlation
        self._client.publish(topic, payload, qos=1, properties=properties)

    def _announce(self) -> None:
        """Publish (retained) every announcement that changed since it was last published."""
        try:
            current = self._announcements()
        except IotpkiError as exc:
            log.warning("announcements not available: %s", exc.message)
            return
        with self._lock:
            changed = {t: p for t, p in current.items() if self._published.get(t) != p}
            self._published.update(changed)
        for topic, payload in changed.items():
            self._client.publish(topic, payload, qos=1, retain=True)

    def _keep_announcing(self) -> None:
        while not self._stop.wait(self._interval):
            self._reload_identity()
            if self.connected.is_set():
                self._announce()

    def _stamp(self) -> tuple[float, float] | None:
        if self._identity is None:
            return None
        try:
            return (self._identity.chain.stat().st_mtime, self._identity.key.stat().st_mtime)
        except OSError:
            return None

    def _reload_identity(self) -> None:
        stamp = self._stamp()
        if self._identity is None or stamp is None or stamp == self._identity_stamp:
            return
        try:
            self.connection.tls.load_cert_chain(self._identity.chain, self._identity.key)
        except (OSError, ssl.SSLError) as exc:
            log.warning("could not load the renewed provisioning certificate: %s", exc)
            return
        self._identity_stamp = stamp
        log.info("provisioning certificate reloaded from %s", self._identity.chain)
