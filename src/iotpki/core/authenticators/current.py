"""The device's current certificate from this installation: renewal and rekey.

Valid now, unrevoked, a device certificate, and stored exactly as presented (RFC 7030 section
4.2.2, RFC 8894 section 3.3.1.2). With a CA in the context, only that CA's certificates count.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from iotpki.core.authenticators.model import Authorization, Context, CurrentCertificate
from iotpki.core.authority import serial_hex
from iotpki.core.models import CertificateRecord, CertStatus, EnrollMethod
from iotpki.core.ports import Clock, Store
from iotpki.core.x509util import issued_by
from iotpki.errors import AuthError, Forbidden

__all__ = ["CurrentAuthenticator"]


class CurrentAuthenticator:
    """A valid, unrevoked device certificate this installation issued."""

    method = EnrollMethod.CURRENT

    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    def claimed(self, credentials: CurrentCertificate) -> str:
        """The serial number of the presented certificate."""
        return serial_hex(credentials.certificate.serial_number)

    def stored(self, cert: x509.Certificate, ca: str | None = None) -> CertificateRecord | None:
        """The record of ``cert`` if a CA here (``ca`` only, if named) issued it as presented."""
        with self._store.transaction(readonly=True) as tx:
            issuer = next(
                (
                    record
                    for record in tx.list_cas()
                    if ca in (None, record.name)
                    and record.certificate_der is not None
                    and issued_by(cert, record.certificate)
                ),
                None,
            )
            found = (
                tx.get_certificate(issuer.name, serial_hex(cert.serial_number)) if issuer else None
            )
        if found is None or found.der != cert.public_bytes(Encoding.DER):
            return None
        return found

    def authorize(self, credentials: CurrentCertificate, context: Context) -> Authorization:
        """The device whose current certificate this is, with the record it replaces."""
        serial = self.claimed(credentials)
        record = self.stored(credentials.certificate, context.ca)
        if record is None:
            raise AuthError("the certificate was not issued by this CA")
        if record.status is CertStatus.REVOKED:
            raise Forbidden(f"certificate {serial} is revoked", serial=serial)
        if not record.not_before <= self._clock.now() <= record.not_after:
            raise AuthError(
                f"certificate {serial} is not valid now (expired or not yet valid)", serial=serial
            )
        if record.device_id is None:
            raise Forbidden("the certificate is not a device certificate")
        return Authorization(
            device_id=record.device_id,
            method=self.method,
            protocol=context.protocol,
            profile=record.profile,
            ca=record.ca_name,
            current=record,
        )
