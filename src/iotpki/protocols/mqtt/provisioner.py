"""The provisioning service's answers, without the broker: a request topic and payload in,
the topic and payload of the answer out.

``enroll`` takes a claim certificate (a batch's, from a registered claim CA) or an IDevID;
``renew`` the device's current certificate (same or new key); ``cacerts`` nothing. Every
request ID is answered once: the certificate is recorded together with its request key
(operation, device, request ID), so a duplicate delivery, a retry after a broker restart or a
second replica answers with the certificate already issued. A refusal is an error answer and
one audit event (folded per client), and changes nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from iotpki.core.authenticators import (
    Authorization,
    BootstrapCertificate,
    ClaimCertificate,
    Context,
    CurrentCertificate,
)
from iotpki.core.authority import Issued, RecordHook
from iotpki.core.enrollment import Enrollment, Pending
from iotpki.core.models import BootstrapKind, CertificateRecord
from iotpki.core.ports import StoreTransaction
from iotpki.core.ports.shared import RateCounters
from iotpki.core.ratelimit import SharedWindow
from iotpki.errors import Conflict, Forbidden, IotpkiError, RateLimited, RequestError
from iotpki.protocols.mqtt import messages
from iotpki.protocols.mqtt.messages import SignedRequest
from iotpki.protocols.mqtt.topics import RequestTopic, Topics

__all__ = ["Answer", "Provisioner", "ProvisionerConfig"]

_SPKI = serialization.PublicFormat.SubjectPublicKeyInfo
_DER = serialization.Encoding.DER


@dataclass(frozen=True, slots=True)
class ProvisionerConfig:
    """Where the topics are and how fast one client may ask."""

    prefix: str = "iotpki/"
    requests_per_minute: int = 30  # per identity and client ID


@dataclass(frozen=True, slots=True)
class Answer:
    """What to publish: the topic and payload of the answer."""

    topic: str
    payload: bytes


class Provisioner:
    """Answers provisioning requests through the core's authenticators and authority."""

    def __init__(
        self,
        enrollment: Enrollment,
        counters: RateCounters,
        config: ProvisionerConfig | None = None,
    ) -> None:
        self.enrollment = enrollment
        self.authority = enrollment.authority
        self.config = config or ProvisionerConfig()
        self.topics = Topics(self.config.prefix)
        self._rate = SharedWindow(
            counters,
            "mqtt-client",
            self.config.requests_per_minute,
            timedelta(minutes=1),
            self.authority.clock,
        )
        self._operations: dict[str, Callable[[RequestTopic, SignedRequest], bytes]] = {
            "enroll": self._enroll,
            "renew": self._renew,
        }

    def handle(
        self, topic: str, payload: bytes, response_topic: str | None = None
    ) -> Answer | None:
        """The answer to a request (None for a message on a topic that is not a request)."""
        try:
            request = self.topics.parse(topic)
        except IotpkiError:
            return None
        where = self.topics.answer_topic(request, response_topic)
        try:
            return Answer(where, self._answer(request, payload))
        except IotpkiError as exc:
            self.authority.audit_refusal(
                exc,
                source=f"mqtt:{request.identity}/{request.client_id}",
                actor=f"mqtt:client:{request.identity}",
                action=f"mqtt.{request.operation}.refused",
                target=topic,
            )
            # the ID read without verifying anything: only to label the error answer
            return Answer(where, messages.error_answer(messages.request_id_of(payload), exc))

    def _answer(self, request: RequestTopic, payload: bytes) -> bytes:
        wait = self._rate.retry_after([f"{request.identity}/{request.client_id}"])
        if wait is not None:
            raise RateLimited("too many requests from this client", retry_after=wait)
        if len(payload) > messages.MAX_PAYLOAD:
            raise RequestError(f"the request exceeds {messages.MAX_PAYLOAD} bytes")
        if request.operation == "cacerts":
            return messages.answer(
                messages.request_id_of(payload),
                "cacerts",
                certificates=messages.pem_chain(self.cacerts()),
            )
        signed = messages.parse_request(payload)
        if _common_name(signed.signer) != request.identity:
            raise Forbidden(
                "the request topic belongs to another identity than the signing certificate"
            )
        return self._operations[request.operation](request, signed)

    def cacerts(self) -> list[x509.Certificate]:
        """The default issuing CA's chain, the other roots and the rollover certificates."""
        return self.authority.ca_certificates(self.authority.default_issuing_ca())

    def _context(self, request: RequestTopic) -> Context:
        return Context("mqtt", source=f"mqtt:{request.identity}/{request.client_id}")

    def _enroll(self, request: RequestTopic, signed: SignedRequest) -> bytes:
        device_id = _common_name(signed.csr) or ""
        key = f"enroll:{device_id}:{signed.request_id}"
        earlier = self._earlier(key, signed)
        if earlier is not None:
            return earlier
        credentials: ClaimCertificate | BootstrapCertificate
        if self._is_claim(signed.signer):
            credentials = ClaimCertificate(signed.signer, device_id)
        else:
            credentials = BootstrapCertificate(signed.signer)
        authorization = self.enrollment.authenticators.authorize(
            credentials, self._context(request)
        )
        try:
            result = self.enrollment.enroll(authorization, signed.csr, within=self._remember(key))
        except Conflict as exc:
            return self._duplicate(key, signed, exc)
        if isinstance(result, Pending):
            return messages.answer(
                signed.request_id,
                "pending",
                approval=result.request_id,
                retry_after=result.retry_after,
            )
        assert isinstance(result, Issued)
        return self._issued(signed.request_id, result.record, result.chain)

    def _renew(self, request: RequestTopic, signed: SignedRequest) -> bytes:
        authorization: Authorization = self.enrollment.authenticators.authorize(
            CurrentCertificate(signed.signer), self._context(request)
        )
        key = f"renew:{authorization.device}:{signed.request_id}"
        earlier = self._earlier(key, signed)
        if earlier is not None:
            return earlier
        try:
            issued = self.enrollment.reenroll(authorization, signed.csr, within=self._remember(key))
        except Conflict as exc:
            return self._duplicate(key, signed, exc)
        return self._issued(signed.request_id, issued.record, issued.chain)

    def _is_claim(self, cert: x509.Certificate) -> bool:
        return any(
            record.kind is BootstrapKind.CLAIM and record.certificate.subject == cert.issuer
            for record in self.enrollment.list_bootstrap_cas()
        )

    def _remember(self, key: str) -> RecordHook:
        """Record the request key beside the certificate (a second record fails: Conflict)."""
        at = self.authority.clock.now()

        def hook(tx: StoreTransaction, record: CertificateRecord) -> None:
            if not tx.add_provisioning_request(_key_digest(key), record.ca_name, record.serial, at):
                raise Conflict("this request ID was answered already")

        return hook

    def _earlier(self, key: str, signed: SignedRequest) -> bytes | None:
        """The certificate this request ID was answered with, if any (for the same key only)."""
        with self.authority.store.transaction(readonly=True) as tx:
            found = tx.provisioning_request(_key_digest(key))
        if found is None:
            return None
        record = self.authority.get(found[1], ca=found[0])
        issued_key = record.certificate.public_key().public_bytes(_DER, _SPKI)
        if issued_key != signed.csr.public_key().public_bytes(_DER, _SPKI):
            raise Conflict("this request ID was used for another key: use a new request ID")
        chain = (record.certificate, *self.authority.chain(record.ca_name)[:-1])
        return self._issued(signed.request_id, record, chain)

    def _duplicate(self, key: str, signed: SignedRequest, exc: Conflict) -> bytes:
        """The answer to a request another delivery recorded first (else the conflict)."""
        earlier = self._earlier(key, signed)
        if earlier is None:
            raise exc
        return earlier

    def _issued(
        self, request_id: str, record: CertificateRecord, chain: tuple[x509.Certificate, ...]
    ) -> bytes:
        """The issued answer; ``chain`` is leaf first, without the root."""
        return messages.answer(
            request_id,
            "issued",
            serial=record.serial,
            certificate=messages.pem_chain([record.certificate])[0],
            chain=messages.pem_chain(chain),
        )


def _common_name(item: x509.Certificate | x509.CertificateSigningRequest) -> str | None:
    values = item.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else None


def _key_digest(key: str) -> str:
    """Request keys are kept hashed: a fixed width whatever the device sent."""
    return hashlib.sha256(key.encode()).hexdigest()
