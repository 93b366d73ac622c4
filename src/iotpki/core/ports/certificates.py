"""The store's certificate side: CAs, certificates, revocations, devices, key attestations."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Protocol

from iotpki.core.models import (
    CARecord,
    CertificateQuery,
    CertificateRecord,
    DeviceRecord,
    KeyAttestation,
    RevocationReason,
)

__all__ = ["AttestationTx", "CaTx", "CertificateTx", "DeviceTx", "RevocationTx"]


class CaTx(Protocol):
    """The CA records of the installation."""

    def get_ca(self, name: str) -> CARecord | None:
        """The CA of that name, if any."""
        ...

    def list_cas(self) -> list[CARecord]:
        """Every CA, oldest first."""
        ...

    def put_ca(self, record: CARecord) -> None:
        """Insert a CA or replace the one of the same name."""
        ...


class CertificateTx(Protocol):
    """Issued certificates and the keys they carry."""

    def add_certificate(self, record: CertificateRecord) -> None:
        """Insert a certificate; raises ``Conflict`` if (CA, serial) exists."""
        ...

    def get_certificate(self, ca_name: str | None, serial: str) -> CertificateRecord | None:
        """A certificate by serial, within one CA or across all."""
        ...

    def certificates_with_key(self, fingerprint: str) -> list[CertificateRecord]:
        """Every certificate whose public key has this fingerprint."""
        ...

    def key_holders(self, fingerprint: str) -> list[tuple[str, str | None, str]]:
        """(serial, device ID, subject) of every certificate with this key."""
        ...

    def list_certificates(self, query: CertificateQuery, now: datetime) -> list[CertificateRecord]:
        """Certificates matching the query, newest first."""
        ...

    def is_key_blocked(self, fingerprint: str) -> bool:
        """Whether this key was revoked for key compromise."""
        ...


class RevocationTx(Protocol):
    """Revocations and blocked keys."""

    def mark_revoked(
        self,
        ca_name: str,
        serial: str,
        at: datetime,
        reason: RevocationReason,
        invalidity_date: datetime | None,
    ) -> None:
        """Record a revocation."""
        ...

    def block_key(self, fingerprint: str, reason: str, at: datetime) -> None:
        """Refuse this key from now on."""
        ...


class DeviceTx(Protocol):
    """The device registry."""

    def device_status(self, device_id: str) -> str | None:
        """The registry status of a device, or None when it is not registered."""
        ...

    def get_device(self, device_id: str) -> DeviceRecord | None:
        """A device of the registry."""
        ...

    def add_device(self, record: DeviceRecord) -> None:
        """Insert a device that is not in the registry yet."""
        ...

    def put_device(self, record: DeviceRecord) -> None:
        """Insert or update a device."""
        ...


class AttestationTx(Protocol):
    """TPM attestations of issued certificates' keys."""

    def add_key_attestation(self, record: KeyAttestation) -> None:
        """Record the TPM attestation of an issued certificate's key."""
        ...

    def get_key_attestation(self, ca_name: str, serial: str) -> KeyAttestation | None:
        """The attestation of a certificate's key, if it was attested."""
        ...

    def attested_serials(self, certificates: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of these (CA name, serial) pairs have an attested key."""
        ...
