"""The device agent: bootstrap trust, enroll, renew before expiry, keep trust anchors current.

Depends on the EST codec and the core's data types only; it never imports the server.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import random
import shlex
import ssl
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID

from iotpki.agent.client import EstClient, EstPending, EstRefused, EstUnreachable, RenewalInfo
from iotpki.agent.cmp import CmpClient
from iotpki.agent.config import AgentConfig
from iotpki.agent.mqtt import MqttClient, Signer
from iotpki.agent.store import Identity, IdentityStore, pem
from iotpki.core.keytypes import generate_private_key, signature_hash
from iotpki.core.models import KeyAlgorithm, KeyType
from iotpki.core.x509util import issued_by
from iotpki.errors import ConfigError, IotpkiError

if TYPE_CHECKING:
    from iotpki.keys.pkcs11 import Pkcs11Backend
    from iotpki.keys.tpm import TpmBackend

__all__ = ["Agent", "AgentClock", "ExitCode", "Status", "SystemAgentClock", "tpm_key_ref"]

log = logging.getLogger("iotpki.agent")
_DER = serialization.Encoding.DER

Enroll = Callable[
    [x509.CertificateSigningRequest, CertificateIssuerPrivateKeyTypes], x509.Certificate
]
"""Sends the request for a new key (its CSR, and the key itself for a CMP proof of possession)."""
Client = EstClient | MqttClient
_TPM_BLOB = "key.tpmkey"
_ARI_MAX_WAIT = 6 * 3600  # seconds: the longest a Retry-After keeps the agent from asking


def tpm_key_ref(generation_dir: Path, stored: str) -> str:
    """The ``tpm:`` key reference of a generation's ``key.uri`` (relative to the generation)."""
    path = Path(stored.removeprefix("tpm:"))
    return f"tpm:{path if path.is_absolute() else generation_dir / path}"


class ExitCode(enum.IntEnum):
    """Exit statuses of ``iotpki agent`` commands."""

    OK = 0
    ERROR = 1  # configuration or local failure
    NOT_ENROLLED = 3
    EXPIRED = 4
    REFUSED = 5  # the server refused the request (4xx)
    PENDING = 6  # waiting for an operator's approval
    UNREACHABLE = 7


class AgentClock(Protocol):
    """Time as the agent sees it, and a way to wait that a stop event interrupts."""

    def now(self) -> datetime:
        """The current UTC time."""
        ...

    def sleep(self, seconds: float, stop: threading.Event) -> bool:
        """Wait ``seconds``; True if ``stop`` was set meanwhile."""
        ...


class SystemAgentClock:
    """The real clock."""

    def now(self) -> datetime:
        """The current UTC time."""
        return datetime.now(UTC)

    def sleep(self, seconds: float, stop: threading.Event) -> bool:
        """Wait on the stop event."""
        return stop.wait(max(0.0, seconds))


@dataclass(frozen=True)
class Status:
    """What the agent holds right now."""

    enrolled: bool
    expired: bool = False
    serial: str | None = None
    not_after: datetime | None = None
    renew_at: datetime | None = None

    @property
    def exit_code(self) -> ExitCode:
        """The status as an exit code."""
        if not self.enrolled:
            return ExitCode.NOT_ENROLLED
        return ExitCode.EXPIRED if self.expired else ExitCode.OK


def _fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(_DER)).hexdigest()


def accept_anchors(
    trusted: Sequence[x509.Certificate],
    offered: Sequence[x509.Certificate],
    pinned: str | None = None,
) -> list[x509.Certificate]:
    """The trusted set grown by the offered CA certificates that chain to it.

    A certificate is accepted if it is signed by an accepted one, if its fingerprint is the
    configured one, or if it is a self-signed twin (same subject and key) of an accepted
    certificate, as a rolled-over root cross-signed by the old one is.
    """
    accepted = list(trusted)
    pending = [c for c in offered if c not in accepted]
    grew = True
    while grew and pending:
        grew = False
        for cert in list(pending):
            ok = (pinned is not None and _fingerprint(cert) == pinned.lower()) or any(
                issued_by(cert, anchor) for anchor in accepted
            )
            if not ok and cert.issuer == cert.subject:
                ok = any(
                    a.subject == cert.subject and a.public_key() == cert.public_key()
                    for a in accepted
                ) and issued_by(cert, cert)
            if ok:
                accepted.append(cert)
                pending.remove(cert)
                grew = True
    for cert in pending:
        log.warning(
            "ignoring CA certificate that does not chain: %s", cert.subject.rfc4514_string()
        )
    return accepted


class Agent:
    """One device's agent over its configuration and state directory."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        clock: AgentClock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.clock = clock or SystemAgentClock()
        self.rng = rng or random.Random()
        self.store = IdentityStore(config.state_dir)
        self._jitter: dict[int, float] = {}
        self._pkcs11: Pkcs11Backend | None = None
        self._tpm_backend: TpmBackend | None = None
        self._algorithm: KeyAlgorithm | None = None  # what the CA asked for (csrattrs)
        # (serial, renewal information, when to ask again) of the current certificate
        self._renewal_info: tuple[int, RenewalInfo | None, datetime] | None = None

    # -- status ----------------------------------------------------------------------------

    def renew_at(self, cert: x509.Certificate) -> datetime:
        """When to renew: once ``renew_fraction`` of the lifetime remains, minus jitter."""
        start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
        life = (end - start).total_seconds()
        jitter = self._jitter.setdefault(
            cert.serial_number, self.rng.uniform(0, self.config.jitter_fraction)
        )
        return end - timedelta(seconds=life * (self.config.renew_fraction + jitter))

    def status(self) -> Status:
        """Enrolled or not, expired or not, and when the next renewal is due."""
        identity = self.store.load()
        if identity is None:
            return Status(enrolled=False)
        cert = identity.certificate
        return Status(
            enrolled=True,
            expired=self.clock.now() >= cert.not_valid_after_utc,
            serial=format(cert.serial_number, "x"),
            not_after=cert.not_valid_after_utc,
            renew_at=self.renew_at(cert),
        )

    # -- trust ------------------------------------------------------------------------------

    def _context(self, identity: Identity | None = None, *, idevid: bool = False) -> ssl.SSLContext:
        anchors = self.store.trust()
        if not anchors:
            raise ConfigError("no trust anchors: run `iotpki agent enroll` to bootstrap")
        context = ssl.create_default_context(cadata=pem(anchors).decode())
        if identity is not None:
            context.load_cert_chain(identity.chain_path, identity.key_path)
        elif idevid and self.config.idevid_cert and self.config.idevid_key:
            context.load_cert_chain(self.config.idevid_cert, self.config.idevid_key)
        return context

    def _client(self, context: ssl.SSLContext, signer: Signer | None = None) -> Client:
        """The EST client, or over MQTT the one that signs with (and connects as) ``signer``:
        the claim certificate or IDevID, else the current certificate."""
        config = self.config
        if not config.over_mqtt:
            return EstClient(config.server, context, config.label, config.timeout)
        if signer is None:
            signer = self._bootstrap_signer() if self.store.load() is None else self._signer()
            signer.present(context)
        return MqttClient(
            config.server, context, config.device_id, signer, config.mqtt_prefix, config.timeout
        )

    def _bootstrap_signer(self) -> Signer:
        """The claim certificate or IDevID a first enrollment over MQTT connects with."""
        config = self.config
        cert, key = (config.claim_cert, config.claim_key)
        if cert is None or key is None:
            cert, key = (config.idevid_cert, config.idevid_key)
        if cert is None or key is None:
            raise ConfigError("enrolling over MQTT needs claim_cert/claim_key or an IDevID")
        return Signer(cert, key)

    def _signer(self) -> Signer:
        """The current certificate and its key (held in a file), to renew over MQTT with."""
        identity = self.store.load()
        if identity is None:
            raise ConfigError("not enrolled")
        return Signer(identity.chain_path, identity.key_path)

    def bootstrap_trust(self) -> list[x509.Certificate]:
        """First contact (RFC 7030 section 4.1.1): trust a pre-installed bundle or ``cacerts``
        whose certificate matches the configured fingerprint."""
        if self.store.trust():
            return self.store.trust()
        if self.config.trust_bundle is not None:
            bundle = x509.load_pem_x509_certificates(self.config.trust_bundle.read_bytes())
            offered = self._client(
                ssl.create_default_context(cadata=pem(bundle).decode())
            ).cacerts()
            anchors = accept_anchors(bundle, offered)
            self.store.save_trust(anchors)
            log.info("trust bootstrapped from bundle %s", self.config.trust_bundle)
            return anchors
        pinned = self.config.ca_fingerprint
        if not pinned:
            raise ConfigError("set ca_fingerprint or trust_bundle for the first contact")
        # The server is not authenticated yet: the fingerprint check below is what counts.
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        offered = self._client(insecure).cacerts()
        anchors = accept_anchors([], offered, pinned.replace(":", ""))
        if not anchors:
            raise ConfigError("no CA certificate from cacerts matches ca_fingerprint")
        self._client(ssl.create_default_context(cadata=pem(anchors).decode())).cacerts()
        self.store.save_trust(anchors)
        log.info("trust bootstrapped by fingerprint: %d CA certificates", len(anchors))
        return anchors

    def refresh_trust(self) -> int:
        """Fetch ``cacerts`` and add the certificates that chain to what is trusted."""
        trusted = self.store.trust()
        offered = self._client(self._context()).cacerts()
        accepted = accept_anchors(trusted, offered, self.config.ca_fingerprint)
        added = len(accepted) - len(trusted)
        if added:
            self.store.save_trust(accepted)
            log.info("trust anchors refreshed: %d added", added)
        return added

    # -- keys -------------------------------------------------------------------------------

    def _new_key(self, generation_dir: Path) -> CertificateIssuerPrivateKeyTypes:
        algorithm = self._algorithm or KeyAlgorithm(self.config.key_algorithm)
        if self.config.key_store == "pkcs11":
            backend = self._token()
            key_ref = backend.generate(f"agent-{self.config.device_id}", algorithm)
            self.store.write_key_uri(generation_dir, key_ref)
            return backend.signer(key_ref)
        if self.config.key_store == "tpm":
            return self._new_tpm_key(generation_dir, algorithm)
        key = generate_private_key(algorithm)
        self.store.write_key(generation_dir, key)
        return key

    def _load_key(self, generation_dir: Path) -> CertificateIssuerPrivateKeyTypes:
        uri = generation_dir / "key.uri"
        if uri.is_file():
            ref = uri.read_text().strip()
            if ref.startswith("tpm:"):
                return self._tpm().signer(tpm_key_ref(generation_dir, ref))
            return self._token().signer(ref)
        key = serialization.load_pem_private_key((generation_dir / "key.pem").read_bytes(), None)
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | Ed25519PrivateKey):
            raise ConfigError(f"unsupported key type in {generation_dir}")
        return key

    def _token(self) -> Pkcs11Backend:
        if self._pkcs11 is None:
            from iotpki.keys.pkcs11 import Pkcs11Backend

            self._pkcs11 = Pkcs11Backend(
                self.config.pkcs11_module or "",
                self.config.pkcs11_token or "",
                self.config.pkcs11_pin or "",
            )
        return self._pkcs11

    def _tpm(self) -> TpmBackend:
        if self._tpm_backend is None:
            from iotpki.keys.tpm import TpmBackend

            self._tpm_backend = TpmBackend(self.config.tpm_tcti, self.config.state_dir / "tpm")
        return self._tpm_backend

    def _new_tpm_key(
        self, generation_dir: Path, algorithm: KeyAlgorithm
    ) -> CertificateIssuerPrivateKeyTypes:
        """A key made inside the TPM (fixedTPM, under the SRK); its SRK-wrapped blob is kept in
        the generation directory (``key.uri`` holds ``tpm:key.tpmkey``, relative to it, since
        the directory is renamed on commit), so it goes when the generation is pruned."""
        backend = self._tpm()
        made = backend.generate(f"new-{generation_dir.name}", algorithm)
        Path(made.removeprefix("tpm:")).replace(generation_dir / _TPM_BLOB)
        self.store.write_key_uri(generation_dir, f"tpm:{_TPM_BLOB}")
        return backend.signer(tpm_key_ref(generation_dir, f"tpm:{_TPM_BLOB}"))

    def close(self) -> None:
        """Release the TPM connection, if one was opened."""
        if self._tpm_backend is not None:
            self._tpm_backend.close()

    def _csr(self, key: CertificateIssuerPrivateKeyTypes) -> x509.CertificateSigningRequest:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.config.device_id)])
        builder = x509.CertificateSigningRequestBuilder().subject_name(name)
        return builder.sign(key, signature_hash(key))

    # -- enrollment -------------------------------------------------------------------------

    def enroll(self) -> Identity:
        """Initial enrollment (or re-bootstrap): IDevID if configured, else the secret."""
        self.bootstrap_trust()
        if self.config.over_mqtt:
            signer = self._bootstrap_signer()
            context = self._context()
            signer.present(context)
            client = self._client(context, signer)
            return self._obtain(lambda csr, _key: client.simpleenroll(csr), "enrolled over MQTT")
        use_idevid = self.config.idevid_cert is not None
        secret = None if use_idevid else self.config.secret()
        if not use_idevid and secret is None:
            raise ConfigError("no IDevID and no enrollment secret configured")
        client = self._client(self._context(idevid=use_idevid))
        return self._obtain(
            lambda csr, _key: client.simpleenroll(
                csr, None if secret is None else (self.config.device_id, secret)
            ),
            "enrolled with " + ("IDevID" if use_idevid else "enrollment secret"),
        )

    def renew(self) -> Identity:
        """Re-enroll with a new key (rekey), authenticated by the current certificate.

        Falls back to re-bootstrapping with the IDevID when the certificate has expired, or
        when the key is in a PKCS#11 token or a TPM (Python's ``ssl`` cannot sign a TLS
        handshake with a token key; for a TPM key see docs/tpm.md).
        """
        identity = self.store.load()
        if identity is None:
            raise ConfigError("not enrolled")
        expired = self.clock.now() >= identity.certificate.not_valid_after_utc
        if not expired and not self.config.over_mqtt:
            self._algorithm = self._asked_algorithm(identity)
        if not expired and self.config.renew_protocol == "cmp":
            return self._renew_over_cmp(identity)
        if expired or self.config.key_store in ("pkcs11", "tpm"):
            if self.config.idevid_cert is None:
                what = "expired" if expired else f"held in a {self.config.key_store} key store"
                raise ConfigError(f"the certificate is {what} and no IDevID is configured")
            log.info("re-bootstrapping with the IDevID")
            return self.enroll()
        if self.config.over_mqtt:
            client = self._client(self._context(identity), self._signer())  # TLS: the same cert
        else:
            client = self._client(self._context(identity))
        return self._obtain(lambda csr, _key: client.simplereenroll(csr), "renewed (rekeyed)")

    def _asked_algorithm(self, identity: Identity) -> KeyAlgorithm | None:
        """The key algorithm to renew with when the CA asks for another key type than the
        configured one (EST csrattrs, e.g. a rotation campaign's); None keeps the configured."""
        # The client certificate tells the CA whose key it is asked about (a file key only:
        # Python's TLS cannot sign with a token's or a TPM's key).
        file_key = self.config.key_store == "file"
        client = self._client(self._context(identity) if file_key else self._context())
        assert isinstance(client, EstClient)  # not over MQTT
        try:
            asked = client.csrattrs()
        except IotpkiError as exc:
            log.warning("no CSR attributes: %s", exc.message)
            return None
        configured = KeyAlgorithm(self.config.key_algorithm)
        if not asked or str(configured.key_type) in asked:
            return None
        for kind in asked:
            for algorithm in KeyAlgorithm:
                if str(algorithm.key_type) == kind and self._holdable(algorithm):
                    log.info("the CA asks for a %s key: renewing with %s", kind, algorithm)
                    return algorithm
        log.warning("the CA asks for %s keys, which this key store cannot hold", asked)
        return None

    def _holdable(self, algorithm: KeyAlgorithm) -> bool:
        """Whether the configured key store makes keys of this algorithm."""
        if self.config.key_store == "file":
            return True
        return algorithm.key_type in (KeyType.P256, KeyType.P384, KeyType.RSA)

    def _renew_over_cmp(self, identity: Identity) -> Identity:
        """A CMP key update signed with the current key, wherever that key is held."""
        client = CmpClient(
            self.config.server, self._context(), self.config.label, self.config.timeout
        )
        current_key = self._load_key(identity.directory)
        anchors = self.store.trust()
        return self._obtain(
            lambda _csr, key: client.key_update(identity.certificate, current_key, key, anchors),
            "renewed (rekeyed) over CMP",
        )

    def _obtain(self, request: Enroll, what: str) -> Identity:
        pending = self.store.take_pending()
        if pending is not None:
            # RFC 7030 section 4.2.3: after a 202, the client resends the same request.
            generation, csr = pending
            key = self._load_key(generation)
        else:
            generation = self.store.new_generation()
        try:
            if pending is None:
                key = self._new_key(generation)
                csr = self._csr(key)
            cert = request(csr, key)
            if cert.public_key() != key.public_key():
                raise ConfigError("the server returned a certificate for another key")
            chain = self._chain(cert)
            identity = self.store.commit(generation, cert, chain)
        except EstPending:
            self.store.keep_pending(generation, csr)
            raise
        except EstUnreachable:
            # Over MQTT the request ID is the CSR's: sent again, an answer that was lost (a
            # broker restart, a timeout) comes back as the certificate already issued.
            if self.config.over_mqtt:
                self.store.keep_pending(generation, csr)
            else:
                self.store.discard(generation)
            raise
        except BaseException:
            self.store.discard(generation)
            raise
        log.info(
            "%s: serial %x, valid until %s",
            what,
            cert.serial_number,
            cert.not_valid_after_utc.isoformat(),
        )
        self._post_renew()
        return identity

    def _chain(self, cert: x509.Certificate) -> list[x509.Certificate]:
        """The CA certificates from the issuer up to, not including, the self-signed root."""
        anchors = self.store.trust()
        chain: list[x509.Certificate] = []
        current = cert
        while current.issuer != current.subject:
            issuer = next((a for a in anchors if issued_by(current, a)), None)
            if issuer is None:
                raise ConfigError("the new certificate does not chain to a trusted CA")
            if issuer.issuer == issuer.subject or issuer in chain:
                break
            chain.append(issuer)
            current = issuer
        return chain

    def _post_renew(self) -> None:
        command = self.config.post_renew_command
        if not command:
            return
        result = subprocess.run(shlex.split(command), check=False, timeout=300)
        log.info("post-renewal command exited with %d", result.returncode)

    # -- daemon -----------------------------------------------------------------------------

    def step(self) -> float:
        """Do what is due now; return the seconds until the next look."""
        status = self.status()
        now = self.clock.now()
        window = self._renewal_window() if status.enrolled and not status.expired else None
        if not status.enrolled:
            self.enroll()
        elif (
            status.expired
            or (status.renew_at is not None and now >= status.renew_at)
            or (window is not None and now >= window.start)
        ):
            # Anchors first: after a CA rollover the new certificate chains only to the new root.
            try:
                self.refresh_trust()
            except (EstUnreachable, EstRefused) as exc:
                log.warning("trust refresh failed: %s", exc.message)
            self.renew()
        status = self.status()
        assert status.renew_at is not None
        wait = (status.renew_at - self.clock.now()).total_seconds()
        return max(0.0, min(wait, self.config.check_interval))

    def _renewal_window(self) -> RenewalInfo | None:
        """The CA's suggested renewal window for the current certificate (RFC 9773; a rotation
        campaign's window when one replaces it): asked on a wake once the last answer's
        Retry-After has passed (at most six hours), kept for the certificate until then; None
        when there is none or the server cannot say (over MQTT the agent keeps its own
        schedule)."""
        identity = self.store.load()
        if identity is None or self.config.over_mqtt:
            return None
        serial = identity.certificate.serial_number
        now = self.clock.now()
        kept = self._renewal_info
        if kept is not None and kept[0] == serial and now < kept[2]:
            return kept[1]
        client = self._client(self._context())
        assert isinstance(client, EstClient)
        try:
            info = client.renewal_window(identity.certificate)
        except IotpkiError as exc:
            log.warning("no renewal information: %s", exc.message)
            return None
        wait = min(info.retry_after or 0, _ARI_MAX_WAIT) if info is not None else 0
        self._renewal_info = (serial, info, now + timedelta(seconds=wait))
        return info

    def backoff(self, failures: int) -> float:
        """Capped exponential back-off with full jitter over its upper half."""
        growth = 2.0 ** min(failures - 1, 30)
        ceiling = min(self.config.backoff_max, self.config.backoff_initial * growth)
        return ceiling * self.rng.uniform(0.5, 1.0)

    def run(self, stop: threading.Event) -> ExitCode:
        """Keep the identity current until ``stop`` is set or nothing more can be done."""
        failures = 0
        while not stop.is_set():
            try:
                wait = self.step()
                failures = 0
            except EstPending as exc:
                log.info("enrollment pending approval; asking again in %ds", exc.retry_after)
                wait = float(exc.retry_after)
            except EstUnreachable as exc:
                failures += 1
                wait = self.backoff(failures)
                log.warning("server unreachable (%s); retry in %.0fs", exc.message, wait)
            except EstRefused as exc:
                failures += 1
                if self.status().expired or not self.status().enrolled:
                    log.error("server refused: %s", exc.message)
                    return ExitCode.REFUSED
                wait = self.backoff(failures)
                log.warning("server refused renewal (%s); retry in %.0fs", exc.message, wait)
            except IotpkiError as exc:
                log.error("%s", exc.message)
                return self.status().exit_code if self.status().expired else ExitCode.ERROR
            if self.clock.sleep(wait, stop):
                break
        return ExitCode.OK
