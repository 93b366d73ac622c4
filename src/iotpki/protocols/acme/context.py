"""What every ACME handler is given: configuration, the store, the authority and the helpers
that live as long as the serving process (validation queue, key and chain caches) or are shared
by every replica through the store (nonces, rate limits).
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import ParamSpec, TypeVar

from cryptography import x509
from jwcrypto import jwk as jose_jwk

from iotpki.core.acme_ports import AcmeStore
from iotpki.core.authority import Authority
from iotpki.core.ports.shared import RateCounters
from iotpki.core.ratelimit import SharedWindow
from iotpki.protocols.acme.challenges import ValidationSettings, Validator
from iotpki.protocols.acme.nonces import NonceTable
from iotpki.protocols.acme.validation import ValidationQueue
from iotpki.protocols.http import blocking

__all__ = ["AcmeConfig", "AcmeContext", "new_id"]

_P = ParamSpec("_P")
_T = TypeVar("_T")
_CHAIN_CACHE = timedelta(seconds=10)


def new_id() -> str:
    """A random resource id: 96 bits, base64url."""
    return secrets.token_urlsafe(12)


@dataclass(frozen=True, slots=True)
class AcmeConfig:
    """ACME behaviour taken from the settings."""

    eab_required: bool = False
    terms_of_service: str | None = None
    website: str | None = None
    default_profile: str = "server"
    base_url: str | None = None
    order_lifetime: timedelta = timedelta(days=1)
    authorization_lifetime: timedelta = timedelta(days=1)
    orders_per_account_per_hour: int = 300
    orders_per_identifier_per_hour: int = 100
    validation: ValidationSettings = field(default_factory=ValidationSettings)
    retry_delays: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)
    validation_deadline: float = 60.0
    validation_wait: float = 1.0
    ari_retry_after: int = 6 * 3600


class AcmeContext:
    """The long-lived state of one ACME endpoint."""

    def __init__(
        self,
        authority: Authority,
        store: AcmeStore,
        config: AcmeConfig,
        *,
        profiles: Collection[str],
        validator: Validator,
        nonces: NonceTable,
        counters: RateCounters,
        queue: ValidationQueue | None = None,
        attestation_roots: Callable[[], Sequence[x509.Certificate]] | None = None,
    ) -> None:
        self.authority = authority
        self.store = store
        self.config = config
        self.profiles = frozenset(profiles)
        self.validator = validator
        self.queue = queue or ValidationQueue(
            retry_delays=config.retry_delays, deadline=config.validation_deadline
        )
        self.nonces = nonces
        hour, clock = timedelta(hours=1), authority.clock
        self.account_orders = SharedWindow(
            counters, "acme-account", config.orders_per_account_per_hour, hour, clock
        )
        self.identifier_orders = SharedWindow(
            counters, "acme-identifier", config.orders_per_identifier_per_hour, hour, clock
        )
        self._keys: dict[str, tuple[str, jose_jwk.JWK]] = {}
        self._chains: dict[str, tuple[datetime, list[bytes]]] = {}
        self._lock = threading.Lock()
        self.resumed = False
        # device-attest-01 (draft-ietf-acme-device-attest): the trusted roots, read per use.
        self.attestation_roots: Callable[[], Sequence[x509.Certificate]] = (
            attestation_roots or tuple
        )

    def now(self) -> datetime:
        """The authority's clock."""
        return self.authority.clock.now()

    async def run(self, work: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Run store work and signing off the event loop, as every adapter does: a write
        waiting on the database lock (SQLite's busy timeout) must not freeze the listener."""
        return await blocking(work, *args, **kwargs)

    def chains(self, ca_name: str, build: Callable[[str], list[bytes]]) -> list[bytes]:
        """The PEM chains above a CA's certificates (default first, then alternates), built
        with ``build`` and kept a few seconds: CA changes show within that time."""
        now = self.now()
        with self._lock:
            cached = self._chains.get(ca_name)
        if cached is not None and cached[0] > now:
            return cached[1]
        chains = build(ca_name)
        with self._lock:
            self._chains[ca_name] = (now + _CHAIN_CACHE, chains)
        return chains

    def account_key(self, account_id: str, jwk_json: str) -> jose_jwk.JWK:
        """The parsed key of an account, cached while the stored JWK is unchanged."""
        with self._lock:
            cached = self._keys.get(account_id)
        if cached is not None and cached[0] == jwk_json:
            return cached[1]
        key = jose_jwk.JWK.from_json(jwk_json)
        with self._lock:
            if len(self._keys) > 50_000:
                self._keys.clear()
            self._keys[account_id] = (jwk_json, key)
        return key
