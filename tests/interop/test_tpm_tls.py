"""Mutual TLS with a TPM-held device key: Python's ``ssl`` through OpenSSL's tpm2 provider
(Debian tpm2-openssl), loaded from an OpenSSL configuration, on a real software TPM.

The client runs in a child process because OpenSSL reads ``OPENSSL_CONF`` once per process; the
server is iotpki.net.tls in this process with the installation's CAs as trust. The client reaches
swtpm through tpm2-abrmd: one handshake needs more than swtpm's three object slots.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

pytest.importorskip("tpm2_pytss")

from channelkit import EchoServer, issue, trust_pem
from iotpki.core.authority import Issued
from iotpki.core.models import KeyAlgorithm
from iotpki.keys.tpm import TpmBackend
from iotpki.net.tls import TPM_PROPERTIES, Channel, device_id_of, tpm_openssl_config
from iotpki.services.installation import Installation

from tpm import ResourceManager, SoftwareTpm, start_abrmd
from tpm import manufactured_tpm as manufactured_tpm
from tpm import swtpm as swtpm

pytestmark = pytest.mark.interop

_PROVIDER = Path("/usr/lib/x86_64-linux-gnu/ossl-modules/tpm2.so")

_CLIENT = textwrap.dedent(
    """
    import socket, ssl, sys
    from pathlib import Path
    from iotpki.net.tls import Identity, client_context, use_tpm_provider
    here, port, version, activate = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    if activate != "-":
        use_tpm_provider(activate)
    context = client_context(
        trust=(here / "trust.pem").read_text(),
        identity=Identity(here / "chain.pem", here / "key.tss2.pem"),
        minimum=ssl.TLSVersion[version],
    )
    context.maximum_version = ssl.TLSVersion[version]
    raw = socket.create_connection(("127.0.0.1", port), timeout=20)
    with raw, context.wrap_socket(raw, server_hostname="127.0.0.1") as conn:
        conn.sendall(b"hello\\n")
        print(conn.version(), conn.recv(1024).decode())
    """
)


@dataclass
class _Setup:
    issued: Issued
    manager: ResourceManager
    directory: Path


@pytest.fixture
def tpm_client(inst: Installation, swtpm: SoftwareTpm, tmp_path: Path) -> Iterator[_Setup]:
    """A device certificate for a P-256 key made in the TPM, its TSS2 PEM, and tpm2-abrmd."""
    if not _PROVIDER.is_file():
        pytest.skip("OpenSSL tpm2 provider (Debian tpm2-openssl) is not installed")
    backend = TpmBackend(swtpm.tcti, tmp_path / "keys")
    key_ref = backend.generate("device", KeyAlgorithm.P256)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tpm-dev-1")])
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(name)
        .sign(backend.signer(key_ref), hashes.SHA256())
    )
    issued = inst.authority.issue(csr, profile="device", actor="test")
    (tmp_path / "key.tss2.pem").write_bytes(backend.tss2_pem(key_ref))
    backend.close()  # swtpm serves one client connection at a time: from now on, tpm2-abrmd
    chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in issued.chain)
    (tmp_path / "chain.pem").write_bytes(chain)
    (tmp_path / "trust.pem").write_text(trust_pem(inst))
    manager = start_abrmd(swtpm)
    try:
        yield _Setup(issued, manager, tmp_path)
    finally:
        manager.stop()


def _handshake(
    inst: Installation,
    setup: _Setup,
    *,
    version: str = "TLSv1_3",
    openssl_conf: str | None = None,
    activate: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run the client in a child process (OpenSSL reads OPENSSL_CONF once per process)."""
    broker = issue(inst, setup.directory / "server", "127.0.0.1", profile="server")
    channel = Channel(
        "server",
        trust=lambda: trust_pem(inst),
        identity=broker.identity,
        minimum=ssl.TLSVersion[version],
    )
    server = EchoServer(channel.context, lambda conn: channel.peer_device_id(conn).encode())
    env = {**os.environ, **setup.manager.env}
    env.pop("OPENSSL_CONF", None)
    if openssl_conf is not None:
        (setup.directory / "openssl.cnf").write_text(openssl_conf)
        env["OPENSSL_CONF"] = str(setup.directory / "openssl.cnf")
        env["TPM2OPENSSL_TCTI"] = setup.manager.tcti
    server.start()
    try:
        return subprocess.run(
            [
                sys.executable,
                "-c",
                _CLIENT,
                str(setup.directory),
                str(server.port),
                version,
                setup.manager.tcti if activate else "-",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        server.stop()


@pytest.mark.parametrize(("version", "label"), [("TLSv1_3", "TLSv1.3"), ("TLSv1_2", "TLSv1.2")])
def test_mutual_tls_with_a_tpm_key(
    inst: Installation, tpm_client: _Setup, version: str, label: str
) -> None:
    """The documented OPENSSL_CONF: the device's handshake signature is made in the TPM."""
    result = _handshake(inst, tpm_client, version=version, openssl_conf=tpm_openssl_config())
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [label, device_id_of(tpm_client.issued.certificate)]


def test_mutual_tls_with_the_provider_activated_in_process(
    inst: Installation, tpm_client: _Setup
) -> None:
    """``use_tpm_provider`` does at run time what the configuration does at start."""
    result = _handshake(inst, tpm_client, activate=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["TLSv1.3", device_id_of(tpm_client.issued.certificate)]


def _provider_version(setup: _Setup) -> tuple[int, ...]:
    listing = subprocess.run(
        ["openssl", "list", "-providers", "-provider", "tpm2", "-provider", "default"],
        env={**os.environ, **setup.manager.env, "TPM2OPENSSL_TCTI": setup.manager.tcti},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    tpm2 = listing[listing.index("tpm2") :]
    version = tpm2[tpm2.index("version:") + len("version:") :].split()[0]
    return tuple(int(part) for part in version.split(".")[:3])


def test_without_a_signature_preference_old_providers_fail(
    inst: Installation, tpm_client: _Setup
) -> None:
    """Why TPM_PROPERTIES exists: tpm2-openssl < 1.2.0 (Debian 12: 1.1.1) hands OpenSSL the key's
    public half as the whole key pair (tpm2-openssl issue 81), so with no preference the default
    provider's ECDSA signs with no private key and the handshake ends in 'EVP lib'."""
    plain = tpm_openssl_config().replace(f"default_properties = {TPM_PROPERTIES}\n", "")
    assert "default_properties" not in plain
    result = _handshake(inst, tpm_client, openssl_conf=plain)
    if _provider_version(tpm_client) >= (1, 2, 0):
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode == 1
        assert "ssl.SSLError: [SSL] EVP lib" in result.stderr


def test_tss2_key_is_useless_without_the_provider(
    swtpm: SoftwareTpm,
    tmp_path: Path,
) -> None:
    """The file holds only the TPM-wrapped blob: no software can use it as a private key."""
    backend = TpmBackend(swtpm.tcti, tmp_path / "keys")
    pem = backend.tss2_pem(backend.generate("device", KeyAlgorithm.P256))
    backend.close()
    assert pem.startswith(b"-----BEGIN TSS2 PRIVATE KEY-----")
    with pytest.raises(ValueError):
        serialization.load_pem_private_key(pem, None)
