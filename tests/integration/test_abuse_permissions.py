"""The data directory is private: files 0600, directories 0700, and a warning for looser ones."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from iotpki.server import Service, ensure_tls_identity
from iotpki.services.installation import loose_permissions, open_installation

from conftest import make_settings


@pytest.fixture
def usual_umask() -> Iterator[None]:
    """The umask most shells run with, whatever the test runner's is."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _modes(home: Path) -> dict[str, int]:
    found = {}
    for root, dirs, files in os.walk(home):
        for name in (*dirs, *files):
            path = Path(root) / name
            found[str(path.relative_to(home))] = stat.S_IMODE(path.lstat().st_mode)
    return found


@pytest.mark.usefixtures("usual_umask")
def test_a_fresh_home_is_private(tmp_path: Path) -> None:
    home = tmp_path / "home"
    inst = open_installation(make_settings(home), create=True)
    inst.initialise(actor="test")
    ensure_tls_identity(inst)
    service = Service(inst)
    service.revocation.publish_due()
    service.revocation.reload_crls()
    inst.authority.record_event("test", "test.write", "", {})  # the WAL is in use
    modes = _modes(home)
    assert "iotpki.db" in modes and "iotpki.db-wal" in modes
    assert any(name.startswith("crl") for name in modes)
    loose = {name: oct(mode) for name, mode in modes.items() if mode & 0o077}
    assert loose == {}
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert loose_permissions(home) == []
    inst.close()


@pytest.mark.usefixtures("usual_umask")
def test_a_looser_file_is_named_in_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    home = tmp_path / "home"
    open_installation(make_settings(home), create=True).close()
    config = home / "iotpki.toml"
    config.write_text('organization = "Example"\n')
    os.chmod(config, 0o644)
    os.chmod(home / "iotpki.db", 0o640)
    with caplog.at_level(logging.WARNING, logger="iotpki.services.installation"):
        open_installation(make_settings(home)).close()
    warned = [r.getMessage() for r in caplog.records if "open to other users" in r.getMessage()]
    assert any(str(config) in line and "0644" in line for line in warned)
    assert any(str(home / "iotpki.db") in line for line in warned)
    assert loose_permissions(home)[:1] != []
