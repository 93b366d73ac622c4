"""Mutual TLS with a TPM-held device key: Python's ``ssl`` through OpenSSL's tpm2 provider
(Debian tpm2-openssl), loaded from an OpenSSL configuration, on a real software TPM.

The client runs in a child process because OpenSSL reads ``OPENSSL_CONF`` once per process; the
server is iotpki.tls in this process with the installation's CAs as trust.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

pytest.importorskip("tpm2_pytss")

from channelkit import EchoServer, issue, trust_pem
from iotpki.core.models import KeyAlgorithm
from iotpki.installation import Installation
from iotpki.keys.tpm import TpmBackend
from iotpki.tls import Channel, device_id_of

from tpm import SoftwareTpm
from tpm import manufactured_tpm as manufactured_tpm
from tpm import swtpm as swtpm

pytestmark = pytest.mark.interop

_PROVIDER = Path("/usr/lib/x86_64-linux-gnu/ossl-modules/tpm2.so")

# docs/tpm.md explains each line. No default_properties: a key the tpm2 provider loaded signs in
# that provider anyway, and every other operation (hashing, verifying the peer) stays in the
# default provider instead of taking one of the TPM's few object slots.
OPENSSL_CNF = """\
openssl_conf = openssl_init

[openssl_init]
providers = provider_sect

[provider_sect]
default = default_sect
tpm2 = tpm2_sect

[default_sect]
activate = 1

[tpm2_sect]
activate = 1
"""

_CLIENT = textwrap.dedent(
    """
    import socket, sys
    from pathlib import Path
    from iotpki.tls import Identity, client_context
    here = Path(sys.argv[1])
    context = client_context(
        trust=(here / "trust.pem").read_text(),
        identity=Identity(here / "chain.pem", here / "key.tss2.pem"),
    )
    raw = socket.create_connection(("127.0.0.1", int(sys.argv[2])), timeout=20)
    with raw, context.wrap_socket(raw, server_hostname="127.0.0.1") as conn:
        conn.sendall(b"hello\\n")
        print(conn.recv(1024).decode())
    """
)


@pytest.mark.xfail(
    reason="unfinished: the TPM key loads through the tpm2 provider and signs with `openssl req`, "
    "but the TLS 1.3 handshake fails: with `?tpm2.signature` peer verification goes to the TPM "
    "and swtpm runs out of object slots; without it the handshake ends in 'EVP lib'",
    strict=False,
)
def test_mutual_tls_with_a_tpm_key(
    inst: Installation,
    swtpm: SoftwareTpm,
    tmp_path: Path,
) -> None:
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
    backend.close()  # swtpm serves one client connection at a time
    chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in issued.chain)
    (tmp_path / "chain.pem").write_bytes(chain)
    (tmp_path / "trust.pem").write_text(trust_pem(inst))
    (tmp_path / "openssl.cnf").write_text(OPENSSL_CNF)

    broker = issue(inst, tmp_path / "server", "127.0.0.1", profile="server")
    channel = Channel("server", trust=lambda: trust_pem(inst), identity=broker.identity)
    server = EchoServer(channel.context, lambda conn: channel.peer_device_id(conn).encode())
    server.start()
    try:
        env = {
            **os.environ,
            "OPENSSL_CONF": str(tmp_path / "openssl.cnf"),
            "TPM2OPENSSL_TCTI": swtpm.tcti,
        }
        result = subprocess.run(
            [sys.executable, "-c", _CLIENT, str(tmp_path), str(server.port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == device_id_of(issued.certificate)


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
