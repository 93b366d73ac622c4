"""The device agent with its key in a software TPM (swtpm): enrollment over EST against a real
iotpki HTTPS listener on 127.0.0.1, the CSR signed inside the TPM, and renewal that rekeys inside
the TPM (re-bootstrapping with the IDevID, as for PKCS#11 keys)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

pytest.importorskip("tpm2_pytss")

from estkit import Manufacturer, write_identity
from estserver import RunningServer, https_server
from iotpki.agent import Agent, AgentConfig, ExitCode
from iotpki.agent.agent import tpm_key_ref
from iotpki.agent.cli import execute
from iotpki.core.attestation import ATTRIBUTES_REQUIRED, parse_public_area
from iotpki.core.enrollment import Enrollment
from iotpki.keys.tpm import TpmBackend
from iotpki.services.installation import Installation

from conftest import ManualClock, make_installation
from tpm import Manufactured, SoftwareTpm, require_swtpm, start_swtpm
from tpm import manufactured_tpm as manufactured_tpm

pytestmark = pytest.mark.interop


class _Clock:
    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock

    def now(self) -> datetime:
        return self.clock.now()

    def sleep(self, seconds: float, stop: threading.Event) -> bool:
        return stop.is_set()


@pytest.fixture
def swtpm(manufactured_tpm: Manufactured, tmp_path: Path) -> Iterator[SoftwareTpm]:
    require_swtpm()
    tpm = start_swtpm(manufactured_tpm, tmp_path)
    try:
        yield tpm
    finally:
        tpm.stop()


@pytest.fixture
def server(tmp_path: Path, clock: ManualClock) -> Iterator[tuple[Manufacturer, RunningServer]]:
    inst: Installation = make_installation(tmp_path / "home", clock=clock, lint_background=False)
    maker = Manufacturer.create()
    Enrollment(inst.authority).add_bootstrap_ca(
        "factory", maker.cert, enroll_policy="any", actor="test"
    )
    with https_server(inst) as running:
        yield maker, running
    inst.close()


def test_agent_enrolls_and_rekeys_inside_the_tpm(
    tmp_path: Path,
    clock: ManualClock,
    swtpm: SoftwareTpm,
    server: tuple[Manufacturer, RunningServer],
) -> None:
    maker, running = server
    key, idevid = maker.idevid("SN-TPM-1")
    cert_path, key_path = write_identity(tmp_path / "factory", "idevid", key, idevid)
    config = AgentConfig(
        server=running.url,
        device_id="SN-TPM-1",
        state_dir=tmp_path / "agent",
        ca_fingerprint=running.root_fingerprint,
        idevid_cert=cert_path,
        idevid_key=key_path,
        key_store="tpm",
        tpm_tcti=swtpm.tcti,
        timeout=60.0,
    )
    agent = Agent(config, clock=_Clock(clock))
    try:
        assert execute("enroll", agent) is ExitCode.OK
        first = agent.store.load()
        assert first is not None and first.key_uri is not None
        assert first.key_uri == "tpm:key.tpmkey" and not first.key_path.exists()
        ref = tpm_key_ref(first.directory, first.key_uri)
        reader = TpmBackend(swtpm.tcti, tmp_path / "unused")
        agent.close()  # swtpm serves one connection at a time
        area = parse_public_area(reader.public_area(ref))
        assert area.attributes & ATTRIBUTES_REQUIRED == ATTRIBUTES_REQUIRED  # fixedTPM etc.
        assert first.certificate.public_key() == reader.public_key(ref)
        reader.close()

        assert execute("renew", agent) is ExitCode.OK
        second = agent.store.load()
        assert second is not None and second.directory != first.directory
        assert second.certificate.public_key() != first.certificate.public_key()
        assert (second.directory / "key.tpmkey").is_file()
    finally:
        agent.close()


def test_tpm_key_store_refuses_ed25519(tmp_path: Path) -> None:
    from iotpki.errors import ConfigError

    with pytest.raises(ConfigError, match="TPM"):
        AgentConfig(
            server="https://127.0.0.1:1",
            device_id="x",
            state_dir=tmp_path,
            key_store="tpm",
            key_algorithm="ed25519",
        )


def test_a_tpm_key_renews_over_cmp_without_the_idevid(
    tmp_path: Path,
    clock: ManualClock,
    swtpm: SoftwareTpm,
    server: tuple[Manufacturer, RunningServer],
) -> None:
    """The kur is signed inside the TPM with the current key; the IDevID is not used again."""
    maker, running = server
    key, idevid = maker.idevid("SN-TPM-2")
    cert_path, key_path = write_identity(tmp_path / "factory", "idevid", key, idevid)
    config = AgentConfig(
        server=running.url,
        device_id="SN-TPM-2",
        state_dir=tmp_path / "agent",
        ca_fingerprint=running.root_fingerprint,
        idevid_cert=cert_path,
        idevid_key=key_path,
        key_store="tpm",
        tpm_tcti=swtpm.tcti,
        renew_protocol="cmp",
        timeout=60.0,
    )
    agent = Agent(config, clock=_Clock(clock))
    try:
        assert execute("enroll", agent) is ExitCode.OK
        first = agent.store.load()
        assert first is not None
        cert_path.unlink()  # the IDevID is gone: only the TPM key can renew
        key_path.unlink()
        assert execute("renew", agent) is ExitCode.OK
        second = agent.store.load()
        assert second is not None and second.directory != first.directory
        assert second.certificate.public_key() != first.certificate.public_key()
        assert (second.directory / "key.tpmkey").is_file()
    finally:
        agent.close()
