"""Helpers for the secure-channel tests: identities issued by a real Authority, published CRLs,
and a small threaded mutual-TLS echo server."""

from __future__ import annotations

import queue
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from iotpki.core.authority import Issued
from iotpki.net.tls import Identity
from iotpki.services.installation import Installation
from iotpki.services.revocation import RevocationService

_PEM = serialization.Encoding.PEM


@dataclass
class Issuance:
    """An identity written to files, with its certificate and key."""

    identity: Identity
    issued: Issued
    key: ec.EllipticCurvePrivateKey

    @property
    def certificate(self) -> x509.Certificate:
        return self.issued.certificate


def write_identity(
    directory: Path,
    issued: Issued,
    key: ec.EllipticCurvePrivateKey,
    extra: tuple[x509.Certificate, ...] = (),
) -> Identity:
    """Write key.pem and chain.pem (leaf first) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "key.pem").write_bytes(
        key.private_bytes(_PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    chain = b"".join(c.public_bytes(_PEM) for c in (*issued.chain, *extra))
    (directory / "chain.pem").write_bytes(chain)
    return Identity(directory / "chain.pem", directory / "key.pem")


def issue(
    inst: Installation,
    directory: Path,
    name: str,
    *,
    profile: str = "device",
    ca: str | None = None,
    lifetime: timedelta | None = None,
) -> Issuance:
    """Issue a certificate for a new P-256 key: a device ID, or a server name (IP or DNS)."""
    key = ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    )
    csr = builder.sign(key, hashes.SHA256())
    issued = inst.authority.issue(csr, profile=profile, actor="test", ca=ca, lifetime=lifetime)
    return Issuance(write_identity(directory, issued, key), issued, key)


def trust_pem(inst: Installation) -> str:
    """Every CA certificate of the installation, as PEM."""
    return "".join(
        ca.certificate.public_bytes(_PEM).decode()
        for ca in inst.authority.list_cas()
        if ca.certificate_der is not None
    )


def publish_crls(inst: Installation) -> Path:
    """Generate a complete CRL of every CA held here and write the files; their directory."""
    service = RevocationService(inst)
    for name in service.publisher.signing_cas():
        service.publisher.generate(name, "full", actor="test")
    service.reload_crls()
    return inst.home / "crl"


@dataclass
class EchoServer:
    """Accepts mutual-TLS connections, answers each with ``respond(ssl_socket)``."""

    context: Callable[[], ssl.SSLContext]
    respond: Callable[[ssl.SSLSocket], bytes]
    port: int = 0
    errors: list[str] = field(default_factory=list)
    _errors: queue.Queue[str] = field(default_factory=queue.Queue)
    _sock: socket.socket | None = None
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> EchoServer:
        sock = socket.create_server(("127.0.0.1", 0))
        sock.settimeout(0.2)
        self._sock, self.port = sock, sock.getsockname()[1]
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                raw, _ = self._sock.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        raw.settimeout(10)
        try:
            with self.context().wrap_socket(raw, server_side=True) as conn:
                while True:
                    request = conn.recv(1024)
                    if not request:
                        break
                    conn.sendall(self.respond(conn))
        except (ssl.SSLError, OSError) as exc:
            self._errors.put(str(exc))
        except Exception as exc:  # the refusal the server reports to the test
            self._errors.put(f"{type(exc).__name__}: {exc}")
        finally:
            raw.close()

    def next_error(self) -> str:
        """The next refusal the server saw (waits for the connection's thread)."""
        error = self._errors.get(timeout=60)
        self.errors.append(error)
        return error

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._sock is not None:
            self._sock.close()


def ask(context: ssl.SSLContext, port: int, server_name: str = "127.0.0.1") -> bytes:
    """Connect, send one line, return the answer (b"" when the server closed)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    with raw, context.wrap_socket(raw, server_hostname=server_name) as conn:
        conn.sendall(b"hello\n")
        return conn.recv(1024)
