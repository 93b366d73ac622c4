"""Typed settings: ``<home>/iotpki.toml`` overridden by ``IOTPKI_*`` environment variables.

Read only at the edges (CLI, server, agent) and passed inward as one object.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from iotpki.core.policy import DEFAULT_PROFILES, Profile, profile_from_mapping
from iotpki.errors import ConfigError

__all__ = ["CONFIG_FILE", "Settings", "default_home", "load_settings"]

CONFIG_FILE = "iotpki.toml"
_ENV_PREFIX = "IOTPKI_"


def default_home() -> Path:
    """``$IOTPKI_HOME`` or ``~/.iotpki``."""
    return Path(os.environ.get("IOTPKI_HOME") or Path.home() / ".iotpki")


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
        if field_name in ("home", "profiles"):
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
