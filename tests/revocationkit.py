"""A real HTTP listener (OCSP, CRL, CA certificates) over a throwaway installation, for the
interop tests that point openssl, GnuTLS and curl at published revocation data."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from estserver import free_port
from iotpki.core.encoding import pem
from iotpki.core.models import RevocationReason
from iotpki.server import Service, build_http_app
from iotpki.services.installation import Installation

from conftest import device_csr, make_installation

PEM = serialization.Encoding.PEM


@dataclass
class RevocationServer:
    """The installation, its service and where its files and fetched CRLs go."""

    inst: Installation
    service: Service
    url: str
    dir: Path

    def issue(self, name: str) -> tuple[x509.Certificate, Path]:
        """A device certificate, also written as PEM for the command-line clients."""
        issued = self.inst.authority.issue(device_csr(name), profile="device", actor="test")
        path = self.dir / f"{name}.pem"
        path.write_bytes(issued.certificate.public_bytes(PEM))
        return issued.certificate, path

    def revoke(self, cert: x509.Certificate) -> None:
        """Revoke for keyCompromise."""
        self.inst.authority.revoke(
            format(cert.serial_number, "x"), reason=RevocationReason.KEY_COMPROMISE, actor="test"
        )

    def crl_pem(self, ca: str, kind: str = "") -> Path:
        """Fetch a CA-wide CRL (``kind`` "" or "-delta") as PEM."""
        return self.fetch(f"{self.url}/crl/{ca}{kind}.crl", f"{ca}{kind}")

    def fetch(self, url: str, name: str) -> Path:
        """Fetch a CRL over HTTP with curl, as PEM (what openssl and certtool read)."""
        der = subprocess.run(["curl", "-sf", url], capture_output=True, check=True).stdout
        path = self.dir / f"{name}.crl.pem"
        path.write_bytes(x509.load_der_x509_crl(der).public_bytes(PEM))
        return path


@contextmanager
def revocation_server(base: Path, **settings: Any) -> Iterator[RevocationServer]:
    """Serve a new installation's HTTP listener on a free port, with its revocation jobs."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    inst = make_installation(base / "home", public_base_url=url, **settings)
    service = Service(inst)
    config = uvicorn.Config(
        build_http_app(service), host="127.0.0.1", port=port, log_level="warning", lifespan="off"
    )
    listener = uvicorn.Server(config)
    thread = threading.Thread(target=listener.run, daemon=True)
    service.revocation.start()
    thread.start()
    try:
        wait_for(lambda: listener.started, "the HTTP listener started")
        work = base / "files"
        work.mkdir()
        chain = inst.authority.chain("issuing")
        (work / "issuing.pem").write_bytes(chain[0].public_bytes(PEM))
        (work / "root.pem").write_bytes(chain[1].public_bytes(PEM))
        (work / "chain.pem").write_bytes(pem(chain))
        yield RevocationServer(inst, service, url, work)
    finally:
        listener.should_exit = True
        thread.join(timeout=10)
        service.revocation.stop()
        inst.close()


def wait_for(condition: Callable[[], bool], what: str, limit: float = 120.0) -> None:
    """Poll a condition the server's background jobs make true (bounded, not a timing check);
    a curl that fails meanwhile (not published yet) counts as not yet."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except subprocess.CalledProcessError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {limit} s")
