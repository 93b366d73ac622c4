"""CMP operations of the Lightweight CMP profile (RFC 9483) over the core: what each message
gets back.

Synchronous and free of HTTP: the routes hand it bytes and get a PKIMessage back, always one
(an ``error`` message for every refusal, audited). Who may enroll is decided by the core's
authenticators: a MAC keyed by the device's one-time secret (``MacProof``), a signature by an
IDevID (``BootstrapCertificate``) or by the device's current certificate
(``CurrentCertificate``). A transactionID issues at most one certificate: a replayed request
is refused with ``transactionIdInUse``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from pyasn1.codec.der import decoder
from pyasn1.error import PyAsn1Error
from pyasn1.type import univ
from pyasn1_alt_modules import rfc5280, rfc9480

from iotpki.core.authenticators import (
    Authorization,
    BootstrapCertificate,
    Context,
    Credentials,
    CurrentCertificate,
    MacProof,
)
from iotpki.core.authority import Issued, serial_hex
from iotpki.core.csr import KeyRequest, ProvenRequest, decode_csr, read_template
from iotpki.core.enrollment import Enrollment, Pending
from iotpki.core.models import RevocationReason
from iotpki.core.ports.shared import OnceRegistry
from iotpki.core.x509util import signature_valid
from iotpki.errors import (
    AuthError,
    BackendError,
    BadSignature,
    Busy,
    ConfigError,
    Conflict,
    Forbidden,
    IotpkiError,
    MalformedInput,
    NotFound,
    PolicyViolation,
)
from iotpki.protocols.cmp import bodies, codec, general
from iotpki.protocols.cmp.codec import IMPLICIT_CONFIRM, CmpFailure, FailInfo, ReadMessage
from iotpki.protocols.cmp.protection import (
    MacParameters,
    is_mac,
    read_mac_parameters,
    signature_algorithm_known,
)
from iotpki.protocols.cmp.signer import CmpSigner, Signers

__all__ = ["MESSAGE_TIME_TOLERANCE", "CmpResponder"]

MESSAGE_TIME_TOLERANCE = timedelta(minutes=10)
"""How far a request's messageTime may be from the server's clock (RFC 9483 section 3.5)."""

_TRANSACTION_MEMORY = timedelta(days=1)
_NONCE_MIN, _ID_MAX = 16, 64  # RFC 9483 section 3.1: 128-bit nonces and transactionIDs
_ECDSA_SHA256 = "1.2.840.10045.4.3.2"
_SKI = x509.SubjectKeyIdentifier
_REVOCATION_REASONS = {
    0: RevocationReason.UNSPECIFIED,
    1: RevocationReason.KEY_COMPROMISE,
    3: RevocationReason.AFFILIATION_CHANGED,
    4: RevocationReason.SUPERSEDED,
    5: RevocationReason.CESSATION_OF_OPERATION,
}
_REASON_CODE = "2.5.29.21"


@dataclass(slots=True)
class _Protection:
    """How the answer is protected: the request's MAC secret, else the CA's CMP signer."""

    ca: str
    mac: tuple[MacParameters, bytes] | None = None


@dataclass(slots=True)
class _Answer:
    body: rfc9480.PKIBody
    protection: _Protection
    extra: list[x509.Certificate] = field(default_factory=list)
    implicit_confirm: bool = False


def _fail_info(exc: IotpkiError, signed: bool) -> FailInfo:
    """The one place errors become failInfo (RFC 4210 section 5.2.3)."""
    if isinstance(exc, CmpFailure):
        return exc.fail_info
    if isinstance(exc, BadSignature):
        return FailInfo.BAD_POP
    if isinstance(exc, Forbidden):  # RateLimited too
        return FailInfo.NOT_AUTHORIZED
    if isinstance(exc, AuthError):
        return FailInfo.SIGNER_NOT_TRUSTED if signed else FailInfo.BAD_MESSAGE_CHECK
    if isinstance(exc, MalformedInput):
        return FailInfo.BAD_DATA_FORMAT
    if isinstance(exc, PolicyViolation):
        return FailInfo.BAD_CERT_TEMPLATE
    if isinstance(exc, NotFound):
        return FailInfo.BAD_CERT_ID
    if isinstance(exc, Conflict):
        return FailInfo.CERT_REVOKED if "revoked" in exc.message else FailInfo.BAD_REQUEST
    if isinstance(exc, BackendError | ConfigError | Busy):  # Busy: a campaign's rate
        return FailInfo.SYSTEM_UNAVAIL
    return FailInfo.BAD_REQUEST


def _fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()[:32]


class CmpResponder:
    """ir, cr, p10cr, kur, certConf, rr, genm (and pollReq, error) for every issuing CA."""

    def __init__(self, enrollment: Enrollment, spent: OnceRegistry, signers: Signers) -> None:
        self._enrollment = enrollment
        self._authority = enrollment.authority
        self._spent = spent
        self._signers = signers

    # -- entry ------------------------------------------------------------------------------

    def handle(self, der: bytes, label: str | None, source: str) -> bytes:
        """The answer to one DER PKIMessage sent to ``/.well-known/cmp[/p/<label>]``."""
        read: ReadMessage | None = None
        protection = _Protection(self._authority.default_issuing_ca())
        try:
            read = codec.decode(der)
            profile, ca = self._target(label)
            protection.ca = ca or protection.ca
            self._check_header(read)
            answer = self._dispatch(read, profile, ca, source, protection)
        except IotpkiError as exc:
            answer = self._refuse(exc, read, source, protection)
        return self._message(read, answer)

    def refuse_transport(self, exc: IotpkiError, source: str) -> None:
        """Audit a body refused before any PKIMessage could be read (too large, cut short)."""
        self._authority.audit_refusal(
            exc, source=source, actor=f"cmp:{source}", action="cmp.transport.refused", target=""
        )

    def _refuse(
        self, exc: IotpkiError, read: ReadMessage | None, source: str, protection: _Protection
    ) -> _Answer:
        signed = read is not None and not is_mac(read.header.protection_alg)
        fail = _fail_info(exc, signed)
        target = read.header.transaction_id.hex() if read and read.header.transaction_id else ""
        self._authority.audit_refusal(
            exc,
            source=source,
            actor=f"cmp:{source}",
            action=f"cmp.{read.kind if read else 'message'}.refused",
            target=target or (read.kind if read else "unreadable"),
            extra={"fail_info": fail.name.lower()},
        )
        return _Answer(bodies.error(exc.message, fail), protection)

    def _target(self, label: str | None) -> tuple[str | None, str | None]:
        """(profile, CA) the path label picks: a profile name first, then a CA name."""
        try:
            return self._authority.label_target(label, "CMP")
        except NotFound as exc:
            raise CmpFailure(exc.message, FailInfo.WRONG_AUTHORITY) from None

    def _check_header(self, read: ReadMessage) -> None:
        header = read.header
        if header.pvno not in (2, 3):
            raise CmpFailure(f"pvno {header.pvno} is not supported", FailInfo.UNSUPPORTED_VERSION)
        tid = header.transaction_id
        if tid is None or not _NONCE_MIN <= len(tid) <= _ID_MAX:
            raise CmpFailure("a transactionID of 16 to 64 bytes is required", FailInfo.BAD_REQUEST)
        nonce = header.sender_nonce
        if nonce is None or not _NONCE_MIN <= len(nonce) <= _ID_MAX:
            raise CmpFailure(
                "a senderNonce of 16 to 64 bytes is required", FailInfo.BAD_SENDER_NONCE
            )
        if header.message_time is not None:
            drift = abs(header.message_time - self._authority.clock.now())
            if drift > MESSAGE_TIME_TOLERANCE:
                raise CmpFailure("messageTime is too far from the server's time", FailInfo.BAD_TIME)
        if header.protection_alg is None or read.protection is None:
            raise CmpFailure("the message is not protected", FailInfo.BAD_MESSAGE_CHECK)

    def _dispatch(
        self,
        read: ReadMessage,
        profile: str | None,
        ca: str | None,
        source: str,
        protection: _Protection,
    ) -> _Answer:
        kind = read.kind
        if kind in bodies.RESPONSES:
            return self._certificate_request(read, profile, ca, source, protection)
        if kind == "certConf":
            return self._confirm(read, protection)
        if kind == "rr":
            return self._revoke(read, ca, source, protection)
        if kind == "genm":
            return self._general(read, profile, ca, source, protection)
        if kind == "error":
            return self._client_error(read, protection)
        if kind == "pollReq":
            raise CmpFailure("no request of this transaction waits", FailInfo.BAD_REQUEST)
        raise CmpFailure(f"{kind} messages are not supported", FailInfo.BAD_REQUEST)

    # -- protection and who may enroll ------------------------------------------------------

    def _authenticate(
        self, read: ReadMessage, ca: str | None, source: str, protection: _Protection
    ) -> Authorization:
        """The authorization the message's protection carries; the answer is protected alike."""
        header = read.header
        context = Context("cmp", source=source, ca=ca, transaction_id=self._tid(read))
        credentials: Credentials
        if is_mac(header.protection_alg):
            if read.kind in ("kur", "rr"):
                raise CmpFailure(
                    f"a {read.kind} is signed with the current certificate, not MAC-protected",
                    FailInfo.WRONG_INTEGRITY,
                )
            params, verify = _mac_check(read)
            device = self._sender_kid(read)

            credentials = MacProof(device, verify)
            authorization = self._enrollment.authenticators.authorize(credentials, context)
            assert authorization.mac_key is not None  # the secret the MAC was made with
            protection.mac = (params.fresh(), authorization.mac_key)
            return authorization
        cert = self._signer_certificate(read)
        current = self._enrollment.authenticators.current.stored(cert, ca)
        if read.kind in ("kur", "rr") or current is not None:
            credentials = CurrentCertificate(cert)
        else:
            credentials = BootstrapCertificate(cert)
        return self._enrollment.authenticators.authorize(credentials, context)

    @staticmethod
    def _sender_kid(read: ReadMessage) -> str:
        kid = read.header.sender_kid
        if not kid:
            raise CmpFailure(
                "MAC protection needs the device ID as senderKID", FailInfo.BAD_REQUEST
            )
        try:
            return kid.decode()
        except UnicodeDecodeError:
            raise CmpFailure("senderKID is not a device ID", FailInfo.BAD_REQUEST) from None

    @staticmethod
    def _signer_certificate(read: ReadMessage) -> x509.Certificate:
        """The first extraCert, if its key made the message's signature."""
        algorithm = read.header.protection_alg
        if not signature_algorithm_known(algorithm):
            raise CmpFailure(f"unsupported protection algorithm {algorithm}", FailInfo.BAD_ALG)
        if not read.extra_certs:
            raise CmpFailure(
                "a signed message carries its signer's certificate first in extraCerts",
                FailInfo.SIGNER_NOT_TRUSTED,
            )
        cert = read.extra_certs[0]
        assert algorithm is not None and read.protection is not None
        if not signature_valid(cert.public_key(), algorithm, read.protection, read.protected):
            raise CmpFailure("the message's signature does not verify", FailInfo.BAD_MESSAGE_CHECK)
        return cert

    @staticmethod
    def _tid(read: ReadMessage) -> str:
        assert read.header.transaction_id is not None  # checked with the header
        return read.header.transaction_id.hex()

    # -- certificate requests ---------------------------------------------------------------

    def _certificate_request(
        self,
        read: ReadMessage,
        profile: str | None,
        ca: str | None,
        source: str,
        protection: _Protection,
    ) -> _Answer:
        now = self._authority.clock.now()
        tid = self._tid(read)
        nonce = (read.header.sender_nonce or b"").hex()[:128]
        if self._spent.spend("cmp.tx", tid, nonce, now, now + _TRANSACTION_MEMORY) is not None:
            raise CmpFailure("this transactionID was used already", FailInfo.TRANSACTION_ID_IN_USE)
        authorization = self._authenticate(read, ca, source, protection)
        cert_req_id, request = self._request(read, authorization)
        if read.kind == "kur":
            issued = self._enrollment.reenroll(authorization, request)
        else:
            result = self._enrollment.enroll(authorization, request, profile=profile, ca=ca)
            if isinstance(result, Pending):
                raise CmpFailure(
                    f"enrollment {result.request_id} waits for an operator's approval; "
                    "enroll over EST to wait for it (CMP polling is not offered)",
                    FailInfo.NOT_AUTHORIZED,
                )
            assert isinstance(result, Issued)  # no server-generated key over CMP
            issued = result
        protection.ca = issued.record.ca_name
        self._remember(read, tid, issued, authorization, now)
        root = self._authority.chain(issued.record.ca_name)[-1]
        ca_pubs = [root] if read.kind == "ir" else []
        return _Answer(
            bodies.cert_rep(read.kind, cert_req_id, issued.certificate, ca_pubs),
            protection,
            extra=[*issued.chain[1:], root],
            implicit_confirm=read.header.implicit_confirm,
        )

    def _remember(
        self,
        read: ReadMessage,
        tid: str,
        issued: Issued,
        authorization: Authorization,
        now: datetime,
    ) -> None:
        """What a certConf of this transaction needs: the serial and how it was protected."""
        use = authorization.use
        if is_mac(read.header.protection_alg):
            proof = f"mac:{use.credential_id if use else '-'}"
        else:
            proof = f"sig:{_fingerprint(read.extra_certs[0])}"
        value = f"{issued.record.serial} {proof}"
        self._spent.spend("cmp.issued", tid, value, now, now + _TRANSACTION_MEMORY)

    def _request(self, read: ReadMessage, authorization: Authorization) -> tuple[int, KeyRequest]:
        """The certReqId and the request: a PKCS#10 CSR (p10cr) or a CRMF one with its POP."""
        if read.kind == "p10cr":
            return 0, decode_csr(read.body_content)
        messages = read.body
        if len(messages) != 1:
            raise CmpFailure("exactly one certificate request per message", FailInfo.BAD_REQUEST)
        message = messages[0]
        cert_request = message["certReq"]
        subject, key, extensions = codec.template_parts(cert_request["certTemplate"])
        current = authorization.current
        if subject is None and current is not None:
            subject = current.certificate.subject.public_bytes()  # kur: the same subject
        if subject is None or key is None:
            raise CmpFailure(
                "the certificate template needs a subject and a public key",
                FailInfo.BAD_CERT_TEMPLATE,
            )
        popo = message["popo"]
        if not popo.isValue or popo.getName() != "signature":
            raise CmpFailure("proof of possession must be a signature", FailInfo.BAD_POP)
        signing_key = popo["signature"]
        if signing_key["poposkInput"].isValue:
            raise CmpFailure(
                "poposkInput is for templates without subject or key (RFC 4211 4.1)",
                FailInfo.BAD_POP,
            )
        name, requested, public_key = read_template(subject, key, extensions)
        request = ProvenRequest(
            subject=name,
            extensions=requested,
            key=public_key,
            signed=codec.encode(cert_request),
            signature=bytes(signing_key["signature"].asOctets()),
            algorithm=str(signing_key["algorithmIdentifier"]["algorithm"]),
        )
        return int(cert_request["certReqId"]), request

    # -- confirmation ---------------------------------------------------------------------

    def _issued_in(self, read: ReadMessage) -> tuple[str, str]:
        """The serial issued in this transaction and the proof that protected its request."""
        now = self._authority.clock.now()
        kept = self._spent.spend("cmp.issued", self._tid(read), "", now, now + _TRANSACTION_MEMORY)
        if not kept:
            raise CmpFailure("no certificate was issued in this transaction", FailInfo.BAD_REQUEST)
        serial, _, proof = kept.partition(" ")
        return serial, proof

    def _check_same_protection(
        self, read: ReadMessage, proof: str, protection: _Protection
    ) -> None:
        """A confirmation is protected as the request was: with its secret, or its signer."""
        header = read.header
        if proof.startswith("mac:"):
            secret = self._enrollment.authenticators.mac.secret_of(proof[4:])
            if not is_mac(header.protection_alg) or secret is None:
                raise CmpFailure(
                    "protect the confirmation as the request", FailInfo.WRONG_INTEGRITY
                )
            params, verify = _mac_check(read)
            if not verify(secret):
                raise CmpFailure("the MAC does not verify", FailInfo.BAD_MESSAGE_CHECK)
            protection.mac = (params.fresh(), secret)
            return
        cert = self._signer_certificate(read)
        if f"sig:{_fingerprint(cert)}" != proof:
            raise CmpFailure("the confirmation has another signer", FailInfo.NOT_AUTHORIZED)

    def _confirm(self, read: ReadMessage, protection: _Protection) -> _Answer:
        serial, proof = self._issued_in(read)
        self._check_same_protection(read, proof, protection)
        now = self._authority.clock.now()
        expires = now + _TRANSACTION_MEMORY
        if self._spent.spend("cmp.confirmed", self._tid(read), "1", now, expires) is not None:
            raise CmpFailure("this certificate was confirmed already", FailInfo.CERT_CONFIRMED)
        record = self._authority.get(serial)
        protection.ca = record.ca_name
        statuses = read.body
        if len(statuses) != 1:
            raise CmpFailure("confirm exactly the one certificate issued", FailInfo.BAD_REQUEST)
        status = statuses[0]
        digest = _cert_hash(record.certificate, status)
        if bytes(status["certHash"]) != digest:
            raise CmpFailure("certHash is not the hash of the certificate", FailInfo.BAD_CERT_ID)
        info = status["statusInfo"]
        actor = f"cmp:{record.device_id or serial}"
        if info.isValue and int(info["status"]) == 2:  # rejection: the device will not use it
            self._authority.revoke(
                serial,
                reason=RevocationReason.CESSATION_OF_OPERATION,
                actor=actor,
                ca=record.ca_name,
            )
        else:
            self._authority.record_event(actor, "cmp.confirmed", serial, {"ca": record.ca_name})
        return _Answer(bodies.pki_conf(), protection)

    def _client_error(self, read: ReadMessage, protection: _Protection) -> _Answer:
        """The client gave up on the transaction (RFC 9483 section 4.6): revoke what it got."""
        serial, proof = self._issued_in(read)
        self._check_same_protection(read, proof, protection)
        record = self._authority.get(serial)
        protection.ca = record.ca_name
        self._authority.revoke(
            serial,
            reason=RevocationReason.CESSATION_OF_OPERATION,
            actor=f"cmp:{record.device_id or serial}",
            ca=record.ca_name,
        )
        return _Answer(bodies.pki_conf(), protection)

    # -- revocation -----------------------------------------------------------------------

    def _revoke(
        self, read: ReadMessage, ca: str | None, source: str, protection: _Protection
    ) -> _Answer:
        authorization = self._authenticate(read, ca, source, protection)
        current = authorization.current
        assert current is not None  # a CurrentCertificate authorization names its record
        details = read.body
        if len(details) != 1:
            raise CmpFailure("exactly one revocation per message", FailInfo.BAD_REQUEST)
        template = details[0]["certDetails"]
        serial = template["serialNumber"]
        if not serial.isValue or serial_hex(int(serial)) != current.serial:
            raise CmpFailure(
                "a device revokes the certificate that signs the request", FailInfo.BAD_CERT_ID
            )
        reason = _reason(details[0]["crlEntryDetails"])
        protection.ca = current.ca_name
        self._authority.revoke(
            current.serial, reason=reason, actor=authorization.actor, ca=current.ca_name
        )
        return _Answer(bodies.rev_rep(), protection)

    # -- general messages -----------------------------------------------------------------

    def _general(
        self,
        read: ReadMessage,
        profile: str | None,
        ca: str | None,
        source: str,
        protection: _Protection,
    ) -> _Answer:
        """genp: CA certificates, root CA update and accepted key types, as asked."""
        self._authenticate(read, ca, source, protection)
        asked = [str(itav["infoType"]) for itav in read.body]
        answers = general.answers(self._authority, asked, profile=profile, ca=ca)
        return _Answer(bodies.gen_rep(answers), protection)

    # -- the answer -------------------------------------------------------------------------

    def _message(self, read: ReadMessage | None, answer: _Answer) -> bytes:
        """The protected PKIMessage carrying ``answer``."""
        message = rfc9480.PKIMessage()
        header = message["header"]
        request = read.header if read is not None else None
        header["pvno"] = request.pvno if request is not None and request.pvno in (2, 3) else 2
        signer: CmpSigner | None = None
        mac = answer.protection.mac
        if mac is None:
            signer = self._signers.of(answer.protection.ca)
            header["sender"] = codec.general_name(signer.certificate.subject)
            header["protectionAlg"]["algorithm"] = univ.ObjectIdentifier(_ECDSA_SHA256)
            ski = signer.certificate.extensions.get_extension_for_class(_SKI).value.digest
            header["senderKID"] = ski
        else:
            ca_cert = self._authority.chain(answer.protection.ca)[0]
            header["sender"] = codec.general_name(ca_cert.subject)
            algorithm = mac[0].algorithm()
            header["protectionAlg"]["algorithm"] = algorithm["algorithm"]
            header["protectionAlg"]["parameters"] = algorithm["parameters"]
        if request is not None:
            header["recipient"] = request.sender
        else:
            header["recipient"] = codec.general_name(x509.Name([]))
        now = self._authority.clock.now()
        header["messageTime"] = header["messageTime"].clone(now.strftime("%Y%m%d%H%M%SZ"))
        if request is not None and request.transaction_id is not None:
            header["transactionID"] = request.transaction_id[:_ID_MAX]
        header["senderNonce"] = os.urandom(16)
        if request is not None and request.sender_nonce is not None:
            header["recipNonce"] = request.sender_nonce[:_ID_MAX]
        if answer.implicit_confirm:
            header["generalInfo"].append(codec.info_type_and_value(str(IMPLICIT_CONFIRM)))
        message["body"] = answer.body
        protected = codec.protected_part(message)
        if signer is not None:
            tag = signer.sign(protected)
            certs = [signer.certificate, *signer.chain]
        else:
            assert mac is not None
            tag = mac[0].tag(mac[1], protected)
            certs = []
        message["protection"] = message["protection"].clone(hexValue=tag.hex())
        for cert in [*certs, *(c for c in answer.extra if c not in certs)]:
            message["extraCerts"].append(codec.cmp_certificate(cert))
        return codec.encode(message)


def _mac_check(read: ReadMessage) -> tuple[MacParameters, Callable[[bytes], bool]]:
    """A MAC-protected message's parameters, and whether a secret makes its MAC."""
    header, tag = read.header, read.protection
    assert header.protection_alg is not None and tag is not None  # checked with the header
    params = read_mac_parameters(header.protection_alg, header.protection_params)

    def verify(secret: bytes) -> bool:
        return params.verify(secret, read.protected, tag)

    return params, verify


_HASH_NAMES = {
    "2.16.840.1.101.3.4.2.1": "sha256",
    "2.16.840.1.101.3.4.2.2": "sha384",
    "2.16.840.1.101.3.4.2.3": "sha512",
}


def _cert_hash(cert: x509.Certificate, status: univ.Asn1Item) -> bytes:
    """The hash a certConf must carry: by hashAlg (CMP v3), else the certificate's signature
    hash (RFC 4210 section 5.3.18), SHA-256 for a signature without one."""
    der = cert.public_bytes(serialization.Encoding.DER)
    if status["hashAlg"].isValue:
        name = _HASH_NAMES.get(str(status["hashAlg"]["algorithm"]))
        if name is None:
            raise CmpFailure("unsupported hashAlg", FailInfo.BAD_ALG)
        return hashlib.new(name, der).digest()
    algorithm = cert.signature_hash_algorithm
    if isinstance(algorithm, hashes.SHA384 | hashes.SHA512):
        return hashlib.new(algorithm.name, der).digest()
    return hashlib.sha256(der).digest()


def _reason(extensions: univ.Asn1Item) -> RevocationReason:
    """The reasonCode of an rr's crlEntryDetails (RFC 5280 section 5.3.1), else unspecified."""
    if not extensions.isValue:
        return RevocationReason.UNSPECIFIED
    for extension in extensions:
        if str(extension["extnID"]) == _REASON_CODE:
            try:
                code, rest = decoder.decode(
                    bytes(extension["extnValue"]), asn1Spec=rfc5280.CRLReason()
                )
            except PyAsn1Error:
                code, rest = None, b"?"
            if rest or code is None or int(code) not in _REVOCATION_REASONS:
                raise CmpFailure("unsupported revocation reason", FailInfo.BAD_REQUEST)
            return _REVOCATION_REASONS[int(code)]
    return RevocationReason.UNSPECIFIED
