"""IDevIDs (IEEE 802.1AR) from a bootstrap CA the operator registered.

The IDevID's subject ``serialNumber`` (else its commonName) names the device; the bootstrap
CA's policy says whether only devices bound to it beforehand (``registered``) or any of its
devices (``any``) may enroll.
"""

from __future__ import annotations

from datetime import datetime

from cryptography import x509
from cryptography.x509.oid import NameOID

from iotpki.core.authenticators.model import (
    Authorization,
    BootstrapCertificate,
    Context,
)
from iotpki.core.authenticators.secret import check_active
from iotpki.core.models import BootstrapCARecord, BootstrapKind, EnrollMethod
from iotpki.core.ports import Clock, Store, StoreTransaction
from iotpki.core.x509util import issued_by
from iotpki.errors import AuthError, Forbidden

__all__ = ["BootstrapAuthenticator", "idevid_identity", "registered_issuer"]


def idevid_identity(cert: x509.Certificate) -> str | None:
    """The device identity an IDevID carries: subject serialNumber, else commonName."""
    for oid in (NameOID.SERIAL_NUMBER, NameOID.COMMON_NAME):
        values = cert.subject.get_attributes_for_oid(oid)
        if values:
            return str(values[0].value)
    return None


# What a refusal calls the CA and the certificate, per kind of bootstrap CA.
_WORDS = {
    BootstrapKind.IDEVID: ("a trusted bootstrap CA", "bootstrap CA", "IDevID"),
    BootstrapKind.CLAIM: ("a registered claim CA", "claim CA", "claim certificate"),
}


def registered_issuer(
    tx: StoreTransaction, cert: x509.Certificate, kind: BootstrapKind, now: datetime
) -> BootstrapCARecord:
    """The active registered CA of ``kind`` that issued ``cert``, which is valid ``now``; a
    refusal (AuthError, Forbidden) otherwise."""
    registered, ca_word, cert_word = _WORDS[kind]
    issuer = next(
        (b for b in tx.list_bootstrap_cas() if b.kind is kind and issued_by(cert, b.certificate)),
        None,
    )
    if issuer is None:
        raise AuthError(f"the client certificate is not from {registered}")
    if issuer.status != "active":
        raise Forbidden(f"{ca_word} {issuer.name} is revoked")
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise AuthError(f"the {cert_word} is expired or not yet valid")
    return issuer


class BootstrapAuthenticator:
    """An IDevID from a registered, active bootstrap CA."""

    method = EnrollMethod.IDEVID

    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    def claimed(self, credentials: BootstrapCertificate) -> str:
        """The device identity the IDevID names."""
        return idevid_identity(credentials.certificate) or ""

    def authorize(self, credentials: BootstrapCertificate, context: Context) -> Authorization:
        """The device an IDevID stands for, if a registered bootstrap CA allows it to enroll."""
        cert = credentials.certificate
        identity = self.claimed(credentials)
        with self._store.transaction(readonly=True) as tx:
            issuer = registered_issuer(tx, cert, BootstrapKind.IDEVID, self._clock.now())
            if not identity:
                raise AuthError("the IDevID names no device (no serialNumber or CN)")
            binding = tx.get_idevid_binding(issuer.name, identity)
            if binding is not None:
                device_id = binding.device_id
            elif issuer.enroll_policy == "any":
                device_id = identity
            else:
                raise Forbidden(f"device {identity} is not registered with {issuer.name}")
            check_active(tx, device_id)
        return Authorization(
            device_id=device_id,
            method=self.method,
            protocol=context.protocol,
            profile=issuer.profile,
            approval=issuer.approval,
            bootstrap_ca=issuer.name,
        )
