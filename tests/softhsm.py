"""A throwaway SoftHSM2 token for tests that drive the PKCS#11 backend.

SoftHSM reads ``SOFTHSM2_CONF`` and scans its token directory only in ``C_Initialize``, and
python-pkcs11 initialises a module once per process. :func:`softhsm_token` therefore
re-initialises the module after creating the token: sessions opened on an earlier token are
invalidated, so make one token per test and close its backends at the end of the test.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path

import pkcs11
import pytest

__all__ = ["softhsm_module", "softhsm_token"]

_MODULE_PATHS = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",
    "/usr/lib64/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
    "/opt/homebrew/lib/softhsm/libsofthsm2.so",
)

PIN = "4711-user"
SO_PIN = "0815-security-officer"


def softhsm_module() -> str:
    """Path of the SoftHSM2 PKCS#11 module (``$SOFTHSM2_MODULE`` first); skips if absent."""
    override = os.environ.get("SOFTHSM2_MODULE")
    candidates = [override] if override else []
    candidates += [*_MODULE_PATHS, *sorted(glob.glob("/usr/lib/*/softhsm/libsofthsm2.so"))]
    for candidate in candidates:
        if Path(candidate).is_file():
            return candidate
    pytest.skip("SoftHSM2 module libsofthsm2.so not found (set SOFTHSM2_MODULE)")


def softhsm_token(tmp_path: Path, label: str = "iotpki-test") -> tuple[str, str, str]:
    """Create a fresh token under ``tmp_path``; returns (module path, token label, user PIN)."""
    util = shutil.which("softhsm2-util")
    if util is None:
        pytest.skip("softhsm2-util is not installed")
    module = softhsm_module()
    token_dir = tmp_path / "softhsm-tokens"
    token_dir.mkdir(parents=True, exist_ok=True)
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {token_dir}\n"
        "objectstore.backend = file\n"
        "log.level = ERROR\n"
        "slots.removable = false\n"
    )
    os.environ["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(
        [util, "--init-token", "--free", "--label", label, "--pin", PIN, "--so-pin", SO_PIN],
        check=True,
        capture_output=True,
    )
    pkcs11.lib(module).reinitialize()  # make an already loaded module see the new token
    return module, label, PIN
