"""TLS for devices and services: standard-library ``ssl.SSLContext`` builders with iotpki's
identities, trust anchors and revocation checking.

- :func:`client_context` / :func:`server_context` build one context: TLS 1.3 by default, mutual
  authentication (a server requires a client certificate), trust anchors from a PEM bundle (the
  agent's ``trust.pem``), and, with a :class:`~iotpki.net.revocation_check.CrlCache`, OpenSSL's
  CRL check of the peer's certificate (``VERIFY_CRL_CHECK_LEAF``, RFC 5280 section 6.3).
- :class:`Channel` keeps a context current: it rebuilds it when the agent renews the identity,
  the trust anchors change, or a CRL is refreshed (on its nextUpdate, or when the published file
  changes). Established connections keep the context they were made with and are never dropped;
  a server context moves each new handshake onto the newest context (through its SNI callback),
  a client asks :meth:`Channel.context` for each new connection.
- :meth:`Channel.check_peer` runs after the handshake: OCSP where the responder answers (the
  ``ssl`` module exposes no stapled response, so it is fetched), and the device ID of the peer.

Keys: the ``ssl`` module loads PEM key files only (the agent's ``key.pem``, or a file backend's
key with its passphrase). A key inside a PKCS#11 token cannot sign a handshake through it. A TPM
key can, as a ``TSS2 PRIVATE KEY`` PEM, once OpenSSL's tpm2 provider is active in the process:
:func:`tpm_openssl_config` (for ``OPENSSL_CONF``) or :func:`use_tpm_provider` (docs/tpm.md).
"""

from __future__ import annotations

import ctypes
import logging
import os
import ssl
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.x509.oid import NameOID

from iotpki.core.policy import DEFAULT_PROFILES
from iotpki.core.ports import Clock, SystemClock
from iotpki.errors import ConfigError, PeerRefused
from iotpki.net.revocation_check import CrlCache, RevocationChecker, file_stamp, issuer_of

__all__ = [
    "DEVICE_URI_PREFIX",
    "TPM_PROPERTIES",
    "Channel",
    "Identity",
    "client_context",
    "device_id_of",
    "peer_certificate",
    "server_context",
    "tpm_openssl_config",
    "use_tpm_provider",
]

log = logging.getLogger(__name__)

DEVICE_URI_PREFIX = DEFAULT_PROFILES["device"].uri_prefix
"""The URI SAN prefix before a device ID (``urn:dev:ops:iotpki-<device-id>``)."""

Side = ssl.Purpose

TPM_PROPERTIES = "?tpm2.signature"
"""OpenSSL default properties with the tpm2 provider: prefer its signatures, nothing else.

tpm2-openssl before 1.2.0 (Debian 12 ships 1.1.1) exports a TPM key's public half when OpenSSL
asks for the key pair, so with no preference OpenSSL signs with the default provider's ECDSA
over a key without its private half ('missing private key', then 'EVP lib' in the handshake).
Preferring the provider's signatures also sends peer verification to the TPM, which needs more
than a TPM's three object slots in one handshake: the TCTI must be a resource manager
(``device:/dev/tpmrm0``, or tpm2-abrmd). Never ``?provider=tpm2``: it sends every hash there."""


def tpm_openssl_config() -> str:
    """An OpenSSL configuration (``OPENSSL_CONF``) that activates the default and tpm2 providers.

    OpenSSL reads it once, when the process first initialises OpenSSL: set ``OPENSSL_CONF``
    (and ``TPM2OPENSSL_TCTI``) before the process starts.
    """
    return (
        "openssl_conf = openssl_init\n\n"
        "[openssl_init]\nproviders = provider_sect\nalg_section = evp_properties\n\n"
        "[provider_sect]\ndefault = default_sect\ntpm2 = tpm2_sect\n\n"
        "[default_sect]\nactivate = 1\n\n[tpm2_sect]\nactivate = 1\n\n"
        f"[evp_properties]\ndefault_properties = {TPM_PROPERTIES}\n"
    )


_tpm_provider_tcti: str | None = None


def _openssl_errors(libcrypto: ctypes.CDLL) -> str:
    """Drain OpenSSL's error queue into one line."""
    messages = []
    buffer = ctypes.create_string_buffer(256)
    while code := libcrypto.ERR_get_error():
        libcrypto.ERR_error_string_n(code, buffer, len(buffer))
        messages.append(buffer.value.decode(errors="replace"))
    return "; ".join(messages) or "no OpenSSL error"


def use_tpm_provider(tcti: str) -> None:
    """Activate OpenSSL's tpm2 provider in this process, as :func:`tpm_openssl_config` would.

    For contexts made afterwards, :class:`Identity` may then name a ``TSS2 PRIVATE KEY`` PEM
    (``TpmBackend.tss2_pem``). ``tcti`` must reach a resource manager (see TPM_PROPERTIES).
    Idempotent for one TCTI; the provider keeps its TPM connection for the life of the process.
    """
    global _tpm_provider_tcti
    if _tpm_provider_tcti is not None:
        if _tpm_provider_tcti != tcti:
            raise ConfigError(
                f"the tpm2 provider is active with {_tpm_provider_tcti!r}, not {tcti!r}"
            )
        return
    libcrypto = ctypes.CDLL("libcrypto.so.3")  # the one the ssl module is linked to
    libcrypto.OpenSSL_version_num.restype = ctypes.c_ulong
    libcrypto.ERR_get_error.restype = ctypes.c_ulong
    libcrypto.ERR_error_string_n.argtypes = [ctypes.c_ulong, ctypes.c_char_p, ctypes.c_size_t]
    libcrypto.OSSL_PROVIDER_load.restype = ctypes.c_void_p
    libcrypto.OSSL_PROVIDER_load.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    libcrypto.EVP_set_default_properties.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    if libcrypto.OpenSSL_version_num() != ssl.OPENSSL_VERSION_NUMBER:
        raise ConfigError("the ssl module is not linked to the system's libcrypto.so.3")
    os.environ["TPM2OPENSSL_TCTI"] = tcti  # the provider reads it when it starts
    # Loading a provider explicitly turns off the implicit default provider: load both.
    for name in (b"default", b"tpm2"):
        if not libcrypto.OSSL_PROVIDER_load(None, name):
            raise ConfigError(
                f"cannot load the OpenSSL {name.decode()} provider ({tcti}): "
                + _openssl_errors(libcrypto)
            )
    if libcrypto.EVP_set_default_properties(None, TPM_PROPERTIES.encode()) != 1:
        raise ConfigError(f"cannot set OpenSSL properties: {_openssl_errors(libcrypto)}")
    _tpm_provider_tcti = tcti


@dataclass(frozen=True, slots=True)
class Identity:
    """Where an identity's certificate chain (PEM, leaf first) and key (PEM) are."""

    chain: Path
    key: Path
    password: str | None = None

    @classmethod
    def of_agent(cls, state_dir: Path) -> Identity:
        """The identity the device agent keeps current in its state directory."""
        return cls(state_dir / "current" / "chain.pem", state_dir / "current" / "key.pem")


def _base(purpose: ssl.Purpose, trust: str, minimum: ssl.TLSVersion) -> ssl.SSLContext:
    protocol = ssl.PROTOCOL_TLS_CLIENT if purpose is Side.SERVER_AUTH else ssl.PROTOCOL_TLS_SERVER
    context = ssl.SSLContext(protocol)
    context.minimum_version = minimum
    context.verify_mode = ssl.CERT_REQUIRED
    if not trust.strip():
        raise ConfigError("no trust anchors to verify peers with")
    context.load_verify_locations(cadata=trust)
    return context


def _add_crls(context: ssl.SSLContext, crls: str | None) -> None:
    """Check the peer's certificate against its issuer's CRL; a missing CRL fails closed."""
    if crls is None:
        return
    if crls:
        # ``cadata`` takes certificates only; OpenSSL's file lookup also reads CRLs.
        with tempfile.NamedTemporaryFile("w", suffix=".pem") as crl_file:
            crl_file.write(crls)
            crl_file.flush()
            context.load_verify_locations(cafile=crl_file.name)
    context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF


def _load_identity(context: ssl.SSLContext, identity: Identity | None) -> None:
    if identity is None:
        return
    chain, key = identity.chain.resolve(), identity.key.resolve()
    try:
        context.load_cert_chain(chain, key, identity.password)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the TLS identity {chain}: {exc}") from exc


def client_context(
    *,
    trust: str,
    identity: Identity | None = None,
    crls: str | None = None,
    check_hostname: bool = True,
    minimum: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3,
) -> ssl.SSLContext:
    """A device's context: verifies the server against ``trust`` (PEM), presents ``identity``.

    ``crls`` (PEM, possibly empty) turns on the CRL check of the server's certificate.
    """
    context = _base(Side.SERVER_AUTH, trust, minimum)
    context.check_hostname = check_hostname
    _add_crls(context, crls)
    _load_identity(context, identity)
    return context


def server_context(
    *,
    trust: str,
    identity: Identity,
    crls: str | None = None,
    minimum: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3,
) -> ssl.SSLContext:
    """A service's context: requires a client certificate that chains to ``trust`` (PEM).

    ``crls`` (PEM, possibly empty) turns on the CRL check of each client's certificate.
    """
    context = _base(Side.CLIENT_AUTH, trust, minimum)
    _add_crls(context, crls)
    _load_identity(context, identity)
    return context


def peer_certificate(connection: ssl.SSLSocket | ssl.SSLObject) -> x509.Certificate:
    """The verified certificate the peer presented in the handshake."""
    der = connection.getpeercert(binary_form=True)
    if not der:
        raise PeerRefused("the peer presented no certificate", reason="no_certificate")
    return x509.load_der_x509_certificate(der)


def device_id_of(cert: x509.Certificate, uri_prefix: str = DEVICE_URI_PREFIX) -> str:
    """The device ID a verified certificate stands for: its URI SAN, else its commonName."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        for uri in sans.get_values_for_type(x509.UniformResourceIdentifier):
            if uri.startswith(uri_prefix) and len(uri) > len(uri_prefix):
                return uri[len(uri_prefix) :]
    except x509.ExtensionNotFound:
        pass
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if names and isinstance(names[0].value, str) and names[0].value:
        return names[0].value
    raise PeerRefused("the peer's certificate names no device", reason="no_device_id")


class Channel:
    """A TLS context for one side that follows identity, trust and CRL changes.

    ``trust`` is a PEM bundle file (re-read when it changes) or a callable returning PEM text.
    ``intermediates`` are CA certificates that may issue peers (for the post-handshake OCSP
    check; the trust bundle's certificates are always included).
    """

    def __init__(
        self,
        side: Literal["client", "server"],
        *,
        trust: Path | Callable[[], str],
        identity: Identity | None = None,
        crls: CrlCache | None = None,
        revocation: RevocationChecker | None = None,
        intermediates: Sequence[x509.Certificate] = (),
        check_hostname: bool = True,
        minimum: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3,
        clock: Clock | None = None,
    ) -> None:
        if side == "server" and identity is None:
            raise ConfigError("a server context needs an identity")
        self.side = side
        self._trust = trust
        self._identity = identity
        self._crls = crls
        self._revocation = revocation
        self._intermediates = tuple(intermediates)
        self._check_hostname = check_hostname
        self._minimum = minimum
        self._clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._stamp: object = None
        self._context: ssl.SSLContext | None = None
        self._anchors: list[x509.Certificate] = []
        self.generation = 0  # how many contexts were built

    def _trust_pem(self) -> str:
        if isinstance(self._trust, Path):
            try:
                return self._trust.read_text()
            except OSError as exc:
                raise ConfigError(f"cannot read the trust anchors {self._trust}: {exc}") from exc
        return self._trust()

    def _current_stamp(self) -> object:
        identity = self._identity
        return (
            file_stamp(self._trust) if isinstance(self._trust, Path) else self._trust(),
            None if identity is None else (file_stamp(identity.chain), file_stamp(identity.key)),
            None if self._crls is None else (self._crls.refresh(), self._crls.version)[1],
        )

    def _build(self) -> ssl.SSLContext:
        trust = self._trust_pem()
        crls = None if self._crls is None else self._crls.pem()
        if self.side == "client":
            context = client_context(
                trust=trust,
                identity=self._identity,
                crls=crls,
                check_hostname=self._check_hostname,
                minimum=self._minimum,
            )
        else:
            assert self._identity is not None
            context = server_context(
                trust=trust, identity=self._identity, crls=crls, minimum=self._minimum
            )
            context.sni_callback = self._switch
        self._anchors = x509.load_pem_x509_certificates(trust.encode())
        return context

    def refresh(self) -> bool:
        """Rebuild the context if the identity, trust or CRLs changed; whether it was."""
        with self._lock:
            stamp = self._current_stamp()
            if self._context is not None and stamp == self._stamp:
                return False
            context = self._build()
            self._context, self._stamp = context, stamp
            self.generation += 1
        log.info("TLS %s context rebuilt (generation %d)", self.side, self.generation)
        return True

    def context(self) -> ssl.SSLContext:
        """The current context, rebuilt first if anything it depends on changed."""
        self.refresh()
        assert self._context is not None
        return self._context

    def _switch(
        self, connection: ssl.SSLObject | ssl.SSLSocket, name: str | None, used: ssl.SSLContext
    ) -> None:
        """SNI callback: run the new handshake on the newest context (RFC 6066 section 3)."""
        try:
            current = self.context()
        except ConfigError as exc:  # keep serving with the context in use
            log.error("TLS context refresh failed: %s", exc.message)
            return
        if current is not used:
            connection.context = current

    def check_peer(self, connection: ssl.SSLSocket | ssl.SSLObject) -> x509.Certificate:
        """After the handshake: the peer's certificate, refused if OCSP or the CRL says so."""
        cert = peer_certificate(connection)
        if self._revocation is not None:
            issuer = issuer_of(cert, [*self._intermediates, *self._anchors])
            if issuer is None:
                raise PeerRefused("the peer's issuer is not a known CA", reason="unknown_issuer")
            try:
                self._revocation.check(cert, issuer)
            except PeerRefused as exc:
                log.warning("TLS peer %s refused: %s", cert.subject.rfc4514_string(), exc.message)
                raise
        return cert

    def peer_device_id(self, connection: ssl.SSLSocket | ssl.SSLObject) -> str:
        """The device ID of a peer that passed :meth:`check_peer`."""
        return device_id_of(self.check_peer(connection))
