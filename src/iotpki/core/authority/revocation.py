"""Revoking certificates, and what CRLs need from the authority: the signing key, the URLs."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from iotpki.core.authority.refusals import RefusalAudit
from iotpki.core.authority.urls import revocation_extensions
from iotpki.core.encoding import parse_serial
from iotpki.core.models import CARecord, CAStatus, CertificateRecord, CertStatus, RevocationReason
from iotpki.core.ports import StoreTransaction
from iotpki.errors import ConfigError, Conflict, NotFound


class Revocation(RefusalAudit):
    """Revoke certificates; lend a CA's key to CRL signing."""

    def revoke(
        self,
        serial: str,
        *,
        reason: RevocationReason,
        actor: str,
        ca: str | None = None,
        invalidity_date: datetime | None = None,
    ) -> CertificateRecord:
        """Mark a certificate revoked (RFC 5280 reason); keyCompromise also blocks its key."""
        with self._refusals_audited(actor, "certificate.revoke", serial):
            now = self._clock.now()
            with self._store.transaction() as tx:
                record = one_certificate(tx, ca, serial)
                if record.status is CertStatus.REVOKED:
                    raise Conflict(f"certificate {serial} is already revoked", serial=serial)
                tx.mark_revoked(record.ca_name, record.serial, now, reason, invalidity_date)
                if reason is RevocationReason.KEY_COMPROMISE:
                    tx.block_key(record.key_fingerprint, f"revoked {record.serial}", now)
                tx.append_audit(
                    now,
                    actor,
                    "certificate.revoked",
                    record.serial,
                    {"ca": record.ca_name, "reason": str(reason), "device": record.device_id},
                )
                revoked = tx.get_certificate(record.ca_name, record.serial)
                assert revoked is not None
                if record.profile == "sub-ca":
                    _revoke_child_ca(tx, record, now, actor)
                    self._forget_cas()
        self._emit(
            "certificate.revoked",
            actor,
            {
                "ca": record.ca_name,
                "profile": record.profile,
                "reason": str(reason),
                "serial": record.serial,
            },
        )
        return revoked

    def crl_signer(self, name: str) -> tuple[CARecord, CertificateIssuerPrivateKeyTypes]:
        """A CA held here and its signing key, for CRLs (``core.publication`` signs them).

        Unlike issuance, a revoked or retired CA still signs CRLs for what it issued.
        """
        record = self.get_ca(name)
        if record.certificate_der is None:
            raise Conflict(f"CA {name!r} has no certificate yet", ca=name)
        if record.key_backend is None or record.key_ref is None:
            raise ConfigError(f"the key of CA {name!r} is not held here (offline CA)", ca=name)
        return record, self._backend(record.key_backend).signer(record.key_ref)

    def revocation_extensions(self, ca_name: str) -> list[x509.ExtensionType]:
        """AIA (OCSP, caIssuers), CRL distribution point and freshest (delta) CRL of this CA."""
        return revocation_extensions(self._config.public_base_url, ca_name)


def one_certificate(tx: StoreTransaction, ca: str | None, serial: str) -> CertificateRecord:
    """The certificate of this serial (hex), optionally within one CA; NotFound otherwise."""
    serial = parse_serial(serial)
    record = tx.get_certificate(ca, serial)
    if record is None:
        raise NotFound(f"no certificate with serial {serial}", serial=serial)
    return record


def _revoke_child_ca(
    tx: StoreTransaction, record: CertificateRecord, now: datetime, actor: str
) -> None:
    """Revoking a subordinate CA's certificate stops that CA from issuing."""
    for ca in tx.list_cas():
        if ca.certificate_der is not None and ca.certificate_der == record.der:
            tx.put_ca(replace(ca, status=CAStatus.REVOKED))
            tx.append_audit(now, actor, "ca.revoked", ca.name, {"serial": record.serial})
