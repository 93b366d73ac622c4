"""Issuing, renewing and looking up certificates: the only code that signs end-entity ones."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import NameOID

from iotpki.core import policy
from iotpki.core.authority._base import DER, Issued, RecordHook, SigningCA, serial_hex, tbs_builder
from iotpki.core.authority.cas import CertificateAuthorities
from iotpki.core.authority.lint import Lint
from iotpki.core.authority.revocation import one_certificate
from iotpki.core.campaign_rules import campaign_renewal, count_renewal, running_campaigns
from iotpki.core.csr import KeyRequest, signature_verified
from iotpki.core.keyquality import is_blocklisted
from iotpki.core.keytypes import algorithm_of, key_fingerprint, signature_hash
from iotpki.core.models import (
    CAKind,
    CARecord,
    CertificateQuery,
    CertificateRecord,
    CertStatus,
    DeviceRecord,
    KeyAlgorithm,
    KeyAttestation,
)
from iotpki.core.partitions import certificate_partition
from iotpki.core.ports import StoreTransaction
from iotpki.errors import AttestationRejected, BadSignature, Conflict, KeyRejected, PolicyViolation


class Issuance(CertificateAuthorities, Lint):
    """Issue and renew certificates (end-entity, attestation-key, subordinate CA); read them."""

    def create_issuing(
        self,
        name: str,
        *,
        parent: str,
        common_name: str,
        algorithm: KeyAlgorithm,
        lifetime: timedelta,
        backend: str,
        actor: str,
    ) -> CARecord:
        """Create an issuing CA (pathLen 0) signed by a parent whose key is here."""
        csr = self.create_ca_csr(
            name, common_name=common_name, algorithm=algorithm, backend=backend, actor=actor
        )
        cert = self.sign_ca_csr(csr, parent=parent, lifetime=lifetime, actor=actor)
        return self.import_ca(name, cert, actor=actor)

    def sign_ca_csr(
        self,
        csr: x509.CertificateSigningRequest,
        *,
        parent: str,
        lifetime: timedelta | None = None,
        actor: str,
    ) -> x509.Certificate:
        """Sign a subordinate CA's CSR with a CA whose key is here (the root's machine)."""
        with self._refusals_audited(actor, "ca.sign", parent):
            if not signature_verified(csr):
                raise BadSignature("the CA CSR's signature does not verify")
            profile = self._profile("sub-ca")
            signing = self._signing_ca(parent)
            if signing.record.kind is not CAKind.ROOT:
                raise PolicyViolation("only a root CA signs subordinate CAs here", ca=parent)
            decision = policy.decide(
                csr,
                profile,
                now=self._clock.now(),
                lifetime=lifetime,
                ca_not_after=signing.certificate.not_valid_after_utc,
            )
            cert = self._sign(signing, csr.public_key(), decision)
            self._record_issue(signing, cert, decision, profile, actor, kind="ca")
        return cert

    def issue(
        self,
        csr: KeyRequest,
        *,
        profile: str,
        actor: str,
        ca: str | None = None,
        device_id: str | None = None,
        lifetime: timedelta | None = None,
        within: RecordHook | None = None,
        attestation: KeyAttestation | None = None,
        replaces: CertificateRecord | None = None,
    ) -> Issued:
        """Issue a certificate for a CSR under a profile, record it, then return it.

        ``within`` runs in the transaction that records the certificate (e.g. to consume a
        one-time secret): if it raises, nothing is recorded and nothing is returned.
        ``attestation`` is the verified TPM attestation of the CSR's key; it is recorded with
        the certificate, and a profile that ``require_attestation`` refuses a key without one.
        ``replaces`` is the certificate this one replaces (an ACME order's ``replaces``): if a
        rotation campaign replaces that one, its target CA, profile, key type and rate apply.
        """
        target = device_id or _cn_or_blank(csr)
        with self._refusals_audited(actor, "certificate.issue", target):
            campaign = None
            if replaces is not None:
                with self._store.transaction(readonly=True) as tx:
                    campaign = campaign_renewal(tx, replaces)
            if campaign is not None:
                campaign.pace(self._rates, self._clock)
                campaign.check_key(csr.public_key())
                profile = campaign.campaign.profile or profile
                ca = campaign.campaign.target_ca or ca
                within = _then(within, campaign.replaced, self._clock.now())
            prof = self._profile(profile)
            if prof.identity == "ca":
                raise PolicyViolation("CA certificates are made with `iotpki ca`, not issued")
            signing = self._signing_ca(ca or self.default_issuing_ca())
            # A root signs OCSP responder certificates too: it answers for its issuing CAs.
            if signing.record.kind is not CAKind.ISSUING and prof.identity != "responder":
                raise PolicyViolation("end-entity certificates come from an issuing CA")
            if not signature_verified(csr):
                raise BadSignature("the CSR's signature does not verify")
            self._check_template(prof, signing)
            decision = policy.decide(
                csr,
                prof,
                now=self._clock.now(),
                device_id=device_id,
                lifetime=lifetime,
                ca_not_after=signing.certificate.not_valid_after_utc,
            )
            _check_attestation(prof, csr.public_key(), attestation)
            cert = self._sign(signing, csr.public_key(), decision, lint=prof)
            record = self._record_issue(
                signing,
                cert,
                decision,
                prof,
                actor,
                kind="issued",
                within=within,
                attestation=attestation,
            )
        return Issued(record, cert, (cert, *signing.chain))

    def issue_attestation_key(
        self,
        ak_public_key: CertificatePublicKeyTypes,
        decision: policy.Decision,
        profile: policy.Profile,
        *,
        actor: str,
        ca: str | None = None,
    ) -> Issued:
        """Sign and record a TPM attestation-key certificate whose content ``core.akca`` decided
        after credential activation (there is no CSR: a restricted AK cannot sign one)."""
        with self._refusals_audited(actor, "certificate.issue", decision.subject.rfc4514_string()):
            signing = self._signing_ca(ca or self.default_issuing_ca())
            if signing.record.kind is not CAKind.ISSUING:
                raise PolicyViolation("attestation-key certificates come from an issuing CA")
            cert = self._sign(signing, ak_public_key, decision)
            record = self._record_issue(signing, cert, decision, profile, actor, kind="issued")
        return Issued(record, cert, (cert, *signing.chain))

    def renew(
        self,
        serial: str,
        *,
        actor: str,
        csr: KeyRequest | None = None,
        ca: str | None = None,
        lifetime: timedelta | None = None,
        within: RecordHook | None = None,
        attestation: KeyAttestation | None = None,
    ) -> Issued:
        """A new certificate with the same identity; a CSR brings a new key (rekey).

        ``within`` runs in the transaction that records the new certificate, as for ``issue``.
        Without ``attestation`` the old certificate's attestation carries over when the key
        stays the same; a new key under a profile that requires attestation is refused.
        """
        with self._refusals_audited(actor, "certificate.renew", serial):
            old = self.get(serial, ca=ca)
            if old.status is CertStatus.REVOKED:
                raise Conflict(f"certificate {serial} is revoked and cannot be renewed")
            with self._store.transaction(readonly=True) as tx:
                campaign = campaign_renewal(tx, old)
                running = running_campaigns(tx) if campaign is None else []
            if campaign is None:
                count_renewal(running, self._rates, self._clock)
                prof = self._profile(old.profile)
                signing = self._renewing_ca(old.ca_name)
            else:  # a rotation campaign moves it to its target CA, profile and key type
                campaign.pace(self._rates, self._clock)
                prof = self._profile(campaign.campaign.profile or old.profile)
                target = campaign.campaign.target_ca
                signing = self._signing_ca(target) if target else self._renewing_ca(old.ca_name)
            now = self._clock.now()
            old_cert = old.certificate
            if csr is None:
                decision = policy.decide_renewal(
                    old_cert,
                    prof,
                    now=now,
                    lifetime=lifetime,
                    ca_not_after=signing.certificate.not_valid_after_utc,
                )
                public_key: CertificatePublicKeyTypes = old_cert.public_key()
            else:
                if not signature_verified(csr):
                    raise BadSignature("the CSR's signature does not verify")
                decision = policy.decide(
                    csr,
                    prof,
                    now=now,
                    device_id=old.device_id,
                    lifetime=lifetime,
                    ca_not_after=signing.certificate.not_valid_after_utc,
                )
                if _sans_text(decision.sans) != old.sans or decision.subject != old_cert.subject:
                    raise PolicyViolation(
                        "a renewal must keep the identity: subject and names differ", serial=serial
                    )
                public_key = csr.public_key()
            if campaign is not None:
                campaign.check_key(public_key)
                within = _then(within, campaign.replaced, now)
            if attestation is None:
                attestation = self._carried_attestation(old, public_key)
            _check_attestation(prof, public_key, attestation)
            cert = self._sign(signing, public_key, decision)
            record = self._record_issue(
                signing,
                cert,
                decision,
                prof,
                actor,
                kind="renewed",
                renewed_from=serial,
                within=within,
                attestation=attestation,
            )
        return Issued(record, cert, (cert, *signing.chain))

    def _carried_attestation(
        self, old: CertificateRecord, public_key: CertificatePublicKeyTypes
    ) -> KeyAttestation | None:
        """The old certificate's key attestation, when the renewal keeps that key."""
        previous = self.attestation(old.serial, ca=old.ca_name)
        if previous is None or previous.key_fingerprint != key_fingerprint(public_key):
            return None
        return previous

    def attestation(self, serial: str, *, ca: str | None = None) -> KeyAttestation | None:
        """The TPM attestation recorded for a certificate's key, if any."""
        record = self.get(serial, ca=ca)
        with self._store.transaction(readonly=True) as tx:
            return tx.get_key_attestation(record.ca_name, record.serial)

    def attested(self, records: list[CertificateRecord]) -> set[tuple[str, str]]:
        """The (CA name, serial) pairs among ``records`` whose key was TPM-attested."""
        if not records:
            return set()
        with self._store.transaction(readonly=True) as tx:
            return tx.attested_serials((r.ca_name, r.serial) for r in records)

    def get(self, serial: str, *, ca: str | None = None) -> CertificateRecord:
        """A certificate by serial (hex), optionally within one CA."""
        with self._store.transaction(readonly=True) as tx:
            return one_certificate(tx, ca, serial)

    def search(self, query: CertificateQuery) -> list[CertificateRecord]:
        """Certificates matching the query, newest first."""
        with self._store.transaction(readonly=True) as tx:
            return tx.list_certificates(query, self._clock.now())

    def _sign(
        self,
        signing: SigningCA,
        public_key: CertificatePublicKeyTypes,
        decision: policy.Decision,
        *,
        lint: policy.Profile | None = None,
    ) -> x509.Certificate:
        """Build the certificate once; lint it under ``lint``'s rules; only then sign it."""
        if is_blocklisted(public_key, self._config.key_blocklist):
            raise KeyRejected(
                "this key is on the weak-key blocklist", key=key_fingerprint(public_key)
            )
        builder = tbs_builder(signing, public_key, decision, self._config)
        if lint is not None:
            self._pre_issuance_lint(lint, signing, builder)
        return builder.sign(signing.signer, signature_hash(signing.signer))

    def _record_issue(
        self,
        signing: SigningCA,
        cert: x509.Certificate,
        decision: policy.Decision,
        profile: policy.Profile,
        actor: str,
        *,
        kind: str,
        renewed_from: str | None = None,
        within: RecordHook | None = None,
        attestation: KeyAttestation | None = None,
    ) -> CertificateRecord:
        public_key = cert.public_key()
        fingerprint = key_fingerprint(public_key)
        now = self._clock.now()
        record = CertificateRecord(
            serial=serial_hex(cert.serial_number),
            ca_name=signing.record.name,
            profile=profile.name,
            device_id=decision.device_id,
            subject=cert.subject.rfc4514_string(),
            sans=_sans_text(decision.sans),
            not_before=decision.not_before,
            not_after=decision.not_after,
            key_fingerprint=fingerprint,
            key_algorithm=str(algorithm_of(public_key) or "other"),
            der=cert.public_bytes(DER),
            issued_at=now,
            crl_partition=certificate_partition(cert),
        )
        with self._store.transaction() as tx:
            _check_key_reuse(tx, fingerprint, decision.device_id, record.subject)
            if decision.device_id is not None:
                _ensure_device(tx, decision.device_id, now)
            tx.add_certificate(record)
            if attestation is not None:
                tx.add_key_attestation(
                    replace(attestation, ca_name=record.ca_name, serial=record.serial)
                )
            if within is not None:
                within(tx, record)
            data: dict[str, object] = {
                "ca": record.ca_name,
                "profile": record.profile,
                "device": record.device_id,
                "subject": record.subject,
                "not_after": record.not_after.isoformat(),
                "key": fingerprint,
            }
            if attestation is not None:
                data["attested"] = attestation.method
            if renewed_from:
                data["renewed_from"] = renewed_from
            tx.append_audit(now, actor, f"certificate.{kind}", record.serial, data)
        self._emit(f"certificate.{kind}", actor, data)
        return record


def _sans_text(sans: tuple[x509.GeneralName, ...] | list[x509.GeneralName]) -> tuple[str, ...]:
    prefixes = {
        x509.DNSName: "dns",
        x509.IPAddress: "ip",
        x509.UniformResourceIdentifier: "uri",
        x509.RFC822Name: "email",
    }
    return tuple(f"{prefixes.get(type(n), 'other')}:{n.value}" for n in sans)


def _cn_or_blank(csr: KeyRequest) -> str:
    values = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else ""


def _check_key_reuse(
    tx: StoreTransaction, fingerprint: str, device_id: str | None, subject: str
) -> None:
    if tx.is_key_blocked(fingerprint):
        raise KeyRejected("this key was revoked for key compromise", key=fingerprint)
    for other_serial, other_device, other_subject in tx.key_holders(fingerprint):
        same_owner = other_device == device_id if device_id else other_subject == subject
        if not same_owner:
            raise KeyRejected(
                "this public key is already certified for another identity",
                key=fingerprint,
                other_serial=other_serial,
            )


def _check_attestation(
    profile: policy.Profile,
    public_key: CertificatePublicKeyTypes,
    attestation: KeyAttestation | None,
) -> None:
    """The attestation, if any, is of this very key; a profile may demand one (issue 9)."""
    if attestation is not None and attestation.key_fingerprint != key_fingerprint(public_key):
        raise AttestationRejected(
            "the certificate's key is not the key the TPM attested", check="csr_key"
        )
    if attestation is None and profile.require_attestation:
        raise PolicyViolation(
            f"profile {profile.name} requires a TPM-attested key (ACME device-attest-01)",
            profile=profile.name,
        )


def _ensure_device(tx: StoreTransaction, device_id: str, now: datetime) -> None:
    status = tx.device_status(device_id)
    if status is None:
        tx.add_device(DeviceRecord(device_id=device_id, created_at=now))
    elif status != "active":
        raise PolicyViolation(f"device {device_id} is {status}", device_id=device_id)


def _then(
    within: RecordHook | None,
    replaced: Callable[[StoreTransaction, str, datetime], None],
    at: datetime,
) -> RecordHook:
    """``within``, then the campaign's record of the replacement, in the same transaction."""

    def hook(tx: StoreTransaction, record: CertificateRecord) -> None:
        if within is not None:
            within(tx, record)
        replaced(tx, record.serial, at)

    return hook
