"""TPM attestation for one installation: which roots ACME device-attest-01 trusts, the EK
manufacturer roots the AK CA trusts, its HMAC key, and the AK CA service itself.

Where things live:

- ``[attestation] roots``: PEM bundles of TPM-manufacturer / attestation-key CA roots;
- EK manufacturer roots registered with ``iotpki akca trust-ek-root``, in the store (read on
  every request, so no restart is needed and every replica trusts them at once);
- the key of the AK CA's stateless challenges is an installation secret sealed in the database
  (``keys.sealed``), so every replica checks the answers to every other's challenges.

Once an EK root is registered the AK CA's own issuing CA is a device-attest-01 root as well: an
AK certificate it issued proves the AK sits in a TPM whose EK chains to a registered root.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from iotpki.core.akca import AK_PROFILE, ActivationChallenge, AttestationKeyCA
from iotpki.core.akca import ak_certificate_decision as _ak_decision
from iotpki.core.authority import Authority, Issued
from iotpki.core.policy import parse_duration
from iotpki.core.ports.shared import OnceRegistry, TrustedRootStore
from iotpki.errors import ConfigError, MalformedInput
from iotpki.settings import Settings

__all__ = ["AKCA_SECRET", "AkcaService", "AttestationTrust", "EkRoots", "load_pem_bundle"]

_EK_ROOT = "tpm-ek"  # the kind of the registered roots
AKCA_SECRET = "akca-hmac"  # the name of the challenge key among the sealed secrets


def load_pem_bundle(path: Path) -> list[x509.Certificate]:
    """Every certificate of a PEM file; ConfigError when it is missing or holds none."""
    try:
        certificates = x509.load_pem_x509_certificates(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read attestation roots {path}: {exc}") from exc
    except ValueError as exc:
        raise ConfigError(f"{path} holds no PEM certificate: {exc}") from exc
    return certificates


def _fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


class EkRoots:
    """The EK manufacturer roots the AK CA trusts, registered in the store for every replica.

    Roots an older release kept as PEM files under ``<home>/akca/ek-roots`` are registered
    from there the first time the home is opened.
    """

    def __init__(self, store: TrustedRootStore, home: Path) -> None:
        self._store = store
        legacy = home / "akca" / "ek-roots"
        if legacy.is_dir():
            now = datetime.now(UTC)
            for path in sorted(legacy.glob("*.pem")):
                for cert in load_pem_bundle(path):
                    der = cert.public_bytes(serialization.Encoding.DER)
                    store.add_trusted_root(_EK_ROOT, _fingerprint(cert), der, now)

    def add(self, cert: x509.Certificate, now: datetime) -> str:
        """Register a CA certificate valid now; returns its SHA-256 fingerprint."""
        try:
            constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            constraints = None
        if constraints is None or not constraints.ca:
            raise MalformedInput("an EK manufacturer root must be a CA certificate")
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise MalformedInput("the EK manufacturer root is not valid now")
        fingerprint = _fingerprint(cert)
        der = cert.public_bytes(serialization.Encoding.DER)
        self._store.add_trusted_root(_EK_ROOT, fingerprint, der, now)
        return fingerprint

    def remove(self, fingerprint: str) -> bool:
        """Withdraw a registered root by fingerprint; False when there was none."""
        return self._store.remove_trusted_root(_EK_ROOT, fingerprint.lower()[:64])

    def certificates(self) -> list[x509.Certificate]:
        """The registered roots, in fingerprint order."""
        return [x509.load_der_x509_certificate(der) for der in self._store.trusted_roots(_EK_ROOT)]

    def any(self) -> bool:
        """Whether any root is registered."""
        return bool(self._store.trusted_roots(_EK_ROOT))


class AttestationTrust:
    """The roots device-attest-01 verifies against (configured bundles and the AK CA's CA)."""

    def __init__(self, settings: Settings, authority: Authority, ek_roots: EkRoots) -> None:
        self._authority = authority
        self._akca_ca = settings.attestation.akca_ca
        self._ek_roots = ek_roots
        self._configured = [
            cert
            for path in settings.attestation.roots
            for cert in load_pem_bundle(path if path.is_absolute() else settings.home / path)
        ]

    @property
    def akca_ca(self) -> str:
        """The CA that certifies attestation keys."""
        return self._akca_ca or self._authority.default_issuing_ca()

    def roots(self) -> list[x509.Certificate]:
        """The trusted roots now; empty means device-attest-01 is not offered."""
        roots = list(self._configured)
        if self._ek_roots.any():
            roots.append(self._authority.chain(self.akca_ca)[0])
        return roots


class AkcaService:
    """The AK CA of an installation: credential activation, then the AK certificate."""

    def __init__(
        self,
        settings: Settings,
        authority: Authority,
        ek_roots: EkRoots,
        secret: bytes,
        spent: OnceRegistry,
    ) -> None:
        self._authority = authority
        self._trust = AttestationTrust(settings, authority, ek_roots)
        self._ek_roots = ek_roots
        self._secret = secret
        self._spent = spent
        self._validity = parse_duration(settings.attestation.activation_validity)
        self._lifetime = parse_duration(settings.attestation.ak_lifetime)

    def _akca(self) -> AttestationKeyCA:
        return AttestationKeyCA(
            ek_roots=self._ek_roots.certificates(),
            secret_key=self._secret,
            clock=self._authority.clock,
            spent=self._spent,
            validity=self._validity,
        )

    def challenge(
        self, ek_chain: Sequence[x509.Certificate], ak_pub_area: bytes
    ) -> ActivationChallenge:
        """Seal a fresh credential to the EK and AK (TPM 2.0 Part 1 section 24, step 1)."""
        return self._akca().challenge(ek_chain, ak_pub_area)

    def activate(
        self,
        ek_chain: Sequence[x509.Certificate],
        ak_pub_area: bytes,
        nonce: bytes,
        issued_at: datetime,
        credential: bytes,
        *,
        actor: str,
    ) -> Issued:
        """Check the released credential, then issue and record the AK certificate."""
        activated = self._akca().activate(ek_chain, ak_pub_area, nonce, issued_at, credential)
        decision = _ak_decision(activated, self._authority.clock.now(), self._lifetime)
        return self._authority.issue_attestation_key(
            activated.ak.public_key,
            decision,
            AK_PROFILE,
            actor=actor,
            ca=self._trust.akca_ca,
        )
