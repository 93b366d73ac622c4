"""Typed settings: ``<home>/iotpki.toml`` overridden by ``IOTPKI_*`` environment variables.

Read only at the edges (CLI, server, agent) and passed inward as one object.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from iotpki.core.policy import DEFAULT_PROFILES, Profile, profile_from_mapping
from iotpki.errors import ConfigError

__all__ = [
    "CONFIG_FILE",
    "AcmeSettings",
    "AttestationSettings",
    "ExpiryThresholds",
    "MonitoringSettings",
    "MqttSettings",
    "RevocationPeriodSettings",
    "RevocationSettings",
    "Settings",
    "default_home",
    "load_settings",
]

CONFIG_FILE = "iotpki.toml"
_ENV_PREFIX = "IOTPKI_"


def default_home() -> Path:
    """``$IOTPKI_HOME`` or ``~/.iotpki``."""
    return Path(os.environ.get("IOTPKI_HOME") or Path.home() / ".iotpki")


class RevocationPeriodSettings(BaseModel):
    """CRL and OCSP periods of one CA (durations such as "24h", "30m"); unset: the defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    crl_validity: str | None = None
    crl_interval: str | None = None
    delta_crl_validity: str | None = None
    delta_crl_interval: str | None = None
    crl_max_age: str | None = None
    ocsp_validity: str | None = None
    ocsp_max_age: str | None = None


class RevocationSettings(RevocationPeriodSettings):
    """``[revocation]``: CRL and OCSP publication, with ``[revocation.cas.<name>]`` overrides."""

    revocation_delay: str = "5s"
    full_crl_delay: str = "60s"
    publish_command: str | None = None
    ocsp_presign_limit: int = Field(default=100_000, ge=0)
    ocsp_max_certs: int = Field(default=16, ge=1, le=256)
    ocsp_max_nonce: int = Field(default=32, ge=1, le=128)
    # CRL partitions (``core.partitions``): new certificates name one; 0 days switches them off.
    partition_window_days: int = Field(default=7, ge=0, le=3650)
    partition_buckets: int = Field(default=4, ge=1, le=4096)
    partition_delay: str = "1s"  # a revocation reaches its partition's CRL after this
    partition_max_bytes: int = Field(default=5_000_000, ge=10_000)  # warn past this size
    cas: dict[str, RevocationPeriodSettings] = Field(default_factory=dict)


class AcmeSettings(BaseModel):
    """The ACME server (RFC 8555): account policy, validation targets and rate limits.

    ``http01_port``, ``tlsalpn01_port`` and ``resolve_override`` exist for test setups (as in
    pebble); production keeps the RFC ports and real name resolution.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    eab_required: bool = False
    terms_of_service: str | None = None
    website: str | None = None
    default_profile: str = "server"
    base_url: str | None = None
    order_lifetime: str = "1d"
    authorization_lifetime: str = "1d"
    orders_per_account_per_hour: int = Field(default=300, ge=0)
    orders_per_identifier_per_hour: int = Field(default=100, ge=0)
    http01_port: int = Field(default=80, ge=1, le=65535)
    tlsalpn01_port: int = Field(default=443, ge=1, le=65535)
    dns_resolvers: tuple[str, ...] = ()
    resolve_override: tuple[str, ...] = ()
    validation_timeout: float = Field(default=10.0, gt=0, le=120)
    validation_retry_delays: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)
    validation_deadline: float = Field(default=60.0, gt=0, le=3600)
    # how long a challenge response waits for its validation before answering "processing"
    validation_wait: float = Field(default=1.0, ge=0, le=10)
    ari_retry_after: int = Field(default=21600, ge=60)


class AttestationSettings(BaseModel):
    """``[attestation]``: TPM key attestation (ACME device-attest-01) and the AK CA.

    ``roots`` are PEM bundles of TPM-manufacturer / attestation-key CA roots; the AK CA's own
    issuing CA is trusted as well once an EK manufacturer root is registered
    (``iotpki akca trust-ek-root``). device-attest-01 is offered when any root is trusted.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    roots: tuple[Path, ...] = ()
    akca_ca: str | None = None  # the CA that certifies attestation keys; unset: default CA
    ak_lifetime: str = "365d"
    activation_validity: str = "10m"
    akca_requests_per_minute: int = Field(default=60, ge=1)  # per client address


class ExpiryThresholds(BaseModel):
    """Days before expiry at which a certificate's finding turns medium, then high."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    warning_days: int = Field(default=30, ge=1, le=3652)
    critical_days: int = Field(default=7, ge=0, le=3652)


class MonitoringSettings(BaseModel):
    """``[monitoring]``: expiry thresholds, anomaly windows, webhooks and the dashboard."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scan_interval: float = Field(default=300.0, ge=1.0)
    expiry: ExpiryThresholds = Field(default_factory=ExpiryThresholds)
    expiry_profiles: dict[str, ExpiryThresholds] = Field(default_factory=dict)
    ca_expiry: ExpiryThresholds = Field(
        default_factory=lambda: ExpiryThresholds(warning_days=90, critical_days=30)
    )
    expired_lookback_days: int = Field(default=30, ge=0, le=3652)
    max_age_days: dict[str, int] = Field(default_factory=dict)  # per profile; unset: no check
    ca_max_age_days: int | None = Field(default=None, ge=1)
    usage_window_minutes: int = Field(default=60, ge=1, le=10080)
    usage_retention_days: int = Field(default=30, ge=1)
    rate_window_minutes: int = Field(default=10, ge=1, le=1440)
    renewal_storm_threshold: int = Field(default=500, ge=1)
    enrollment_failure_threshold: int = Field(default=50, ge=1)
    ingest_max_skew_seconds: int = Field(default=300, ge=10, le=86400)
    ingest_max_events: int = Field(default=1000, ge=1, le=100_000)
    webhooks: tuple[str, ...] = ()
    webhook_secret_file: Path | None = None  # unset: generated in <home>/secrets/webhook
    webhook_max_attempts: int = Field(default=8, ge=1, le=50)
    session_hours: float = Field(default=8.0, gt=0, le=168)


class MqttSettings(BaseModel):
    """``[mqtt]``: provisioning over an MQTT broker (``iotpki mqtt-provisioner``, and inside
    ``iotpki serve`` when ``broker_url`` is set)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    broker_url: str | None = None  # mqtts://host[:port]
    # The directory of `iotpki broker config`: provisioner.pem, provisioner.key and ca.pem.
    client_dir: Path | None = None
    client_id: str = "iotpki-provisioner"
    prefix: str = "iotpki/"
    requests_per_minute: int = Field(default=30, ge=0)  # per device identity and client ID
    threads: int = Field(default=4, ge=1, le=64)
    announce_interval: float = Field(default=30.0, ge=1.0)


class Settings(BaseModel):
    """Everything configurable about one installation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    home: Path
    database_url: str | None = None
    host: str = "127.0.0.1"
    https_port: int = Field(default=8443, ge=0, le=65535)
    http_port: int = Field(default=8080, ge=0, le=65535)
    public_base_url: str | None = None
    server_names: tuple[str, ...] = ("localhost", "127.0.0.1")
    organization: str | None = None
    default_ca: str | None = None
    key_backend: Literal["file", "pkcs11"] = "file"
    passphrase: str | None = None
    passphrase_file: Path | None = None
    pkcs11_module: str | None = None
    pkcs11_token: str | None = None
    pkcs11_pin: str | None = None
    pkcs11_pin_file: Path | None = None
    lint_background: bool = True
    profiles: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # TLS-terminating reverse proxies (addresses or networks) whose client-certificate header
    # is believed, and that header's name (nginx: $ssl_client_escaped_cert).
    trusted_proxies: tuple[str, ...] = ()
    client_cert_header: str = "x-ssl-client-cert"
    est_retry_after: int = Field(default=60, ge=1, le=86400)
    revocation: RevocationSettings = Field(default_factory=RevocationSettings)
    acme: AcmeSettings = Field(default_factory=AcmeSettings)
    attestation: AttestationSettings = Field(default_factory=AttestationSettings)
    monitoring: MonitoringSettings = Field(default_factory=MonitoringSettings)
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    # openssl-blacklist files of weak RSA moduli (e.g. Debian CVE-2008-0166), refused at issuance
    key_blocklists: tuple[Path, ...] = ()
    # Networks that ACME validation and webhook deliveries may reach although they are
    # internal (loopback, private, link-local...; see iotpki.net.egress), e.g. ["10.20.0.0/16"].
    egress_allow: tuple[str, ...] = ()

    @field_validator("egress_allow")
    @classmethod
    def _egress_networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            ipaddress.ip_network(entry, strict=False)  # ValueError: not a network
        return value

    @property
    def effective_database_url(self) -> str:
        """The database URL, defaulting to SQLite in the home."""
        return self.database_url or f"sqlite:///{self.home / 'iotpki.db'}"

    @property
    def effective_public_base_url(self) -> str:
        """Base URL placed in certificates for OCSP, CRL and CA-issuer links."""
        return self.public_base_url or f"http://{self.host}:{self.http_port}"

    def resolved_profiles(self) -> dict[str, Profile]:
        """Built-in profiles with the configured overrides and additions applied."""
        profiles = dict(DEFAULT_PROFILES)
        for name, values in self.profiles.items():
            profiles[name] = profile_from_mapping(name, values)
        return profiles


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for field_name, field in Settings.model_fields.items():
        if field_name in ("home", "profiles", "revocation", "acme"):
            continue
        value = environ.get(_ENV_PREFIX + field_name.upper())
        if value is None:
            continue
        if field.annotation in (tuple[str, ...],):
            overrides[field_name] = tuple(v.strip() for v in value.split(",") if v.strip())
        else:
            overrides[field_name] = value
    return overrides


def load_settings(home: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Settings of the installation at ``home`` (file first, then environment)."""
    environ = os.environ if environ is None else environ
    home = (home or default_home()).expanduser()
    values: dict[str, Any] = {}
    path = home / CONFIG_FILE
    if path.is_file():
        try:
            values = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: {exc}") from exc
    values.update(_env_overrides(environ))
    values["home"] = home
    try:
        settings = Settings(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"setting {where}: {first['msg']}") from exc
    settings.resolved_profiles()  # validate profiles early
    return settings
