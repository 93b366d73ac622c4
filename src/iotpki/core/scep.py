"""SCEP enrollment state (RFC 8894): challenge passwords, transactions and RA certificates.

Pure core: it reads and writes through the store's transaction port, keeps the RA's RSA key in
the CA's key backend and leaves every certificate signature to the :class:`Authority`. The wire
format (CMS, attributes, failInfo) lives in :mod:`iotpki.protocols.scep`.

Transactions make enrollment idempotent (RFC 8894 section 3.2.1.1: "the transactionID ... is
used to ... match requests and responses"): a request repeated with a transactionID already
answered gets the same answer, never a second certificate.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from datetime import timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from iotpki.core.authenticators import (
    Authenticators,
    Context,
    CurrentCertificate,
    ScepChallenge,
    consume,
    secret_hash,
)
from iotpki.core.authority import Authority, Issued, serial_hex
from iotpki.core.device_id import check_device_id
from iotpki.core.keytypes import key_fingerprint
from iotpki.core.models import (
    CertificateRecord,
    CertStatus,
    KeyAlgorithm,
    ScepChallengeRecord,
    ScepRaRecord,
    ScepTransactionKind,
    ScepTransactionRecord,
    ScepTransactionStatus,
)
from iotpki.core.ports import KeyBackend, StoreTransaction
from iotpki.errors import ConfigError, Conflict, NotFound, RequestError

__all__ = [
    "RA_PROFILE",
    "RegistrationAuthority",
    "ScepResult",
    "ScepService",
]

RA_PROFILE = "scep-ra"
_RA_CACHE_SECONDS = 30.0
_MAX_CHALLENGE_LIFETIME = timedelta(days=90)
_OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


@dataclass(frozen=True, slots=True)
class RegistrationAuthority:
    """An RA certificate of a CA and the backend's key object (it decrypts and signs inside)."""

    record: ScepRaRecord
    certificate: x509.Certificate
    key: rsa.RSAPrivateKey


@dataclass(frozen=True, slots=True)
class ScepResult:
    """Where a transaction stands, with the certificate once it is issued."""

    transaction: ScepTransactionRecord
    issued: Issued | None = None
    audited: bool = False  # the request's audit event was written with the change

    @property
    def status(self) -> str:
        """``success``, ``pending`` or ``failure``."""
        return self.transaction.status


@dataclass(slots=True)
class _RaCache:
    authorities: list[RegistrationAuthority]
    loaded_at: float


class ScepService:
    """Challenge passwords, SCEP transactions and RA certificates over one authority."""

    def __init__(
        self,
        authority: Authority,
        key_backends: Mapping[str, KeyBackend],
        profiles: Collection[str] | None = None,
        authenticators: Authenticators | None = None,
    ) -> None:
        self._authority = authority
        self._authenticators = authenticators or Authenticators(authority)
        self._store = authority.store
        self._clock = authority.clock
        self._keys = dict(key_backends)
        self._profiles = set(profiles) if profiles is not None else None
        self._lock = threading.Lock()
        self._ras: dict[str, _RaCache] = {}

    @property
    def authority(self) -> Authority:
        """The authority that signs."""
        return self._authority

    # -- challenge passwords -------------------------------------------------------------------

    def create_challenge(
        self,
        device_id: str,
        *,
        actor: str,
        lifetime: timedelta = timedelta(hours=24),
        profile: str = "device",
        ca: str | None = None,
        approval: bool = False,
    ) -> tuple[str, ScepChallengeRecord]:
        """A one-time challenge password for one device; only its hash is stored."""
        check_device_id(device_id)
        if not timedelta(0) < lifetime <= _MAX_CHALLENGE_LIFETIME:
            raise RequestError("a challenge password lives from 1 second to 90 days")
        if self._profiles is not None and profile not in self._profiles:
            raise NotFound(f"no profile named {profile!r}", profile=profile)
        if ca is not None:
            self._authority.get_ca(ca)
        # hex: a PrintableString, as every SCEP client can carry it in challengePassword
        secret = secrets.token_hex(16)
        now = self._clock.now()
        record = ScepChallengeRecord(
            challenge_id=secrets.token_hex(8),
            device_id=device_id,
            secret_hash=secret_hash(secret),
            created_at=now,
            expires_at=now + lifetime,
            profile=profile,
            ca_name=ca,
            approval=approval,
        )
        with self._store.transaction() as tx:
            tx.add_scep_challenge(record)
            tx.append_audit(
                now,
                actor,
                "scep.challenge_created",
                device_id,
                {
                    "challenge": record.challenge_id,
                    "expires_at": record.expires_at.isoformat(),
                    "profile": profile,
                    "ca": ca,
                    "approval": approval,
                },
            )
        return secret, record

    # -- RA certificates -------------------------------------------------------------------

    def registration_authorities(self, ca_name: str) -> list[RegistrationAuthority]:
        """The CA's usable RA certificates, newest (the one to advertise) first.

        A new RA key and certificate are made when none is valid, fresh (more than a third of
        its life left) and issued by the CA's current certificate.
        """
        now_mono = time.monotonic()
        with self._lock:
            cached = self._ras.get(ca_name)
        if cached is not None and now_mono - cached.loaded_at < _RA_CACHE_SECONDS:
            return cached.authorities
        with self._lock:  # one RA creation at a time in this process
            authorities = self._load_ras(ca_name)
            if not authorities or not self._fresh(authorities[0], ca_name):
                self._create_ra(ca_name)
                authorities = self._load_ras(ca_name)
            self._ras[ca_name] = _RaCache(authorities, now_mono)
        return authorities

    def _load_ras(self, ca_name: str) -> list[RegistrationAuthority]:
        now = self._clock.now()
        usable: list[RegistrationAuthority] = []
        with self._store.transaction(readonly=True) as tx:
            for record in tx.list_scep_ras(ca_name):
                cert = record.certificate
                issued = tx.get_certificate(ca_name, record.serial)
                if issued is None or issued.status is CertStatus.REVOKED:
                    continue
                if not cert.not_valid_before_utc <= now < cert.not_valid_after_utc:
                    continue
                backend = self._keys.get(record.key_backend)
                if backend is None:
                    continue
                key = backend.signer(record.key_ref)
                if isinstance(key, rsa.RSAPrivateKey):
                    usable.append(RegistrationAuthority(record, cert, key))
        return usable

    def _fresh(self, ra: RegistrationAuthority, ca_name: str) -> bool:
        cert = ra.certificate
        life = cert.not_valid_after_utc - cert.not_valid_before_utc
        if cert.not_valid_after_utc - self._clock.now() < life / 3:
            return False
        try:
            cert.verify_directly_issued_by(self._authority.chain(ca_name)[0])
        except (InvalidSignature, ValueError, TypeError):
            return False
        return True

    def _create_ra(self, ca_name: str) -> None:
        ca = self._authority.get_ca(ca_name)
        if ca.key_backend is None or ca.certificate_der is None:
            raise ConfigError(f"CA {ca_name!r} does not issue here: no SCEP RA", ca=ca_name)
        backend = self._keys.get(ca.key_backend)
        if backend is None:
            raise ConfigError(f"key backend {ca.key_backend!r} is not configured", ca=ca_name)
        key_ref = backend.generate(f"scep-ra-{ca_name}", KeyAlgorithm.RSA2048)
        key = backend.signer(key_ref)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ConfigError("the key backend made no RSA key for the SCEP RA", ca=ca_name)
        names = ca.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        common_name = f"{str(names[0].value) if names else ca_name} SCEP RA"[:64]
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .sign(key, hashes.SHA256())
        )

        def record_ra(tx: StoreTransaction, issued: CertificateRecord) -> None:
            tx.add_scep_ra(
                ScepRaRecord(
                    ca_name=ca_name,
                    serial=issued.serial,
                    key_backend=backend.name,
                    key_ref=key_ref,
                    certificate_der=issued.der,
                    created_at=self._clock.now(),
                )
            )

        self._authority.issue(csr, profile=RA_PROFILE, ca=ca_name, actor="scep", within=record_ra)

    # -- transactions ----------------------------------------------------------------------

    def enroll(
        self,
        csr: x509.CertificateSigningRequest,
        password: str | None,
        *,
        ca: str,
        transaction_id: str,
        actor: str,
        request: Mapping[str, object] | None = None,
        source: str = "unknown",
    ) -> ScepResult:
        """PKCSReq authenticated by a one-time challenge password (RFC 8894 section 2.2).

        ``request``: the protocol request's audit data, recorded as ``scep.pki_operation`` in
        the transaction that records the outcome (one write instead of two).
        """
        fingerprint = key_fingerprint(csr.public_key())
        with self._store.transaction(readonly=True) as tx:
            existing = tx.get_scep_transaction(ca, transaction_id)
        earlier = self._earlier(existing, fingerprint, "enroll", None)
        if earlier is not None:
            return earlier
        authorization = self._authenticators.authorize(
            ScepChallenge(password), Context("scep", source, ca, transaction_id)
        )
        use = authorization.use
        assert use is not None  # a challenge password is one-time
        now = self._clock.now()
        record = ScepTransactionRecord(
            ca_name=ca,
            transaction_id=transaction_id,
            kind=ScepTransactionKind.ENROLL,
            status=ScepTransactionStatus.PENDING,
            key_fingerprint=fingerprint,
            csr_der=None,  # the CSR holds the challenge password: never stored in clear
            device_id=authorization.device_id,
            profile=authorization.profile or "device",
            created_at=now,
            updated_at=now,
            challenge_id=use.credential_id,
        )
        if authorization.approval:
            ra = self.registration_authorities(ca)[0]
            record = replace(
                record,
                sealed_csr=_seal(ra.certificate, csr.public_bytes(Encoding.DER)),
                sealed_by=ra.record.serial,
            )
            with self._store.transaction() as tx:
                consume(tx, use, now)  # the pending request holds the challenge
                _store(tx, existing, record)
                tx.append_audit(
                    now,
                    actor,
                    "scep.pending",
                    transaction_id,
                    {"ca": ca, "device": authorization.device_id, "key": fingerprint},
                )
                _audit_request(tx, actor, record, request, "pending", None)
            return ScepResult(record, audited=request is not None)

        def record_enrollment(tx: StoreTransaction, issued: CertificateRecord) -> None:
            _store(
                tx,
                existing,
                replace(record, status=ScepTransactionStatus.SUCCESS, serial=issued.serial),
            )
            _audit_request(tx, actor, record, request, "success", issued.serial)

        issued = self._authority.issue(
            csr,
            profile=record.profile,
            ca=ca,
            device_id=authorization.device_id,
            actor=actor,
            within=self._authenticators.within(authorization, record_enrollment),
        )
        done = replace(record, status=ScepTransactionStatus.SUCCESS, serial=issued.record.serial)
        return ScepResult(done, issued, audited=request is not None)

    def issued_here(self, certificate: x509.Certificate, ca: str) -> bool:
        """Whether this CA issued ``certificate`` (whatever its status now)."""
        return self._authenticators.current.stored(certificate, ca) is not None

    def renew(
        self,
        csr: x509.CertificateSigningRequest,
        signer: x509.Certificate,
        *,
        ca: str,
        transaction_id: str,
        actor: str,
        request: Mapping[str, object] | None = None,
        source: str = "unknown",
    ) -> ScepResult:
        """RenewalReq (RFC 8894 section 3.3.1.2), authenticated by a current certificate."""
        fingerprint = key_fingerprint(csr.public_key())
        with self._store.transaction(readonly=True) as tx:
            existing = tx.get_scep_transaction(ca, transaction_id)
        signer_serial = serial_hex(signer.serial_number)
        earlier = self._earlier(existing, fingerprint, "renew", signer_serial)
        if earlier is not None:
            return earlier
        authorization = self._authenticators.authorize(
            CurrentCertificate(signer), Context("scep", source, ca, transaction_id)
        )
        old = authorization.current
        assert old is not None  # a current certificate authorizes with its record
        now = self._clock.now()
        record = ScepTransactionRecord(
            ca_name=ca,
            transaction_id=transaction_id,
            kind=ScepTransactionKind.RENEW,
            status=ScepTransactionStatus.SUCCESS,
            key_fingerprint=fingerprint,
            csr_der=None,
            device_id=old.device_id,
            profile=old.profile,
            created_at=now,
            updated_at=now,
            renewed_from=old.serial,
        )

        def record_renewal(tx: StoreTransaction, issued: CertificateRecord) -> None:
            _store(tx, existing, replace(record, serial=issued.serial))
            _audit_request(tx, actor, record, request, "success", issued.serial)

        issued = self._authority.renew(
            old.serial, csr=csr, ca=ca, actor=actor, within=record_renewal
        )
        done = replace(record, serial=issued.record.serial)
        return ScepResult(done, issued, audited=request is not None)

    def poll(self, *, ca: str, transaction_id: str, key_fingerprint: str) -> ScepResult:
        """CertPoll (RFC 8894 section 3.3.3): where a transaction of this key stands."""
        with self._store.transaction(readonly=True) as tx:
            existing = tx.get_scep_transaction(ca, transaction_id)
        if existing is None:
            raise NotFound(f"no SCEP transaction {transaction_id!r}", ca=ca)
        if existing.key_fingerprint != key_fingerprint:
            raise RequestError(f"transactionID {transaction_id!r} belongs to another key")
        return self._result(existing)

    def _earlier(
        self,
        existing: ScepTransactionRecord | None,
        fingerprint: str,
        kind: str,
        renewed_from: str | None,
    ) -> ScepResult | None:
        """The answer already given to this same request, or None if the request is new.

        The transactionID is commonly a hash of the public key (RFC 8894 section 3.2.1.1), so
        a renewal keeping its key reuses the enrollment's: the same key with another message
        type or another signer certificate starts a new transaction once the earlier is done.
        """
        if existing is None:
            return None
        if existing.key_fingerprint != fingerprint:
            raise RequestError(f"transactionID {existing.transaction_id!r} belongs to another key")
        if existing.kind == kind and existing.renewed_from == renewed_from:
            return self._result(existing)
        if existing.status == "pending":
            raise Conflict(f"transaction {existing.transaction_id!r} is pending approval")
        return None

    def _result(self, existing: ScepTransactionRecord) -> ScepResult:
        if existing.status != "success" or existing.serial is None:
            return ScepResult(existing)
        record = self._authority.get(existing.serial, ca=existing.ca_name)
        cert = record.certificate
        chain = (cert, *self._authority.chain(existing.ca_name)[:-1])
        return ScepResult(existing, Issued(record, cert, chain))

    def transactions(
        self, status: str | None = None, limit: int = 100
    ) -> list[ScepTransactionRecord]:
        """SCEP transactions, newest first (``status="pending"``: those awaiting an operator)."""
        with self._store.transaction(readonly=True) as tx:
            return tx.list_scep_transactions(status, limit)

    def decide(self, ca: str, transaction_id: str, *, approve: bool, actor: str) -> ScepResult:
        """Approve (issue) or reject a pending enrollment; the device learns it by CertPoll."""
        with self._store.transaction(readonly=True) as tx:
            pending = tx.get_scep_transaction(ca, transaction_id)
        if pending is None:
            raise NotFound(f"no SCEP transaction {transaction_id!r}", ca=ca)
        if pending.status != "pending":
            raise Conflict(f"SCEP transaction {transaction_id!r} is {pending.status}", ca=ca)
        now = self._clock.now()
        if not approve:
            rejected = replace(
                _answered(pending),
                status=ScepTransactionStatus.FAILURE,
                fail_info="badRequest",
                updated_at=now,
                decided_by=actor,
            )
            with self._store.transaction() as tx:
                _store(tx, pending, rejected)
                tx.append_audit(now, actor, "scep.rejected", transaction_id, {"ca": ca})
            return ScepResult(rejected)
        csr = x509.load_der_x509_csr(self._pending_csr(pending))
        approved = replace(
            _answered(pending),
            status=ScepTransactionStatus.SUCCESS,
            updated_at=now,
            decided_by=actor,
        )

        def record(tx: StoreTransaction, issued: CertificateRecord) -> None:
            _store(tx, pending, replace(approved, serial=issued.serial))

        issued = self._authority.issue(
            csr,
            profile=pending.profile,
            ca=ca,
            device_id=pending.device_id,
            actor=actor,
            within=record,
        )
        return ScepResult(replace(approved, serial=issued.record.serial), issued)

    def _pending_csr(self, pending: ScepTransactionRecord) -> bytes:
        """The DER CSR of a pending transaction, unsealed by the RA it was sealed to."""
        if pending.sealed_csr is None or pending.sealed_by is None:
            if pending.csr_der is None:
                raise Conflict(f"SCEP transaction {pending.transaction_id!r} holds no request")
            return pending.csr_der  # stored in clear before migration scep_0002
        with self._store.transaction(readonly=True) as tx:
            ras = tx.list_scep_ras(pending.ca_name)
        ra = next((r for r in ras if r.serial == pending.sealed_by), None)
        backend = None if ra is None else self._keys.get(ra.key_backend)
        if ra is None or backend is None:
            raise ConfigError(f"the RA {pending.sealed_by} of a pending request is gone")
        key = backend.signer(ra.key_ref)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ConfigError(f"the RA {pending.sealed_by}'s key is not RSA")
        return _unseal(key, pending.sealed_csr)


def _seal(certificate: x509.Certificate, data: bytes) -> bytes:
    """``data`` encrypted to an RA: AES-256-GCM under a key wrapped with RSA-OAEP (SHA-256)."""
    public_key = certificate.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise ConfigError("the SCEP RA certificate has no RSA key")
    content_key, nonce = AESGCM.generate_key(256), os.urandom(12)
    wrapped = public_key.encrypt(content_key, _OAEP)
    return wrapped + nonce + AESGCM(content_key).encrypt(nonce, data, None)


def _unseal(key: rsa.RSAPrivateKey, sealed: bytes) -> bytes:
    """What :func:`_seal` encrypted, decrypted by the RA's key inside its backend."""
    size = key.key_size // 8
    wrapped, nonce, ciphertext = sealed[:size], sealed[size : size + 12], sealed[size + 12 :]
    try:
        return AESGCM(key.decrypt(wrapped, _OAEP)).decrypt(nonce, ciphertext, None)
    except (ValueError, InvalidTag):
        raise ConfigError("a pending request does not decrypt with its RA key") from None


def _answered(record: ScepTransactionRecord) -> ScepTransactionRecord:
    """A decided transaction keeps no request: the CSR is needed only until issuance."""
    return replace(record, csr_der=None, sealed_csr=None, sealed_by=None)


def _store(
    tx: StoreTransaction, seen: ScepTransactionRecord | None, record: ScepTransactionRecord
) -> None:
    """Record a transaction's new state if it is still as ``seen`` (else ``Conflict``)."""
    if seen is None:
        tx.add_scep_transaction(record)  # a concurrent twin fails on the primary key
    elif not tx.replace_scep_transaction(seen, record):
        raise Conflict(f"SCEP transaction {record.transaction_id!r} changed meanwhile")


def _audit_request(
    tx: StoreTransaction,
    actor: str,
    record: ScepTransactionRecord,
    request: Mapping[str, object] | None,
    status: str,
    serial: str | None,
) -> None:
    if request is None:
        return
    data = {**request, "ca": record.ca_name, "status": status}
    if serial is not None:
        data["serial"] = serial
    tx.append_audit(record.updated_at, actor, "scep.pki_operation", record.transaction_id, data)
