"""The commented ``iotpki.toml`` a new home starts with: complete, true to the defaults, private."""

from __future__ import annotations

import re
import stat
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from iotpki.services.installation import open_installation
from iotpki.services.revocation import revocation_config
from iotpki.services.settings_file import settings_template, write_settings_file
from iotpki.settings import (
    CONFIG_FILE,
    AcmeSettings,
    AttestationSettings,
    ExpiryThresholds,
    MonitoringSettings,
    RevocationPeriodSettings,
    RevocationSettings,
    Settings,
    load_settings,
)

_SETTING = re.compile(r"^# (\[[a-z0-9_.-]+\](?:  # example)?|[a-z0-9_]+ = .*)$")


def _uncommented(home: Path, *, examples: bool) -> dict[str, Any]:
    """The template with its setting lines uncommented (examples too, or defaults only)."""
    lines = []
    for line in settings_template(home).splitlines():
        match = _SETTING.match(line)
        if match and (examples or not line.endswith("# example")):
            lines.append(match.group(1))
    return tomllib.loads("\n".join(lines))


def test_uncommenting_every_default_changes_nothing(tmp_path: Path) -> None:
    values = _uncommented(tmp_path, examples=False)
    assert values, "the template shows no defaults"
    written = Settings(home=tmp_path, **values)
    default = Settings(home=tmp_path)
    # Settings unset by default whose template line shows the value they stand for.
    shown = {"database_url", "public_base_url"}
    shown_revocation = set(RevocationPeriodSettings.model_fields)
    assert written.model_dump(exclude=shown | {"revocation"}) == default.model_dump(
        exclude=shown | {"revocation"}
    )
    assert written.revocation.model_dump(exclude=shown_revocation) == (
        default.revocation.model_dump(exclude=shown_revocation)
    )
    assert written.effective_database_url == default.effective_database_url
    assert written.effective_public_base_url == default.effective_public_base_url
    assert revocation_config(written) == revocation_config(default)


def _missing(model: type[BaseModel], values: dict[str, Any], where: str) -> list[str]:
    return [f"{where}{name}" for name in model.model_fields if name not in values]


def test_the_template_shows_every_setting(tmp_path: Path) -> None:
    values = _uncommented(tmp_path, examples=True)
    Settings(home=tmp_path, **values).resolved_profiles()  # the examples are valid too
    monitoring = values["monitoring"]
    missing = (
        _missing(Settings, {**values, "home": None}, "")
        + _missing(RevocationSettings, values["revocation"], "revocation.")
        + _missing(RevocationPeriodSettings, values["revocation"]["cas"]["issuing"], "cas.")
        + _missing(AcmeSettings, values["acme"], "acme.")
        + _missing(AttestationSettings, values["attestation"], "attestation.")
        + _missing(MonitoringSettings, monitoring, "monitoring.")
        + _missing(ExpiryThresholds, monitoring["expiry"], "monitoring.expiry.")
        + _missing(ExpiryThresholds, monitoring["ca_expiry"], "monitoring.ca_expiry.")
        + _missing(ExpiryThresholds, monitoring["expiry_profiles"]["device"], "expiry_profiles.")
    )
    assert missing == []


def test_a_fresh_home_has_the_file_and_loads_unchanged(tmp_path: Path) -> None:
    home = tmp_path / "home"
    inst = open_installation(load_settings(home, environ={}), create=True)
    inst.close()
    path = home / CONFIG_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == settings_template(home)
    assert load_settings(home, environ={}) == Settings(home=home)


def test_an_existing_file_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / CONFIG_FILE).write_text("https_port = 9443\n")
    assert write_settings_file(tmp_path) is False
    inst = open_installation(load_settings(tmp_path, environ={}), create=True)
    inst.close()
    assert (tmp_path / CONFIG_FILE).read_text() == "https_port = 9443\n"
    assert load_settings(tmp_path, environ={}).https_port == 9443
