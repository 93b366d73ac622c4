"""Certificate linting: RFC 5280 checks on what the CA issues."""

from iotpki.lint.pkilint import DECODING_FAILED_CODE, LintStatus, PkilintLinter, worst_severity

__all__ = ["DECODING_FAILED_CODE", "LintStatus", "PkilintLinter", "worst_severity"]
