"""A throwaway software TPM 2.0 (swtpm) for tests of TPM-held keys and attestation.

:func:`manufacture` runs ``swtpm_setup`` once with our own ``--config`` (the default writes under
/var/lib): a local manufacturer CA (``swtpm_localca``) is created in a temp dir and signs the
TPM's RSA EK certificate, which lands in NV index 0x01c00002 as on a real TPM. Each
:func:`start_swtpm` copies that manufactured state and runs ``swtpm socket`` on two free ports of
127.0.0.1 (command and control); the process is stopped by its pid.

swtpm has only three transient object slots. Without a resource manager (tpm2-abrmd) every
client must flush what it loads: tpm2-pytss does so in iotpki's backend, tpm2-tools does not.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

__all__ = [
    "Manufactured",
    "ResourceManager",
    "SoftwareTpm",
    "manufacture",
    "start_abrmd",
    "start_swtpm",
    "swtpm_available",
    "tpm2_pkcs11_token",
]

EK_CERT_NV_INDEX = 0x01C00002  # TCG EK Credential Profile 2.0, section 2.2.1.4: RSA 2048 EK cert
_TOOLS = ("swtpm", "swtpm_setup", "swtpm_localca")


def swtpm_available() -> bool:
    """Whether swtpm and its setup tools are installed."""
    return all(shutil.which(tool) for tool in _TOOLS)


def require_swtpm() -> None:
    """Skip the calling test when swtpm is missing."""
    if not swtpm_available():
        pytest.skip("swtpm / swtpm-tools are not installed")


@dataclass(frozen=True)
class Manufactured:
    """A manufactured TPM state and the manufacturer CA that certified its EK."""

    state_dir: Path
    manufacturer_root: x509.Certificate
    manufacturer_issuer: x509.Certificate


@dataclass
class SoftwareTpm:
    """A running swtpm: connect with ``tcti`` (tpm2-tss ``swtpm`` TCTI syntax)."""

    process: subprocess.Popen[bytes]
    port: int
    ctrl_port: int
    state_dir: Path
    manufactured: Manufactured

    @property
    def tcti(self) -> str:
        """The TCTI configuration string for tpm2-tss, tpm2-tools and tpm2-pkcs11."""
        return f"swtpm:host=127.0.0.1,port={self.port}"

    def stop(self) -> None:
        """Terminate this swtpm process (by its pid) and wait for it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def manufacture(directory: Path) -> Manufactured:
    """Run ``swtpm_setup`` with a local manufacturer CA under ``directory``."""
    require_swtpm()
    ca_dir = directory / "manufacturer-ca"
    state_dir = directory / "state"
    ca_dir.mkdir(parents=True)
    state_dir.mkdir()
    localca_conf = directory / "swtpm-localca.conf"
    localca_conf.write_text(
        f"statedir = {ca_dir}\n"
        f"signingkey = {ca_dir}/signkey.pem\n"
        f"issuercert = {ca_dir}/issuercert.pem\n"
        f"certserial = {ca_dir}/certserial\n"
    )
    localca_options = directory / "swtpm-localca.options"
    localca_options.write_text(
        "--platform-manufacturer iotpki-test\n--platform-version 2.1\n--platform-model swtpm\n"
    )
    setup_conf = directory / "swtpm_setup.conf"
    setup_conf.write_text(
        f"create_certs_tool = {shutil.which('swtpm_localca')}\n"
        f"create_certs_tool_config = {localca_conf}\n"
        f"create_certs_tool_options = {localca_options}\n"
        "active_pcr_banks = sha256\n"
    )
    subprocess.run(
        [
            "swtpm_setup",
            "--tpm2",
            "--tpmstate",
            str(state_dir),
            "--create-ek-cert",
            "--config",
            str(setup_conf),
            "--overwrite",
        ],
        check=True,
        capture_output=True,
    )
    root = x509.load_pem_x509_certificate((ca_dir / "swtpm-localca-rootca-cert.pem").read_bytes())
    issuer = x509.load_pem_x509_certificate((ca_dir / "issuercert.pem").read_bytes())
    return Manufactured(state_dir, root, issuer)


def _free_port_pair() -> tuple[int, int]:
    """Two consecutive free TCP ports on 127.0.0.1: the swtpm TCTI expects control at port + 1."""
    for _ in range(100):
        first, second = socket.socket(), socket.socket()
        try:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            if port >= 65535:
                continue
            second.bind(("127.0.0.1", port + 1))
            return port, port + 1
        except OSError:
            continue
        finally:
            first.close()
            second.close()
    raise RuntimeError("no two consecutive free ports on 127.0.0.1")


def start_swtpm(manufactured: Manufactured, directory: Path) -> SoftwareTpm:
    """Start a swtpm on a private copy of the manufactured state; call ``stop`` afterwards."""
    state_dir = directory / "swtpm-state"
    shutil.copytree(manufactured.state_dir, state_dir)
    port, ctrl_port = _free_port_pair()
    process = subprocess.Popen(
        [
            "swtpm",
            "socket",
            "--tpm2",
            "--tpmstate",
            f"dir={state_dir}",
            "--server",
            f"type=tcp,port={port},bindaddr=127.0.0.1",
            "--ctrl",
            f"type=tcp,port={ctrl_port},bindaddr=127.0.0.1",
            "--flags",
            "not-need-init,startup-clear",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    tpm = SoftwareTpm(process, port, ctrl_port, state_dir, manufactured)
    deadline = time.monotonic() + 60  # readiness poll of a child process, not a timed assertion
    while True:
        if process.poll() is not None:
            raise RuntimeError(
                f"swtpm exited: {process.stderr.read().decode() if process.stderr else ''}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return tpm
        except OSError:
            if time.monotonic() > deadline:
                tpm.stop()
                raise
            time.sleep(0.02)


@pytest.fixture(scope="session")
def manufactured_tpm(tmp_path_factory: pytest.TempPathFactory) -> Manufactured:
    """One TPM manufactured per test session (``swtpm_setup`` takes seconds)."""
    return manufacture(tmp_path_factory.mktemp("tpm-manufacture"))


@pytest.fixture
def swtpm(manufactured_tpm: Manufactured, tmp_path: Path) -> Iterator[SoftwareTpm]:
    """A running software TPM, private to one test."""
    tpm = start_swtpm(manufactured_tpm, tmp_path)
    try:
        yield tpm
    finally:
        tpm.stop()


TPM2_PKCS11_PIN = "4711-user"
_TPM2_PKCS11_SO_PIN = "0815-security-officer"


def tpm2_pkcs11_module() -> str:
    """Path of the tpm2-pkcs11 module (Debian libtpm2-pkcs11-1); skips if absent."""
    found = sorted(glob.glob("/usr/lib/*/pkcs11/libtpm2_pkcs11.so*"))
    if not found or not shutil.which("pkcs11-tool"):
        pytest.skip("tpm2-pkcs11 (libtpm2-pkcs11-1) or pkcs11-tool (opensc) is not installed")
    return found[0]


def tpm2_pkcs11_token(
    tpm: SoftwareTpm, directory: Path, label: str = "iotpki-tpm"
) -> tuple[str, str, str]:
    """A tpm2-pkcs11 token on ``tpm``; returns (module path, token label, user PIN).

    The token is made through the PKCS#11 library itself (C_InitToken, C_InitPIN by pkcs11-tool):
    ``tpm2_ptool`` drives tpm2-tools, which leave transient objects behind and fill swtpm's
    three slots without a resource manager. The library reads ``TPM2_PKCS11_STORE`` and
    ``TPM2_PKCS11_TCTI`` in C_Initialize, so an already loaded module is re-initialised.
    """
    import pkcs11

    module = tpm2_pkcs11_module()
    store = directory / "tpm2-pkcs11-store"
    store.mkdir(parents=True, exist_ok=True)
    os.environ["TPM2_PKCS11_STORE"] = str(store)
    os.environ["TPM2_PKCS11_TCTI"] = tpm.tcti
    os.environ.setdefault("TPM2_PKCS11_LOG_LEVEL", "0")
    tool = ["pkcs11-tool", "--module", module]
    subprocess.run(
        [*tool, "--init-token", "--label", label, "--so-pin", _TPM2_PKCS11_SO_PIN],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            *tool,
            "--token-label",
            label,
            "--login",
            "--login-type",
            "so",
            "--so-pin",
            _TPM2_PKCS11_SO_PIN,
            "--init-pin",
            "--pin",
            TPM2_PKCS11_PIN,
        ],
        check=True,
        capture_output=True,
    )
    pkcs11.lib(module).reinitialize()
    return module, label, TPM2_PKCS11_PIN


@dataclass
class ResourceManager:
    """A tpm2-abrmd in front of one swtpm, on a private D-Bus session bus."""

    dbus: subprocess.Popen[bytes]
    abrmd: subprocess.Popen[bytes]
    bus_address: str
    bus_name: str

    @property
    def tcti(self) -> str:
        """The tpm2-tss TCTI string for clients of this resource manager."""
        return f"tabrmd:bus_name={self.bus_name},bus_type=session"

    @property
    def env(self) -> dict[str, str]:
        """Environment a client process needs to reach the resource manager."""
        return {"DBUS_SESSION_BUS_ADDRESS": self.bus_address}

    def stop(self) -> None:
        """Terminate tpm2-abrmd, then the bus (each by its pid)."""
        for process in (self.abrmd, self.dbus):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def start_abrmd(tpm: SoftwareTpm) -> ResourceManager:
    """Start tpm2-abrmd on ``tpm`` (which then has no other client); call ``stop`` afterwards.

    Without a resource manager a TPM holds three loaded objects; OpenSSL's tpm2 provider needs
    more in one TLS handshake (see docs/tpm.md). The kernel's /dev/tpmrm0 plays this part on a
    device.
    """
    if not (shutil.which("tpm2-abrmd") and shutil.which("dbus-daemon")):
        pytest.skip("tpm2-abrmd / dbus-daemon are not installed")
    if not glob.glob("/usr/lib/*/libtss2-tcti-tabrmd.so*"):
        pytest.skip("the tabrmd TCTI (libtss2-tcti-tabrmd0) is not installed")
    dbus = subprocess.Popen(
        ["dbus-daemon", "--session", "--nofork", "--print-address=1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert dbus.stdout is not None
    address = dbus.stdout.readline().decode().strip()
    bus_name = f"com.intel.tss2.Tabrmd.iotpki{tpm.port}"
    abrmd = subprocess.Popen(
        [
            "tpm2-abrmd",
            "--session",
            "--allow-root",
            f"--dbus-name={bus_name}",
            f"--tcti={tpm.tcti}",
        ],
        env={**os.environ, "DBUS_SESSION_BUS_ADDRESS": address},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    manager = ResourceManager(dbus, abrmd, address, bus_name)
    deadline = time.monotonic() + 60  # readiness poll of a child process, not a timed assertion
    while True:
        if abrmd.poll() is not None:
            manager.stop()
            raise RuntimeError(
                f"tpm2-abrmd exited: {abrmd.stderr.read().decode() if abrmd.stderr else ''}"
            )
        names = subprocess.run(
            [
                "dbus-send",
                f"--bus={address}",
                "--print-reply",
                "--dest=org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus.ListNames",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if bus_name in names.stdout:
            return manager
        if time.monotonic() > deadline:
            manager.stop()
            raise RuntimeError("tpm2-abrmd did not come up on its bus")
        time.sleep(0.05)
