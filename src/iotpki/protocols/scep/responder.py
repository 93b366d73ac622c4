"""SCEP operations (RFC 8894 section 4) over the core: what each request gets back.

Synchronous and free of HTTP: the routes hand it bytes and get a :class:`ScepResponse`. Every
request is audited here, refusals included; a request that can be answered with a CertRep is
(FAILURE with a failInfo), one that cannot gets an HTTP 4xx.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from asn1crypto import cms
from asn1crypto import crl as asn1_crl
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import AttributeOID

from iotpki.core.authority import serial_hex
from iotpki.core.csr import decode_csr
from iotpki.core.keytypes import key_fingerprint
from iotpki.core.models import CAKind, CAStatus
from iotpki.core.ports.shared import OnceRegistry
from iotpki.core.scep import RegistrationAuthority, ScepResult, ScepService
from iotpki.errors import (
    AuthError,
    BackendError,
    BadSignature,
    ConfigError,
    IotpkiError,
    MalformedInput,
    NotFound,
)
from iotpki.protocols.access import access_log
from iotpki.protocols.scep import envelope
from iotpki.protocols.scep.messages import (
    FailInfo,
    MessageType,
    PkiMessage,
    PkiStatus,
    ScepFailure,
    UnreadableMessage,
    build_cert_rep,
    parse_pki_message,
)

__all__ = ["CAPABILITIES", "CrlSource", "ScepResponder", "ScepResponse"]

CAPABILITIES = ("POSTPKIOperation", "SHA-256", "SHA-512", "AES", "Renewal", "SCEPStandard")
"""GetCACaps (RFC 8894 section 3.5.2): what this server really supports."""

CrlSource = Callable[[str], bytes | None]
"""The current DER CRL of a CA by name, or None if none is published."""

PKI_MESSAGE = "application/x-pki-message"
_SIGNING_TIME_TOLERANCE = timedelta(hours=1)
_CA_CACHE_SECONDS = 30.0
_NONCE_MEMORY = timedelta(days=1)  # how long a used senderNonce is remembered
_DER = serialization.Encoding.DER
_REQUESTS = frozenset(int(m) for m in MessageType) - {int(MessageType.CERT_REP)}


@dataclass(frozen=True, slots=True)
class ScepResponse:
    """What to send back: HTTP status, media type and body."""

    status: int
    media_type: str
    body: bytes


def _source(actor: str) -> str:
    """The client address in a request's actor (``scep:<address>``)."""
    return actor.partition(":")[2]


def _fail_info(exc: IotpkiError) -> FailInfo:
    """The one place errors become failInfo (RFC 8894 section 3.2.1.4)."""
    if isinstance(exc, ScepFailure):
        return exc.fail_info
    if isinstance(exc, BadSignature):
        return FailInfo.BAD_MESSAGE_CHECK
    if isinstance(exc, NotFound):
        return FailInfo.BAD_CERT_ID
    return FailInfo.BAD_REQUEST


def _challenge_password(csr: x509.CertificateSigningRequest) -> str | None:
    try:
        value = csr.attributes.get_attribute_for_oid(AttributeOID.CHALLENGE_PASSWORD).value
    except x509.AttributeNotFound:
        return None
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise ScepFailure("the challengePassword is not text", FailInfo.BAD_REQUEST) from None


def _same_key(certificate: x509.Certificate, csr: x509.CertificateSigningRequest) -> bool:
    return key_fingerprint(certificate.public_key()) == key_fingerprint(csr.public_key())


def _issuer_and_serial(content: bytes) -> tuple[bytes, int]:
    """RFC 8894 section 3.3.4: GetCert and GetCRL carry an IssuerAndSerialNumber."""
    try:
        value = cms.IssuerAndSerialNumber.load(content, strict=True)
        return bytes(value["issuer"].dump()), int(value["serial_number"].native)
    except (ValueError, TypeError, KeyError) as exc:
        raise ScepFailure(f"bad IssuerAndSerialNumber: {exc}", FailInfo.BAD_REQUEST) from None


def _certs_only(certs: list[x509.Certificate], crl: bytes | None = None) -> bytes:
    """A degenerate certificates-only SignedData (RFC 8894 section 3.4), or one CRL's."""
    if crl is None:
        return pkcs7.serialize_certificates(certs, _DER)
    signed = cms.SignedData(
        {
            "version": "v1",
            "digest_algorithms": [],
            "encap_content_info": {"content_type": "data"},
            "crls": [asn1_crl.CertificateList.load(crl)],
            "signer_infos": [],
        }
    )
    return bytes(cms.ContentInfo({"content_type": "signed_data", "content": signed}).dump())


class ScepResponder:
    """GetCACaps, GetCACert and PKIOperation for every issuing CA of the installation."""

    def __init__(
        self, service: ScepService, spent: OnceRegistry, crl_source: CrlSource | None = None
    ) -> None:
        self._service = service
        self._authority = service.authority
        self._spent = spent
        self._crl_source = crl_source
        self._lock = threading.Lock()
        self._cas: tuple[float, list[str]] | None = None

    # -- helpers -------------------------------------------------------------------------------

    def _issuing_cas(self) -> list[str]:
        now = time.monotonic()
        with self._lock:
            cached = self._cas
        if cached is not None and now - cached[0] < _CA_CACHE_SECONDS:
            return cached[1]
        names = [
            ca.name
            for ca in self._authority.list_cas()
            if ca.kind is CAKind.ISSUING and ca.status is CAStatus.ACTIVE and ca.key_ref
        ]
        with self._lock:
            self._cas = (now, names)
        return names

    def _ca_named(self, message: str | None) -> str:
        """The CA a GetCACert/GetCACaps ``message`` names, else the default issuing CA."""
        if message and message in self._issuing_cas():
            return message
        return self._authority.default_issuing_ca()

    def _audit(self, actor: str, action: str, target: str, data: dict[str, object]) -> None:
        self._authority.record_event(actor, f"scep.{action}", target[:256], data)

    # -- GetCACaps and GetCACert ---------------------------------------------------------------

    def get_ca_caps(self, message: str | None, actor: str) -> ScepResponse:
        """RFC 8894 section 3.5.1: one capability per line."""
        access_log.info("%s GetCACaps %s", actor, (message or "")[:64])
        return ScepResponse(200, "text/plain", "\n".join(CAPABILITIES).encode() + b"\n")

    def get_ca_cert(self, message: str | None, actor: str) -> ScepResponse:
        """RFC 8894 section 4.2.1.2: the RA and CA certificates (application/x-x509-ca-ra-cert)."""
        ca = self._ca_named(message)
        ra = self._service.registration_authorities(ca)[0]
        chain = self._authority.chain(ca)
        access_log.info(
            "%s GetCACert %s ra=%s", actor, ca, serial_hex(ra.certificate.serial_number)
        )
        return ScepResponse(
            200, "application/x-x509-ca-ra-cert", _certs_only([ra.certificate, *chain])
        )

    # -- PKIOperation ----------------------------------------------------------------------

    def refuse(self, exc: IotpkiError, operation: str, actor: str) -> ScepResponse:
        """An HTTP error for a request no CertRep can answer, audited."""
        self._authority.audit_refusal(
            exc,
            source=_source(actor),
            actor=actor,
            action="scep.refused",
            target=operation,
        )
        return ScepResponse(exc.status, "text/plain", exc.message.encode() + b"\n")

    @staticmethod
    def _open(content: bytes) -> envelope.Envelope | ScepFailure:
        """The request's envelope, or the failure to answer once a CertRep can be signed."""
        try:
            return envelope.parse(content)
        except ScepFailure as exc:
            return exc

    def _ra_for(
        self, sealed: envelope.Envelope | ScepFailure | None
    ) -> tuple[str, RegistrationAuthority]:
        """The CA and RA the request's envelope is encrypted to (else the default CA's RA)."""
        wanted = sealed.recipients if isinstance(sealed, envelope.Envelope) else []
        for ca in self._issuing_cas():
            for ra in self._service.registration_authorities(ca):
                if any(r.matches(ra.certificate) for r in wanted):
                    return ca, ra
        ca = self._authority.default_issuing_ca()
        return ca, self._service.registration_authorities(ca)[0]

    def _check_nonce(self, message: PkiMessage) -> None:
        """A senderNonce is used for one transaction and message type only (replays), on
        whichever replica the request lands: the store remembers each for a day."""
        transaction = hashlib.sha256(message.transaction_id.encode()).hexdigest()[:64]
        seen = f"{transaction}:{message.message_type}"
        nonce = hashlib.sha256(message.sender_nonce).hexdigest()
        now = self._authority.clock.now()
        earlier = self._spent.spend("scep-nonce", nonce, seen, now, now + _NONCE_MEMORY)
        if earlier is not None and earlier != seen:
            raise ScepFailure("senderNonce reused by another request", FailInfo.BAD_REQUEST)

    def pki_operation(self, der: bytes, actor: str) -> ScepResponse:
        """Answer one pkiMessage with a CertRep (RFC 8894 section 3.3)."""
        try:
            message = parse_pki_message(der)
            sealed = self._open(message.content)
            ca, ra = self._ra_for(sealed)
        except UnreadableMessage as exc:
            return self._unreadable(exc, actor)
        except (MalformedInput, ConfigError, BackendError) as exc:
            return self.refuse(exc, "PKIOperation", actor)
        result: ScepResult | None = None
        reply_envelope: bytes | None = None
        fail_info: FailInfo | None = None
        reason = ""
        try:
            message.verify(self._authority.clock.now(), _SIGNING_TIME_TOLERANCE)
            self._check_nonce(message)
            result, reply_envelope = self._dispatch(message, sealed, ca, ra, actor)
        except (ConfigError, BackendError) as exc:
            return self.refuse(exc, "PKIOperation", actor)
        except IotpkiError as exc:
            fail_info, reason = _fail_info(exc), exc.message
        if fail_info is not None:
            status = PkiStatus.FAILURE
        elif result is not None and result.status == "pending":
            status = PkiStatus.PENDING
        elif result is not None and result.status == "failure":
            status, fail_info = (
                PkiStatus.FAILURE,
                FailInfo(result.transaction.fail_info or "badRequest"),
            )
        else:
            status = PkiStatus.SUCCESS
        reply = build_cert_rep(
            signer=ra.certificate,
            key=ra.key,
            transaction_id=message.transaction_id,
            recipient_nonce=message.sender_nonce,
            status=status,
            fail_info=fail_info,
            envelope=reply_envelope if status is PkiStatus.SUCCESS else None,
            digest_algorithm=message.digest_algorithm,
            now=self._authority.clock.now(),
        )
        data: dict[str, object] = {
            "ca": ca,
            "message_type": message.message_type,
            "status": status.name.lower(),
        }
        if fail_info is not None:
            data |= {"fail_info": str(fail_info), "reason": reason[:256]}
        if result is not None and result.transaction.serial:
            data["serial"] = result.transaction.serial
        if result is None or not result.audited or fail_info is not None:
            self._audit(actor, "pki_operation", message.transaction_id, data)
        return ScepResponse(200, PKI_MESSAGE, reply)

    def _unreadable(self, exc: UnreadableMessage, actor: str) -> ScepResponse:
        """A CertRep FAILURE for a request whose transactionID and senderNonce alone decode,
        signed by the default CA's RA (which RA it was encrypted to is not known)."""
        try:
            ca, ra = self._ra_for(None)
        except (ConfigError, BackendError) as error:
            return self.refuse(error, "PKIOperation", actor)
        reply = build_cert_rep(
            signer=ra.certificate,
            key=ra.key,
            transaction_id=exc.transaction_id,
            recipient_nonce=exc.sender_nonce,
            status=PkiStatus.FAILURE,
            fail_info=exc.fail_info,
            now=self._authority.clock.now(),
        )
        data: dict[str, object] = {
            "ca": ca,
            "status": "failure",
            "fail_info": str(exc.fail_info),
            "reason": exc.message[:256],
        }
        self._audit(actor, "pki_operation", exc.transaction_id, data)
        return ScepResponse(200, PKI_MESSAGE, reply)

    def _dispatch(
        self,
        message: PkiMessage,
        sealed: envelope.Envelope | ScepFailure,
        ca: str,
        ra: RegistrationAuthority,
        actor: str,
    ) -> tuple[ScepResult | None, bytes | None]:
        kind = message.message_type
        if kind not in _REQUESTS:
            raise ScepFailure(f"messageType {kind} is not a request", FailInfo.BAD_REQUEST)
        if isinstance(sealed, ScepFailure):
            raise sealed
        content, cipher = envelope.decrypt(sealed, ra.certificate, ra.key)
        if kind in (MessageType.PKCS_REQ, MessageType.RENEWAL_REQ):
            result = self._enroll(message, content, ca, actor)
        elif kind == MessageType.CERT_POLL:
            # RFC 8894 section 3.3.3: the transactionID names the request being polled.
            result = self._service.poll(
                ca=ca,
                transaction_id=message.transaction_id,
                key_fingerprint=key_fingerprint(message.signer.public_key()),
            )
        elif kind == MessageType.GET_CERT:
            return None, envelope.encrypt(
                _certs_only([self._certificate(ca, content)]), message.signer, cipher
            )
        else:
            return None, envelope.encrypt(self._crl(ca, content), message.signer, cipher)
        if result.issued is None:
            return result, None
        # Only the issued certificate: a certificates-only SignedData is a SET, sorted in DER,
        # and clients (micromdm's scepclient) take its first certificate as theirs. The chain
        # comes with GetCACert.
        certs = _certs_only([result.issued.certificate])
        return result, envelope.encrypt(certs, message.signer, cipher)

    def _enroll(self, message: PkiMessage, content: bytes, ca: str, actor: str) -> ScepResult:
        csr = decode_csr(content)  # BadCSR: badRequest; BadSignature: badMessageCheck
        password = _challenge_password(csr)
        signer = message.signer
        self_signed = signer.issuer == signer.subject and _same_key(signer, csr)
        if message.message_type == MessageType.RENEWAL_REQ or (
            not self_signed and self._service.issued_here(signer, ca)
        ):
            # RFC 8894 section 2.3: a request signed by a certificate the CA issued renews it
            # (certmonger renews with a PKCSReq signed by its current certificate).
            return self._service.renew(
                csr,
                signer,
                ca=ca,
                transaction_id=message.transaction_id,
                actor=actor,
                request={"message_type": message.message_type},
                source=_source(actor),
            )
        if not _same_key(signer, csr):
            raise AuthError("a PKCSReq is signed with the key it asks to certify")
        return self._service.enroll(
            csr,
            password,
            ca=ca,
            transaction_id=message.transaction_id,
            actor=actor,
            request={"message_type": message.message_type},
            source=_source(actor),
        )

    def _certificate(self, ca: str, content: bytes) -> x509.Certificate:
        issuer, serial = _issuer_and_serial(content)
        ca_cert = self._authority.chain(ca)[0]
        if issuer != ca_cert.subject.public_bytes():
            raise NotFound("the issuer is not this CA")
        return self._authority.get(serial_hex(serial), ca=ca).certificate

    def _crl(self, ca: str, content: bytes) -> bytes:
        issuer, _ = _issuer_and_serial(content)
        if issuer != self._authority.chain(ca)[0].subject.public_bytes():
            raise NotFound("the issuer is not this CA")
        crl = self._crl_source(ca) if self._crl_source is not None else None
        if crl is None:
            raise NotFound(f"no CRL is published for CA {ca!r}", ca=ca)
        return _certs_only([], crl)
