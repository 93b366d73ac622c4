"""The provisioning topics under a prefix (default ``iotpki/``).

A device publishes a request on ``<prefix><operation>/<identity>/<client ID>``, where
``identity`` is the commonName of the certificate it connected with (mosquitto's
``use_identity_as_username``) and the broker's ACL lets it write only there. Answers go to the
MQTT 5 Response Topic the request names, which must lie below the device's own reply topic
``<prefix>reply/<identity>/<client ID>``; an MQTT 3.1.1 request (no Response Topic) is answered
on that reply topic itself. Retained: ``<prefix>trust`` (the trust bundle, changed when roots
roll over) and ``<prefix>crl/<CA>`` (each new CRL's number and URL).
"""

from __future__ import annotations

from dataclasses import dataclass

from iotpki.errors import RequestError

__all__ = ["OPERATIONS", "RequestTopic", "Topics"]

OPERATIONS = ("enroll", "renew", "cacerts")
_WILDCARDS = frozenset("+#\x00")


@dataclass(frozen=True, slots=True)
class RequestTopic:
    """A request's operation and the identity and client the topic names."""

    operation: str
    identity: str
    client_id: str


@dataclass(frozen=True, slots=True)
class Topics:
    """Every topic the provisioning service uses, under one prefix."""

    prefix: str = "iotpki/"

    def __post_init__(self) -> None:
        if not self.prefix.endswith("/") or any(c in "+#\x00" for c in self.prefix):
            raise RequestError("the MQTT topic prefix must end with '/' and hold no wildcard")

    def subscriptions(self, group: str) -> list[str]:
        """Shared subscriptions (one replica gets each request) to every request topic."""
        return [f"$share/{group}/{self.prefix}{op}/+/+" for op in OPERATIONS]

    def request(self, operation: str, identity: str, client_id: str) -> str:
        """Where a device publishes a request."""
        return f"{self.prefix}{operation}/{identity}/{client_id}"

    def reply(self, identity: str, client_id: str) -> str:
        """A device's own reply topic (MQTT 3.1.1 answers; MQTT 5 Response Topics below it)."""
        return f"{self.prefix}reply/{identity}/{client_id}"

    @property
    def trust(self) -> str:
        """The retained trust bundle."""
        return f"{self.prefix}trust"

    def crl(self, ca_name: str) -> str:
        """The retained announcement of a CA's latest CRL."""
        return f"{self.prefix}crl/{ca_name}"

    def parse(self, topic: str) -> RequestTopic:
        """The request a topic names; RequestError for any other topic."""
        if not topic.startswith(self.prefix):
            raise RequestError("not a provisioning topic")
        parts = topic[len(self.prefix) :].split("/")
        if len(parts) != 3 or parts[0] not in OPERATIONS or not all(parts[1:]):
            raise RequestError("a request topic is <operation>/<identity>/<client ID>")
        return RequestTopic(parts[0], parts[1], parts[2])

    def answer_topic(self, request: RequestTopic, response_topic: str | None) -> str:
        """Where the answer goes: the Response Topic if it lies below the device's reply
        topic, else the reply topic (a client cannot aim answers at another's topics)."""
        own = self.reply(request.identity, request.client_id)
        if response_topic and (
            response_topic == own
            or (response_topic.startswith(own + "/") and not _WILDCARDS & set(response_topic))
        ):
            return response_topic
        return own
