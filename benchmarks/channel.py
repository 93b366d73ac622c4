"""The cost of iotpki's checks on the secure channel.

- mutual-TLS 1.3 handshakes per second against a server built with ``iotpki.net.tls.Channel``
  (OpenSSL's CRL check of the client certificate with a CRL of N revoked entries, then the
  post-handshake revocation check and device-ID mapping), beside the same handshakes on a plain
  ``ssl`` server context with the same certificates and no revocation checking: the ratio is the
  cost of checking. The server runs in its own process, pinned to one core; clients in this one.
- COSE_Sign1 sign and verify per second (``iotpki.messages.cose``; and the full device message
  path: claims + x5chain, chain validation, CRL, replay) beside the raw signature rate of the
  same key type with pyca/cryptography.

Run: ``.venv/bin/python benchmarks/channel.py [--seconds S] [--revoked N]``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID
from rich.console import Console
from rich.table import Table

from iotpki.core.revocation import build_crl
from iotpki.messages import MessageSigner, MessageVerifier
from iotpki.messages.cose import decode_sign1, sign1, verify_sign1
from iotpki.net.revocation_check import CrlCache, RevocationChecker
from iotpki.net.tls import Channel, Identity, client_context, server_context
from iotpki.services.installation import Installation, open_installation
from iotpki.settings import Settings

console = Console()
_PEM = serialization.Encoding.PEM


def _identity(inst: Installation, directory: Path, name: str, profile: str) -> Identity:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .sign(key, hashes.SHA256())
    )
    issued = inst.authority.issue(csr, profile=profile, actor="bench")
    directory.mkdir(parents=True)
    (directory / "key.pem").write_bytes(
        key.private_bytes(_PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    (directory / "chain.pem").write_bytes(b"".join(c.public_bytes(_PEM) for c in issued.chain))
    return Identity(directory / "chain.pem", directory / "key.pem")


def _big_crl(inst: Installation, revoked: int, crl_dir: Path) -> None:
    """A CRL of the issuing CA listing ``revoked`` certificates, written as a published file."""
    name = inst.authority.default_issuing_ca()
    record, key = inst.authority.crl_signer(name)
    now = inst.authority.clock.now()
    entries = ((format(0x10_0000 + n, "x"), now, "superseded", None) for n in range(revoked))
    der = build_crl(
        issuer=record.certificate,
        key=key,
        entries=entries,
        number=1,
        this_update=now,
        next_update=now + timedelta(hours=1),
    )
    crl_dir.mkdir(parents=True, exist_ok=True)
    (crl_dir / f"{name}.crl").write_bytes(der)


def _serve(checked: bool, trust: str, identity: Identity, crl_dir: str, port_out: mp.Queue) -> None:  # type: ignore[type-arg]
    """The handshake server (in its own process)."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})
    anchors = x509.load_pem_x509_certificates(trust.encode())
    if checked:
        crls = CrlCache(issuers=lambda: anchors, directories=[Path(crl_dir)], poll_seconds=5)
        channel = Channel(
            "server",
            trust=lambda: trust,
            identity=identity,
            crls=crls,
            revocation=RevocationChecker(crls),
        )
        context = channel.context()
    else:
        context = server_context(trust=trust, identity=identity)
    sock = socket.create_server(("127.0.0.1", 0), backlog=512)
    port_out.put(sock.getsockname()[1])
    while True:
        raw, _ = sock.accept()
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            with context.wrap_socket(raw, server_side=True) as conn:
                if checked:
                    channel.peer_device_id(conn)
                conn.sendall(b"k")
        except (OSError, ssl.SSLError):
            pass


def handshake_rate(
    checked: bool, trust: str, server: Identity, client: Identity, crl_dir: Path, seconds: float
) -> float:
    """Completed mutual-TLS handshakes per second (4 client threads)."""
    ports: mp.Queue[int] = mp.Queue()
    process = mp.Process(
        target=_serve, args=(checked, trust, server, str(crl_dir), ports), daemon=True
    )
    process.start()
    port = ports.get(timeout=30)
    context = client_context(trust=trust, identity=client)
    done = [0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def loop() -> None:
        count = 0
        while time.monotonic() < stop:
            with (
                _nodelay(socket.create_connection(("127.0.0.1", port))) as raw,
                context.wrap_socket(raw, server_hostname="127.0.0.1") as conn,
            ):
                if conn.recv(1) == b"k":
                    count += 1
        with lock:
            done[0] += count

    threads = [threading.Thread(target=loop) for _ in range(4)]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - start
    process.terminate()
    process.join()
    return done[0] / elapsed


def _nodelay(sock: socket.socket) -> socket.socket:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def per_second(work: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``work``."""
    for _ in range(50):
        work()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(100):
            work()
        count += 100
    return count / (time.perf_counter() - start)


def _signature_rows(
    table: Table,
    label: str,
    key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey,
    data: bytes,
    seconds: float,
) -> None:
    """Raw signature rates of ``key`` beside COSE_Sign1 over the same payload."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        ecdsa = ec.ECDSA(hashes.SHA256())
        public_ec = key.public_key()
        signature = key.sign(data, ecdsa)
        raw_sign = per_second(lambda: key.sign(data, ecdsa), seconds)
        raw_verify = per_second(lambda: public_ec.verify(signature, data, ecdsa), seconds)
    else:
        public_ed = key.public_key()
        signature = key.sign(data)
        raw_sign = per_second(lambda: key.sign(data), seconds)
        raw_verify = per_second(lambda: public_ed.verify(signature, data), seconds)
    message = sign1(data, key)
    public = key.public_key()
    cose_sign = per_second(lambda: sign1(data, key), seconds)
    cose_verify = per_second(lambda: verify_sign1(decode_sign1(message), public), seconds)
    table.add_row(f"{label} raw sign (pyca/cryptography)", f"{raw_sign:,.0f}", "1.00")
    table.add_row(f"{label} COSE_Sign1 sign", f"{cose_sign:,.0f}", f"{cose_sign / raw_sign:.2f}")
    table.add_row(f"{label} raw verify", f"{raw_verify:,.0f}", "1.00")
    table.add_row(
        f"{label} COSE_Sign1 verify", f"{cose_verify:,.0f}", f"{cose_verify / raw_verify:.2f}"
    )


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--revoked", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        inst = open_installation(
            Settings(home=home, passphrase="bench", lint_background=False), create=True
        )
        inst.initialise(actor="bench")
        trust = "".join(
            c.certificate.public_bytes(_PEM).decode() for c in inst.authority.list_cas()
        )
        server = _identity(inst, Path(tmp) / "server", "127.0.0.1", "server")
        client = _identity(inst, Path(tmp) / "client", "dev-1", "device")
        crl_dir = Path(tmp) / "crl"
        _big_crl(inst, args.revoked, crl_dir)
        plain = handshake_rate(False, trust, server, client, crl_dir, args.seconds)
        checked = handshake_rate(True, trust, server, client, crl_dir, args.seconds)

        table = Table("measure", "per second", "ratio", title="secure channel")
        table.add_row(
            "mTLS 1.3 handshakes, plain ssl (no revocation check)", f"{plain:,.0f}", "1.00"
        )
        table.add_row(
            f"mTLS 1.3 handshakes, iotpki.net.tls (CRL of {args.revoked:,} entries + device ID)",
            f"{checked:,.0f}",
            f"{checked / plain:.2f}",
        )
        data = b'{"t": 21.5, "seq": 1}'
        _signature_rows(table, "P-256", ec.generate_private_key(ec.SECP256R1()), data, args.seconds)
        _signature_rows(table, "Ed25519", ed25519.Ed25519PrivateKey.generate(), data, args.seconds)
        device_key = serialization.load_pem_private_key(client.key.read_bytes(), None)
        chain = x509.load_pem_x509_certificates(client.chain.read_bytes())
        signer = MessageSigner(device_key, chain)  # type: ignore[arg-type]
        roots = [
            c for c in x509.load_pem_x509_certificates(trust.encode()) if c.issuer == c.subject
        ]
        cas = x509.load_pem_x509_certificates(trust.encode())
        crls = CrlCache(issuers=lambda: cas, directories=[crl_dir], poll_seconds=60)
        verifier = MessageVerifier(
            lambda: roots, revocation=RevocationChecker(crls), window=timedelta(days=1)
        )
        device_sign = per_second(lambda: signer.sign(data), args.seconds)
        messages = [signer.sign(data) for _ in range(int(device_sign * args.seconds) + 200)]
        it = iter(messages)
        device_verify = per_second(lambda: verifier.verify(next(it)), args.seconds / 2)
        table.add_row("device message sign (claims + x5chain, P-256)", f"{device_sign:,.0f}", "")
        table.add_row(
            f"device message verify (chain, CRL of {args.revoked:,}, replay)",
            f"{device_verify:,.0f}",
            "",
        )
        console.print(table)
        inst.close()


if __name__ == "__main__":
    main()
