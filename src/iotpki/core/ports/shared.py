"""What replicas share through the store beyond certificates: keys, secrets, spent tokens,
rate counters and OCSP responders. Each call is its own short write, outside any transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

__all__ = [
    "KeyVault",
    "OnceRegistry",
    "RateCounters",
    "ResponderStore",
    "SharedState",
    "TrustedRootStore",
]


class KeyVault(Protocol):
    """Encrypted private keys, by reference, for every replica to load."""

    def wrapped_key(self, key_ref: str) -> bytes | None:
        """The encrypted PKCS#8 PEM of a key, if it is kept."""
        ...

    def put_wrapped_key(self, key_ref: str, pem: bytes) -> None:
        """Keep an encrypted key (a reference already kept is left as it is)."""
        ...

    def sealed_secret(self, name: str) -> tuple[bytes, bytes] | None:
        """The salt and sealed bytes of an installation secret, if one was made."""
        ...

    def put_sealed_secret(self, name: str, salt: bytes, sealed: bytes) -> tuple[bytes, bytes]:
        """Keep a sealed secret unless one exists; the one kept (the first writer wins)."""
        ...


class OnceRegistry(Protocol):
    """Tokens that may be presented once (or once per value) until they expire."""

    def spend(
        self, scope: str, token: str, value: str, now: datetime, expires_at: datetime
    ) -> str | None:
        """Record ``token`` as spent with ``value``; None if new, else the value it was spent with.

        Records expired by ``now`` are treated as absent.
        """
        ...

    def prune_spent(self, before: datetime) -> int:
        """Forget records that expired before ``before``; how many were dropped."""
        ...


class RateCounters(Protocol):
    """Fixed-window event counters shared by every replica."""

    def add_events(
        self, scope: str, keys: list[str], window_start: datetime, previous_start: datetime
    ) -> list[tuple[int, int]]:
        """Count one event per key; per key, the counts of this window and the previous one."""
        ...

    def take_back_events(self, scope: str, keys: list[str], window_start: datetime) -> None:
        """Uncount the events :meth:`add_events` just counted (the request was refused)."""
        ...

    def prune_counters(self, before: datetime) -> int:
        """Drop windows that started before ``before``."""
        ...


class ResponderStore(Protocol):
    """The delegated OCSP responder certificate of each CA, shared until it is renewed."""

    def ocsp_responder(self, ca_name: str) -> tuple[bytes, str] | None:
        """The certificate (DER) and key reference of the CA's responder, if one is kept."""
        ...

    def put_ocsp_responder(
        self,
        ca_name: str,
        cert_der: bytes,
        key_ref: str,
        not_after: datetime,
        *,
        replace: bytes | None,
    ) -> bool:
        """Keep a new responder if the kept one is still ``replace`` (None: none kept yet)."""
        ...


class TrustedRootStore(Protocol):
    """CA certificates registered as trust anchors of a kind (e.g. TPM EK manufacturer roots)."""

    def trusted_roots(self, kind: str) -> list[bytes]:
        """The DER certificates registered for ``kind``, in fingerprint order."""
        ...

    def add_trusted_root(self, kind: str, fingerprint: str, der: bytes, now: datetime) -> None:
        """Register a certificate (registering it again changes nothing)."""
        ...

    def remove_trusted_root(self, kind: str, fingerprint: str) -> bool:
        """Withdraw a registered certificate; False when there was none."""
        ...


class SharedState(OnceRegistry, RateCounters, TrustedRootStore, Protocol):
    """What a protocol endpoint shares with the other replicas: replays, rates and anchors."""
