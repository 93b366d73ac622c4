"""A real iotpki HTTPS listener (uvicorn, the TLS-extension protocol) in a thread on 127.0.0.1."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from iotpki.net.asgi_tls import TLSExtensionProtocol
from iotpki.server import Service, build_https_app, ensure_tls_identity, https_context
from iotpki.services.installation import Installation

__all__ = ["RunningServer", "free_port", "https_server"]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _ThreadServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class RunningServer:
    """Where the server listens and the CA files a client needs."""

    url: str
    port: int
    ca_file: Path  # the root CA certificate (PEM)
    root_fingerprint: str


@contextlib.contextmanager
def https_server(inst: Installation, *, port: int | None = None) -> Iterator[RunningServer]:
    """Serve the HTTPS application of ``inst`` until the block ends."""
    from cryptography.hazmat.primitives import hashes, serialization

    port = port or free_port()
    key_path, cert_path = ensure_tls_identity(inst)
    context = https_context(inst, key_path, cert_path)
    config = uvicorn.Config(
        build_https_app(Service(inst)),
        host="127.0.0.1",
        port=port,
        http=TLSExtensionProtocol,
        ssl_context_factory=lambda _config, _default: context,
        log_level="warning",
        lifespan="off",
    )
    server = _ThreadServer(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the HTTPS server did not start")
        time.sleep(0.02)
    root = inst.authority.chain(inst.authority.default_issuing_ca())[-1]
    ca_file = inst.home / "test-root.pem"
    ca_file.write_bytes(root.public_bytes(serialization.Encoding.PEM))
    try:
        yield RunningServer(
            f"https://127.0.0.1:{port}", port, ca_file, root.fingerprint(hashes.SHA256()).hex()
        )
    finally:
        server.should_exit = True
        thread.join(timeout=10)
