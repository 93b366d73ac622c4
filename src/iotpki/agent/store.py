"""The agent's identity on disk: key, certificate and chain, replaced atomically.

Layout of the state directory::

    trust.pem          trust anchors (CA certificates the agent accepts)
    current -> gen-N   symbolic link to the identity in use
    gen-N/cert.pem     the certificate; chain.pem: it and its CA certificates
    gen-N/key.pem      the private key (0600), or key.uri: its PKCS#11 URI

A new identity is written to a fresh ``gen-*`` directory and fsynced; only then is ``current``
switched by an atomic ``rename`` of a new link over it. A crash at any point leaves ``current``
pointing at a complete identity, the old or the new.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from iotpki.errors import ConfigError
from iotpki.files import write_atomically

__all__ = ["Identity", "IdentityStore", "write_atomic"]

_PEM = serialization.Encoding.PEM


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write a file so that readers see the old or the new content, never a part, durably."""
    write_atomically(path, data, mode)
    _fsync_dir(path.parent)


def pem(certs: Sequence[x509.Certificate]) -> bytes:
    """Certificates as concatenated PEM."""
    return b"".join(c.public_bytes(_PEM) for c in certs)


@dataclass(frozen=True)
class Identity:
    """One stored identity: where its files are and its certificate."""

    directory: Path
    certificate: x509.Certificate

    @property
    def cert_path(self) -> Path:
        """The certificate (PEM)."""
        return self.directory / "cert.pem"

    @property
    def chain_path(self) -> Path:
        """The certificate followed by its CA certificates (PEM)."""
        return self.directory / "chain.pem"

    @property
    def key_path(self) -> Path:
        """The private key file (file key store)."""
        return self.directory / "key.pem"

    @property
    def key_uri(self) -> str | None:
        """The PKCS#11 URI of the key (PKCS#11 key store)."""
        path = self.directory / "key.uri"
        return path.read_text().strip() if path.is_file() else None


class IdentityStore:
    """The state directory of one agent."""

    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir
        self.current = state_dir / "current"
        self.trust_path = state_dir / "trust.pem"

    def ensure(self) -> None:
        """Create the state directory (0700)."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)

    def load(self) -> Identity | None:
        """The identity in use, or None before the first enrollment."""
        if not self.current.is_symlink():
            return None
        directory = self.current.resolve()
        try:
            cert = x509.load_pem_x509_certificate((directory / "cert.pem").read_bytes())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"stored identity {directory} is unreadable: {exc}") from exc
        return Identity(directory, cert)

    def new_generation(self) -> Path:
        """A fresh, empty directory for the next identity (0700)."""
        self.ensure()
        path = self.root / f".gen-{time.time_ns()}-{secrets.token_hex(3)}"
        path.mkdir(mode=0o700)
        return path

    def write_key(self, generation: Path, key: CertificateIssuerPrivateKeyTypes) -> None:
        """The private key as an unencrypted PKCS#8 PEM file readable by the owner only."""
        data = key.private_bytes(
            _PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        write_atomic(generation / "key.pem", data, 0o600)

    def write_key_uri(self, generation: Path, uri: str) -> None:
        """The PKCS#11 URI of a key that stays in its token."""
        write_atomic(generation / "key.uri", uri.encode() + b"\n", 0o600)

    def commit(
        self, generation: Path, cert: x509.Certificate, chain: Sequence[x509.Certificate]
    ) -> Identity:
        """Write the certificate and chain, then make this generation the current identity."""
        write_atomic(generation / "cert.pem", pem([cert]))
        write_atomic(generation / "chain.pem", pem([cert, *chain]))
        final = generation.with_name(generation.name.lstrip("."))
        os.rename(generation, final)
        _fsync_dir(self.root)
        previous = self.current.resolve() if self.current.is_symlink() else None
        link = self.root / f".current.{secrets.token_hex(4)}"
        os.symlink(final.name, link)
        os.replace(link, self.current)  # the atomic switch
        _fsync_dir(self.root)
        self._prune(keep={final, previous})
        return Identity(final, cert)

    def keep_pending(self, generation: Path, csr: x509.CertificateSigningRequest) -> None:
        """Keep a generation whose request awaits approval, to send the same CSR again."""
        write_atomic(generation / "csr.der", csr.public_bytes(serialization.Encoding.DER))
        pending = self.root / "pending"
        shutil.rmtree(pending, ignore_errors=True)
        os.rename(generation, pending)

    def take_pending(self) -> tuple[Path, x509.CertificateSigningRequest] | None:
        """The generation and CSR of a request that awaited approval, if any."""
        pending = self.root / "pending"
        if not (pending / "csr.der").is_file():
            return None
        generation = self.root / f".gen-{time.time_ns()}-{secrets.token_hex(3)}"
        os.rename(pending, generation)
        csr = x509.load_der_x509_csr((generation / "csr.der").read_bytes())
        return generation, csr

    def discard(self, generation: Path) -> None:
        """Remove a generation that was never committed."""
        shutil.rmtree(generation, ignore_errors=True)

    def _prune(self, keep: set[Path | None]) -> None:
        """Remove generations other than the current and the previous one."""
        for path in self.root.glob("gen-*"):
            if path not in keep:
                shutil.rmtree(path, ignore_errors=True)
        for path in self.root.glob(".gen-*"):
            shutil.rmtree(path, ignore_errors=True)

    def trust(self) -> list[x509.Certificate]:
        """The trust anchors stored so far."""
        if not self.trust_path.is_file():
            return []
        return x509.load_pem_x509_certificates(self.trust_path.read_bytes())

    def save_trust(self, anchors: Sequence[x509.Certificate]) -> None:
        """Replace the trust anchors atomically."""
        self.ensure()
        write_atomic(self.trust_path, pem(anchors))
