"""The agent's settings: a TOML file (``agent.toml``) and ``IOTPKI_AGENT_*`` overrides.

Kept free of pydantic and the server's settings so the agent stays small on a device.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from iotpki.core.device_id import is_device_id
from iotpki.errors import ConfigError

__all__ = ["AgentConfig", "load_config"]

_ENV_PREFIX = "IOTPKI_AGENT_"
_KEY_ALGORITHMS = ("p256", "p384", "rsa2048", "rsa3072", "ed25519")


@dataclass(frozen=True)
class AgentConfig:
    """Everything the device agent is told."""

    server: str  # https://host:8443 (EST), or mqtts://broker:8883 (provisioning over MQTT)
    device_id: str
    state_dir: Path
    label: str | None = None
    # first-contact trust (RFC 7030 section 4.1.1): a CA fingerprint or a pre-installed bundle
    ca_fingerprint: str | None = None  # SHA-256 of a CA certificate's DER, hex
    trust_bundle: Path | None = None
    # initial authentication: an IDevID, or a one-time enrollment secret
    idevid_cert: Path | None = None
    idevid_key: Path | None = None
    enrollment_secret: str | None = None
    enrollment_secret_file: Path | None = None
    # over MQTT: a production batch's claim certificate (chain PEM) and key, instead of an IDevID
    claim_cert: Path | None = None
    claim_key: Path | None = None
    mqtt_prefix: str = "iotpki/"
    # the operational key: a 0600 file, a PKCS#11 token, or a TPM 2.0 (tpm2-pytss)
    key_algorithm: str = "p256"
    key_store: str = "file"
    pkcs11_module: str | None = None
    pkcs11_token: str | None = None
    pkcs11_pin: str | None = None
    tpm_tcti: str = "device:/dev/tpmrm0"  # tpm2-tss TCTI, e.g. swtpm:host=127.0.0.1,port=2321
    # rotation: renew over EST (simplereenroll, TLS with the current key) or CMP (a kur signed
    # with the current key: also for keys in a PKCS#11 token or a TPM)
    renew_protocol: str = "est"
    renew_fraction: float = 1 / 3  # renew when this fraction of the lifetime remains
    jitter_fraction: float = 0.1  # renew up to this fraction of the lifetime earlier, at random
    backoff_initial: float = 10.0  # seconds
    backoff_max: float = 3600.0
    check_interval: float = 3600.0  # the daemon looks at least this often
    post_renew_command: str | None = None
    timeout: float = 30.0

    def __post_init__(self) -> None:
        if not self.server.startswith(("https://", "mqtts://")):
            raise ConfigError("server must be an https:// (EST) or mqtts:// (MQTT) URL")
        if not is_device_id(self.device_id):
            raise ConfigError(f"device_id {self.device_id[:64]!r} is not a valid device ID")
        if self.key_algorithm not in _KEY_ALGORITHMS:
            raise ConfigError(f"key_algorithm must be one of {', '.join(_KEY_ALGORITHMS)}")
        if self.renew_protocol not in ("est", "cmp"):
            raise ConfigError("renew_protocol must be est or cmp")
        if self.renew_protocol == "cmp" and self.over_mqtt:
            raise ConfigError("renew_protocol cmp needs an https:// server")
        if self.key_store not in ("file", "pkcs11", "tpm"):
            raise ConfigError("key_store must be file, pkcs11 or tpm")
        if self.key_store == "tpm" and self.key_algorithm == "ed25519":
            raise ConfigError("a TPM holds p256, p384, rsa2048 or rsa3072 keys, not ed25519")
        if self.key_store == "pkcs11" and not (self.pkcs11_module and self.pkcs11_token):
            raise ConfigError("key_store pkcs11 needs pkcs11_module and pkcs11_token")
        if not 0 < self.renew_fraction < 1 or not 0 <= self.jitter_fraction < self.renew_fraction:
            raise ConfigError("need 0 < renew_fraction < 1 and 0 <= jitter_fraction < it")
        if (self.idevid_cert is None) != (self.idevid_key is None):
            raise ConfigError("idevid_cert and idevid_key go together")
        if (self.claim_cert is None) != (self.claim_key is None):
            raise ConfigError("claim_cert and claim_key go together")
        if self.claim_cert is not None and not self.over_mqtt:
            raise ConfigError("a claim certificate enrolls over MQTT only (server = mqtts://...)")
        if self.backoff_initial <= 0 or self.backoff_max < self.backoff_initial:
            raise ConfigError("need 0 < backoff_initial <= backoff_max")

    @property
    def over_mqtt(self) -> bool:
        """Whether the agent provisions through an MQTT broker."""
        return self.server.startswith("mqtts://")

    def secret(self) -> str | None:
        """The enrollment secret, from the setting or its file."""
        if self.enrollment_secret:
            return self.enrollment_secret
        if self.enrollment_secret_file and self.enrollment_secret_file.is_file():
            return self.enrollment_secret_file.read_text().strip() or None
        return None


def _convert(name: str, value: Any) -> Any:
    kinds = {f.name: f.type for f in fields(AgentConfig)}
    kind = str(kinds[name])
    if value is None:
        return None
    if "Path" in kind:
        return Path(value).expanduser()
    if "float" in kind:
        try:
            return float(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{name} must be a number") from exc
    return str(value)


def load_config(
    path: Path | None, environ: Mapping[str, str] | None = None, **overrides: Any
) -> AgentConfig:
    """The agent's configuration: file, then environment, then explicit overrides."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    if path is not None:
        try:
            values = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: {exc}") from exc
    names = {f.name for f in fields(AgentConfig)}
    unknown = set(values) - names
    if unknown:
        raise ConfigError(f"unknown agent settings: {', '.join(sorted(unknown))}")
    for name in names:
        env = environ.get(_ENV_PREFIX + name.upper())
        if env is not None:
            values[name] = env
    values.update({k: v for k, v in overrides.items() if v is not None})
    missing = [n for n in ("server", "device_id", "state_dir") if n not in values]
    if missing:
        raise ConfigError(f"agent settings missing: {', '.join(missing)}")
    converted = {k: _convert(k, v) for k, v in values.items()}
    try:
        return AgentConfig(**converted)
    except TypeError as exc:
        raise ConfigError(f"agent settings: {exc}") from exc
