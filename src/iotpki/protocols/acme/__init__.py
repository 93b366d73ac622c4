"""ACME server (RFC 8555) with external account binding (section 7.3.4), IP identifiers
(RFC 8738), tls-alpn-01 (RFC 8737), renewal information (RFC 9773) and device serials as
``permanent-identifier``; issuance and revocation go through the authority.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from cryptography import x509

from iotpki.core.acme_ports import AcmeStore
from iotpki.core.authority import Authority
from iotpki.core.policy import parse_duration
from iotpki.core.ports.shared import SharedState
from iotpki.protocols.acme.challenges import NetworkValidator, ValidationSettings, Validator
from iotpki.protocols.acme.context import AcmeConfig, AcmeContext
from iotpki.protocols.acme.nonces import NONCE_SECRET, NonceTable
from iotpki.protocols.acme.routes import acme_routes
from iotpki.protocols.acme.validation import ValidationQueue
from iotpki.services.attestation import AttestationTrust, EkRoots
from iotpki.settings import AcmeSettings, Settings

__all__ = [
    "NONCE_SECRET",
    "AcmeConfig",
    "AcmeContext",
    "NetworkValidator",
    "ValidationQueue",
    "ValidationSettings",
    "acme_routes",
    "build_context",
    "config_from_settings",
]


def config_from_settings(settings: AcmeSettings, egress_allow: tuple[str, ...] = ()) -> AcmeConfig:
    """The ACME configuration of an installation's settings; validation reaches internal
    networks only as far as ``egress_allow`` names them."""
    return AcmeConfig(
        eab_required=settings.eab_required,
        terms_of_service=settings.terms_of_service,
        website=settings.website,
        default_profile=settings.default_profile,
        base_url=settings.base_url,
        order_lifetime=parse_duration(settings.order_lifetime),
        authorization_lifetime=parse_duration(settings.authorization_lifetime),
        orders_per_account_per_hour=settings.orders_per_account_per_hour,
        orders_per_identifier_per_hour=settings.orders_per_identifier_per_hour,
        validation=ValidationSettings.from_text(
            http01_port=settings.http01_port,
            tlsalpn01_port=settings.tlsalpn01_port,
            dns_resolvers=settings.dns_resolvers,
            resolve_override=settings.resolve_override,
            timeout=settings.validation_timeout,
            egress_allow=egress_allow,
        ),
        retry_delays=settings.validation_retry_delays,
        validation_deadline=settings.validation_deadline,
        validation_wait=settings.validation_wait,
        ari_retry_after=settings.ari_retry_after,
    )


def build_context(
    authority: Authority,
    store: AcmeStore,
    settings: Settings,
    shared: SharedState,
    nonce_key: bytes,
    *,
    validator: Validator | None = None,
    queue: ValidationQueue | None = None,
    attestation_roots: Callable[[], Sequence[x509.Certificate]] | None = None,
) -> AcmeContext:
    """The ACME context of an installation; tests inject the validator or a manual queue.

    Nonces and rate limits are shared with the other replicas through ``shared`` (the store);
    ``nonce_key`` is the installation secret that authenticates nonces.

    device-attest-01 trusts ``attestation_roots``, by default the installation's
    (:class:`iotpki.services.attestation.AttestationTrust`).
    """
    config = config_from_settings(settings.acme, settings.egress_allow)
    return AcmeContext(
        authority,
        store,
        config,
        nonces=NonceTable(nonce_key, shared, authority.clock),
        counters=shared,
        profiles=settings.resolved_profiles(),
        validator=validator or NetworkValidator(config.validation),
        queue=queue,
        attestation_roots=attestation_roots
        or AttestationTrust(settings, authority, EkRoots(shared, settings.home)).roots,
    )
