"""RFC 5280 linting of issued certificates with pkilint's PKIX certificate validators.

The validator container is the one ``lint_pkix_cert`` builds (pkilint 0.13), made once per
``PkilintLinter``. pkilint's validators keep no per-document state (all of it lives on the
decoded document, which is made afresh for each call), and pkilint's own REST server shares one
container across its worker threads, so ``lint`` may be called from several threads at once.

pkilint checks URIs with a URL validator, which refuses every URN; RFC 5280 section 4.2.1.6
allows any RFC 3986 URI, and device identities are URNs (RFC 9039), so an
``pkix.invalid_uri_syntax`` finding on a well-formed URN (RFC 8141) is dropped as a false
positive.

pkilint also requires a dNSName to hold a dot, refusing single-label names such as
``localhost``; RFC 5280 section 4.2.1.6 asks only for the preferred name syntax of RFC 1034
section 3.5 (with RFC 1123's leading digits), which a single label satisfies. A private PKI
names its own listeners and internal hosts that way, so ``pkix.invalid_domain_name_syntax`` on
a well-formed single-label name is dropped too; any other malformed name is still an ERROR.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Literal

from pkilint import loader
from pkilint.pkix import certificate, extension, name

from iotpki.core.models import LintFinding

__all__ = ["DECODING_FAILED_CODE", "LintStatus", "PkilintLinter", "worst_severity"]

LintStatus = Literal["pass", "warn", "error"]
"""A certificate's overall lint verdict, as ``CertificateRecord.lint_status`` keeps it."""

DECODING_FAILED_CODE = "itu.invalid_asn1_syntax"
"""Code of the FATAL finding for bytes that are not a DER X.509 certificate (pkilint's own)."""

# RFC 8141 assigned-name: "urn:" NID ":" NSS (NSS without the optional r/q/f components).
_URN = re.compile(
    r'"urn:[A-Za-z0-9][A-Za-z0-9-]{0,30}[A-Za-z0-9]:'
    r"""(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})+"$"""
)

# pkilint's message for a dNSName, and an RFC 1034/1123 label: letters, digits, inner hyphens.
_DOMAIN_MESSAGE = re.compile(r'^Invalid domain name syntax: "(?P<name>[^"]*)"$')
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")

# pkilint's ValidationFindingSeverity names, most severe first.
_RANK = {"FATAL": 0, "ERROR": 1, "WARNING": 2, "NOTICE": 3, "INFO": 4, "DEBUG": 5}


class PkilintLinter:
    """Lints one DER certificate against RFC 5280 (the ``Linter`` port)."""

    def __init__(self) -> None:
        self._validator: Any = certificate.create_pkix_certificate_validator_container(
            certificate.create_decoding_validators(
                name.ATTRIBUTE_TYPE_MAPPINGS, extension.EXTENSION_MAPPINGS
            ),
            [
                certificate.create_issuer_validator_container([]),
                certificate.create_validity_validator_container(),
                certificate.create_subject_validator_container([]),
                certificate.create_extensions_validator_container([]),
                certificate.create_spki_validator_container([]),
            ],
        )

    def lint(self, der: bytes) -> list[LintFinding]:
        """Every finding pkilint reports, or one FATAL finding if ``der`` does not decode."""
        try:
            document = loader.load_der_certificate(der, "certificate")
        except ValueError as exc:  # SubstrateDecodingFailedError is a ValueError
            return [LintFinding("FATAL", DECODING_FAILED_CODE, "certificate", str(exc))]
        findings = [
            LintFinding(
                severity=description.finding.severity.name,
                code=description.finding.code,
                node=result.node.path,
                message=description.message or "",
            )
            for result in self._validator.validate(document.root)
            for description in result.finding_descriptions
        ]
        return [f for f in findings if not _is_false_positive(f)]


def worst_severity(findings: Iterable[LintFinding]) -> LintStatus:
    """``"error"`` for any ERROR or FATAL, ``"warn"`` for a WARNING, ``"pass"`` otherwise."""
    worst = min((_rank(finding.severity) for finding in findings), default=len(_RANK))
    if worst <= _RANK["ERROR"]:
        return "error"
    if worst == _RANK["WARNING"]:
        return "warn"
    return "pass"


def _rank(severity: str) -> int:
    try:
        return _RANK[severity]
    except KeyError:
        raise ValueError(f"unknown lint severity {severity!r}") from None


def _is_false_positive(finding: LintFinding) -> bool:
    if finding.code == "pkix.invalid_uri_syntax":
        return bool(_URN.search(finding.message))
    if finding.code == "pkix.invalid_domain_name_syntax":
        match = _DOMAIN_MESSAGE.match(finding.message)
        return match is not None and bool(_LABEL.match(match.group("name")))
    return False
