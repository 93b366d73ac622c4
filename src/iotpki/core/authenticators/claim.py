"""A production batch's claim certificate: one certificate shared by every device of a batch.

The claim certificate does not name the device (the request does); the claim CA the operator
registered says which device IDs its batches may ask for (``device_pattern``), whether only
devices in the registry may (``registered``), and the profile they get. A claim enrolls a
device once: a device that already holds a valid certificate renews with it, so a batch-mate
cannot take over an enrolled device's identity. A claim certificate issued here must be valid
in the store (revoking it stops the batch); the claim CA itself can be revoked as a whole.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from iotpki.core.authenticators.bootstrap import registered_issuer
from iotpki.core.authenticators.model import Authorization, ClaimCertificate, Context
from iotpki.core.authenticators.secret import check_active
from iotpki.core.authority import serial_hex
from iotpki.core.device_id import check_device_id
from iotpki.core.models import (
    BootstrapKind,
    CertificateQuery,
    CertStatus,
    EnrollMethod,
)
from iotpki.core.ports import Clock, Store, StoreTransaction
from iotpki.core.x509util import issued_by
from iotpki.errors import AuthError, Conflict, Forbidden, IotpkiError

__all__ = ["ClaimAuthenticator"]


class ClaimAuthenticator:
    """A claim certificate from a registered, active claim CA, for a device ID its rule allows."""

    method = EnrollMethod.CLAIM

    def __init__(self, store: Store, clock: Clock, is_claim_profile: Callable[[str], bool]) -> None:
        """``is_claim_profile`` says whether a profile issues claim certificates."""
        self._store = store
        self._clock = clock
        self._is_claim_profile = is_claim_profile

    def claimed(self, credentials: ClaimCertificate) -> str:
        """The device ID the request asks for."""
        return credentials.device_id

    def authorize(self, credentials: ClaimCertificate, context: Context) -> Authorization:
        """The requested device, if the claim certificate's CA allows it a first certificate."""
        cert, device_id = credentials.certificate, credentials.device_id
        try:
            check_device_id(device_id)
        except IotpkiError as exc:
            raise AuthError(f"the request names no usable device ID: {exc.message}") from exc
        now = self._clock.now()
        with self._store.transaction(readonly=True) as tx:
            issuer = registered_issuer(tx, cert, BootstrapKind.CLAIM, now)
            self._check_issued_here(tx, cert)
            pattern = issuer.device_pattern or ".+"
            if re.fullmatch(pattern, device_id) is None:
                raise Forbidden(
                    f"claim CA {issuer.name} does not enroll device ID {device_id!r}",
                    device_id=device_id,
                )
            if issuer.enroll_policy == "registered" and tx.get_device(device_id) is None:
                raise Forbidden(f"device {device_id} is not registered", device_id=device_id)
            check_active(tx, device_id)
            held = tx.list_certificates(
                CertificateQuery(status=CertStatus.VALID, device_id=device_id, limit=1), now
            )
            if any(record.not_after > now for record in held):
                raise Conflict(
                    f"device {device_id} already holds a valid certificate: renew with it",
                    device_id=device_id,
                )
        return Authorization(
            device_id=device_id,
            method=self.method,
            protocol=context.protocol,
            profile=issuer.profile,
            approval=issuer.approval,
            bootstrap_ca=issuer.name,
        )

    def _check_issued_here(self, tx: StoreTransaction, cert: x509.Certificate) -> None:
        """Refuse a certificate issued here unless it is a valid claim certificate as stored."""
        for ca in tx.list_cas():
            if ca.certificate_der is None or not issued_by(cert, ca.certificate):
                continue
            record = tx.get_certificate(ca.name, serial_hex(cert.serial_number))
            if record is None or record.der != cert.public_bytes(Encoding.DER):
                raise AuthError("the claim certificate is not one this installation issued")
            if not self._is_claim_profile(record.profile):
                raise Forbidden(f"certificate {record.serial} is not a claim certificate")
            if record.status is CertStatus.REVOKED:
                raise Forbidden(
                    f"claim certificate {record.serial} is revoked", serial=record.serial
                )
            return
