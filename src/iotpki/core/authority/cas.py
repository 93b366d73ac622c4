"""The CA lifecycle: create, import, cross-certify, retire; and the cache of signing CAs."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.x509.oid import NameOID

from iotpki.core import policy
from iotpki.core.authority._base import CA_CACHE_SECONDS, DER, SigningCA, serial_hex
from iotpki.core.authority.revocation import Revocation
from iotpki.core.authority.urls import revocation_extensions
from iotpki.core.keytypes import key_fingerprint, signature_hash
from iotpki.core.models import CAKind, CARecord, CAStatus, KeyAlgorithm
from iotpki.core.x509util import issued_by
from iotpki.errors import ConfigError, Conflict, PolicyViolation


class CertificateAuthorities(Revocation):
    """Create, import, cross-certify and retire CAs; load the CAs that sign here."""

    def default_issuing_ca(self) -> str:
        """The CA used when a request names none (looked up at most every few seconds)."""
        if self._config.default_ca:
            return self._config.default_ca
        now = time.monotonic()
        cached = self._default_ca
        if cached is not None and now - cached[1] < CA_CACHE_SECONDS:
            return cached[0]
        active = [
            ca
            for ca in self.list_cas()
            if ca.kind is CAKind.ISSUING and ca.status is CAStatus.ACTIVE
        ]
        if not active:
            raise ConfigError("no active issuing CA: run `iotpki init` first")
        self._default_ca = (active[0].name, now)
        return active[0].name

    def _subject_for_ca(self, common_name: str) -> x509.Name:
        attrs = []
        if self._config.organization:
            attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, self._config.organization))
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        return x509.Name(attrs)

    def create_root(
        self,
        name: str,
        *,
        common_name: str,
        algorithm: KeyAlgorithm,
        lifetime: timedelta,
        backend: str,
        actor: str,
    ) -> CARecord:
        """Create a self-signed root CA (pathLen 1) with a new key."""
        self._require_new_ca(name)
        keys = self._backend(backend)
        key_ref = keys.generate(f"ca-{name}", algorithm)
        signer = keys.signer(key_ref)
        subject = self._subject_for_ca(common_name)
        now = self._clock.now()
        ski = x509.SubjectKeyIdentifier.from_public_key(signer.public_key())
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(signer.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=1))
            .not_valid_after(now + lifetime)
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(_ca_key_usage(), critical=True)
            .add_extension(ski, critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
            )
        )
        cert = builder.sign(signer, signature_hash(signer))
        record = CARecord(
            name=name,
            kind=CAKind.ROOT,
            status=CAStatus.ACTIVE,
            parent=None,
            key_backend=backend,
            key_ref=key_ref,
            certificate_der=cert.public_bytes(DER),
            created_at=now,
        )
        with self._store.transaction() as tx:
            tx.put_ca(record)
            tx.append_audit(now, actor, "ca.created", name, _ca_audit(record, cert))
        return record

    def _require_new_ca(self, name: str) -> None:
        if not policy.is_valid_name(name):
            raise PolicyViolation(f"not a valid CA name: {name!r}", ca=name)
        with self._store.transaction(readonly=True) as tx:
            if tx.get_ca(name) is not None:
                raise Conflict(f"a CA named {name!r} exists already", ca=name)

    def create_ca_csr(
        self,
        name: str,
        *,
        common_name: str,
        algorithm: KeyAlgorithm,
        backend: str,
        actor: str,
    ) -> x509.CertificateSigningRequest:
        """Create a pending issuing CA: a new key and a CSR for the (offline) parent to sign."""
        self._require_new_ca(name)
        keys = self._backend(backend)
        key_ref = keys.generate(f"ca-{name}", algorithm)
        signer = keys.signer(key_ref)
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(self._subject_for_ca(common_name))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(signer, signature_hash(signer))
        )
        now = self._clock.now()
        record = CARecord(
            name=name,
            kind=CAKind.ISSUING,
            status=CAStatus.PENDING,
            parent=None,
            key_backend=backend,
            key_ref=key_ref,
            certificate_der=None,
            csr_der=csr.public_bytes(DER),
            created_at=now,
        )
        with self._store.transaction() as tx:
            tx.put_ca(record)
            tx.append_audit(now, actor, "ca.csr_created", name, {"algorithm": str(algorithm)})
        return csr

    def import_ca(
        self,
        name: str,
        certificate: x509.Certificate,
        *,
        parent_certificate: x509.Certificate | None = None,
        parent_name: str | None = None,
        actor: str,
    ) -> CARecord:
        """Activate a pending CA with the certificate its parent signed."""
        with self._refusals_audited(actor, "ca.import", name):
            with self._store.transaction(readonly=True) as tx:
                pending = tx.get_ca(name)
                parents = tx.list_cas()
            if pending is None or pending.status is not CAStatus.PENDING:
                raise Conflict(f"no pending CA named {name!r} to import into", ca=name)
            if pending.key_backend is None or pending.key_ref is None:
                raise ConfigError(f"pending CA {name!r} has no key", ca=name)
            own_key = self._backend(pending.key_backend).public_key(pending.key_ref)
            if key_fingerprint(certificate.public_key()) != key_fingerprint(own_key):
                raise PolicyViolation("the certificate is not for this CA's key", ca=name)
            parent = _find_parent(certificate, parents, parent_certificate)
            now = self._clock.now()
            with self._store.transaction() as tx:
                if parent is None:
                    if parent_certificate is None:
                        raise PolicyViolation("the parent CA certificate is needed")
                    parent = CARecord(
                        name=parent_name or "root",
                        kind=CAKind.ROOT,
                        status=CAStatus.ACTIVE,
                        parent=None,
                        key_backend=None,
                        key_ref=None,
                        certificate_der=parent_certificate.public_bytes(DER),
                        created_at=now,
                    )
                    if tx.get_ca(parent.name) is not None:
                        raise Conflict(f"a CA named {parent.name!r} exists already", ca=parent.name)
                    tx.put_ca(parent)
                    tx.append_audit(now, actor, "ca.imported", parent.name, {"offline": True})
                record = replace(
                    pending,
                    kind=CAKind.ISSUING,
                    status=CAStatus.ACTIVE,
                    parent=parent.name,
                    certificate_der=certificate.public_bytes(DER),
                )
                tx.put_ca(record)
                tx.append_audit(now, actor, "ca.activated", name, _ca_audit(record, certificate))
        return record

    def _renewing_ca(self, name: str) -> SigningCA:
        """The CA that renews certificates of ``name``: itself, or once a rollover retired it
        (``core.rollover``), the CA that issues now."""
        try:
            return self._signing_ca(name)
        except Conflict:
            if self.get_ca(name).status is not CAStatus.RETIRED:
                raise
            return self._signing_ca(self.default_issuing_ca())

    def set_ca_status(self, name: str, status: CAStatus, *, actor: str, reason: str) -> CARecord:
        """Retire (or reactivate) a CA; a retired CA issues nothing but still signs its CRLs."""
        record = self.get_ca(name)
        if record.status in (CAStatus.PENDING, CAStatus.REVOKED):
            raise Conflict(f"CA {name!r} is {record.status}", ca=name)
        changed = replace(record, status=status)
        now = self._clock.now()
        with self._store.transaction() as tx:
            tx.put_ca(changed)
            tx.append_audit(now, actor, f"ca.{status}", name, {"reason": reason})
        self._forget_cas()
        self._emit(f"ca.{status}", actor, {"ca": name, "reason": reason})
        return changed

    def cross_certify(
        self,
        subject_ca: str,
        *,
        issuer_ca: str,
        name: str,
        not_after: datetime,
        actor: str,
    ) -> CARecord:
        """Certify ``subject_ca``'s key with ``issuer_ca``'s key (a rollover cross-certificate,
        RFC 4210 section 4.4) and keep it as the keyless CA record ``name``."""
        self._require_new_ca(name)
        subject = self.get_ca(subject_ca).certificate
        issuer_record, issuer_key = self.crl_signer(issuer_ca)
        issuer = issuer_record.certificate
        if issuer_record.status is not CAStatus.ACTIVE:
            raise Conflict(f"CA {issuer_ca!r} is {issuer_record.status}", ca=issuer_ca)
        constraints = subject.extensions.get_extension_for_class(x509.BasicConstraints).value
        now = self._clock.now()
        ski = subject.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject.subject)
            .issuer_name(issuer.subject)
            .public_key(subject.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=1))
            .not_valid_after(
                min(not_after, subject.not_valid_after_utc, issuer.not_valid_after_utc)
            )
            .add_extension(constraints, critical=True)
            .add_extension(_ca_key_usage(), critical=True)
            .add_extension(ski, critical=False)
            .add_extension(_aki(issuer), critical=False)
            .sign(issuer_key, signature_hash(issuer_key))
        )
        record = CARecord(
            name=name,
            kind=CAKind.ROOT,
            status=CAStatus.ACTIVE,
            parent=issuer_ca,
            key_backend=None,  # the key is the subject CA's; this record only carries the cert
            key_ref=None,
            certificate_der=cert.public_bytes(DER),
            created_at=now,
        )
        with self._store.transaction() as tx:
            tx.put_ca(record)
            data = {**_ca_audit(record, cert), "subject_ca": subject_ca, "issuer_ca": issuer_ca}
            tx.append_audit(now, actor, "ca.cross_certified", name, data)
        self._emit("ca.cross_certified", actor, {"ca": name})
        return record

    def _signing_ca(self, name: str) -> SigningCA:
        now = time.monotonic()
        with self._lock:
            cached = self._signing.get(name)
        if cached is not None and now - cached.loaded_at < CA_CACHE_SECONDS:
            return cached
        record = self.get_ca(name)
        if record.status is not CAStatus.ACTIVE:
            raise Conflict(f"CA {name!r} is {record.status}, it does not issue", ca=name)
        if record.key_backend is None or record.key_ref is None:
            raise ConfigError(f"the key of CA {name!r} is not held here (offline CA)", ca=name)
        signer = self._backend(record.key_backend).signer(record.key_ref)
        chain = tuple(self.chain(name)[:-1])
        certificate = record.certificate
        issuer_extensions = (
            _aki(certificate),
            *revocation_extensions(self._config.public_base_url, name),
        )
        signing = SigningCA(record, certificate, signer, now, chain, issuer_extensions)
        with self._lock:
            self._signing[name] = signing
        return signing


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _aki(ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key())  # type: ignore[arg-type]
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _ca_audit(record: CARecord, cert: x509.Certificate) -> dict[str, object]:
    return {
        "kind": str(record.kind),
        "subject": cert.subject.rfc4514_string(),
        "serial": serial_hex(cert.serial_number),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "key_backend": record.key_backend,
    }


def _find_parent(
    cert: x509.Certificate, cas: list[CARecord], parent_certificate: x509.Certificate | None
) -> CARecord | None:
    """The known CA that signed ``cert``, or None when the given external parent did."""
    candidates = [(ca, ca.certificate) for ca in cas if ca.certificate_der is not None]
    for record, candidate in candidates:
        if issued_by(cert, candidate):
            return record
    if parent_certificate is not None and issued_by(cert, parent_certificate):
        return None
    raise PolicyViolation(
        "the certificate was not signed by a known CA; pass its parent certificate"
    )
