"""Linting: the to-be-signed certificate before the CA key signs it, and issued ones later.

A draft is the very certificate about to be issued (same builder: serial, names, extensions)
signed by a throwaway key of the CA's algorithm, so a lint failure never reaches the CA's key
backend (an HSM signature is not wasted, and what is linted is what would be issued).
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from iotpki.core import policy
from iotpki.core.authority._base import DER, AuthorityBase, SigningCA, tbs_builder
from iotpki.core.keytypes import algorithm_of, generate_private_key, signature_hash
from iotpki.core.models import LintFinding
from iotpki.errors import ConfigError, PolicyViolation

_LINT_BLOCKING = ("ERROR", "FATAL")


class Lint(AuthorityBase):
    """Pre-issuance lint of drafts, a profile's template check, and background lint."""

    def _lint_key(self, signing: SigningCA) -> CertificateIssuerPrivateKeyTypes:
        algorithm = algorithm_of(signing.certificate.public_key())
        if algorithm is None:
            raise ConfigError(f"CA {signing.record.name!r} has a key type iotpki cannot lint")
        with self._lock:
            key = self._lint_keys.get(algorithm)
            if key is None:
                key = self._lint_keys[algorithm] = generate_private_key(algorithm)
        return key

    def _lint_findings(
        self, signing: SigningCA, builder: x509.CertificateBuilder
    ) -> list[LintFinding]:
        """The blocking findings on ``builder``'s certificate, signed by a throwaway key."""
        assert self._linter is not None
        lint_key = self._lint_key(signing)
        draft = builder.sign(lint_key, signature_hash(lint_key))
        return [
            f for f in self._linter.lint(draft.public_bytes(DER)) if f.severity in _LINT_BLOCKING
        ]

    def _pre_issuance_lint(
        self, profile: policy.Profile, signing: SigningCA, builder: x509.CertificateBuilder
    ) -> None:
        """Refuse the certificate ``builder`` would make if lint finds an error in it."""
        if self._linter is None or profile.lint == "off":
            return
        if profile.lint == "sample" and self._rng.random() >= profile.lint_sample_rate:
            return
        errors = self._lint_findings(signing, builder)
        if errors:
            raise PolicyViolation(
                f"pre-issuance lint failed: {errors[0].code}",
                findings=[f.code for f in errors],
            )

    def _check_template(self, profile: policy.Profile, signing: SigningCA) -> None:
        """Lint a sample certificate of this profile from this CA once, before first use."""
        key = (profile.name, signing.record.name)
        if self._linter is None or key in self._templates_checked:
            return
        sample = tbs_builder(
            signing, *policy.template_request(profile, self._clock.now()), self._config
        )
        errors = self._lint_findings(signing, sample)
        if errors:
            raise ConfigError(
                f"profile {profile.name} fails lint with CA {signing.record.name}: "
                + ", ".join(f.code for f in errors),
                profile=profile.name,
            )
        with self._lock:
            self._templates_checked.add(key)

    def lint_pending(self, limit: int = 200) -> int:
        """Lint certificates not linted yet and keep the findings; returns how many."""
        if self._linter is None:
            return 0
        pending = self._store.certificates_to_lint(limit)
        for record in pending:
            self._store.record_lint(record.ca_name, record.serial, self._linter.lint(record.der))
        return len(pending)
