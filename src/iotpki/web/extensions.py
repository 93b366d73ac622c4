"""Readable text for the X.509 extensions a certificate page shows (RFC 5280 section 4.2)."""

from __future__ import annotations

from cryptography import x509

__all__ = ["describe_extension"]

_KEY_USAGES = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
)


def _oid(oid: x509.ObjectIdentifier) -> str:
    name = getattr(oid, "_name", "Unknown OID")
    return oid.dotted_string if name == "Unknown OID" else str(name)


def _name(general: x509.GeneralName) -> str:
    kinds = {
        x509.DNSName: "DNS",
        x509.UniformResourceIdentifier: "URI",
        x509.RFC822Name: "email",
        x509.IPAddress: "IP",
        x509.RegisteredID: "RID",
    }
    kind = kinds.get(type(general), type(general).__name__)
    value = general.value
    if isinstance(value, x509.Name):
        value = value.rfc4514_string()
    elif isinstance(value, x509.ObjectIdentifier):
        value = _oid(value)
    return f"{kind}:{value}"


def _points(points: x509.CRLDistributionPoints | x509.FreshestCRL) -> str:
    return ", ".join(_name(n) for p in points for n in (p.full_name or ()))


def describe_extension(value: x509.ExtensionType) -> str:
    """One line describing an extension's value, as ``openssl x509 -text`` would."""
    if isinstance(value, x509.BasicConstraints):
        path = "" if value.path_length is None else f", path length {value.path_length}"
        return f"CA: {str(value.ca).lower()}{path}"
    if isinstance(value, x509.KeyUsage):
        used = [u.replace("_", " ") for u in _KEY_USAGES if getattr(value, u)]
        if value.key_agreement:
            used += [
                u.replace("_", " ") for u in ("encipher_only", "decipher_only") if getattr(value, u)
            ]
        return ", ".join(used)
    if isinstance(value, x509.ExtendedKeyUsage):
        return ", ".join(_oid(oid) for oid in value)
    if isinstance(value, x509.SubjectAlternativeName | x509.IssuerAlternativeName):
        return ", ".join(_name(n) for n in value)
    if isinstance(value, x509.SubjectKeyIdentifier):
        return value.digest.hex(":")
    if isinstance(value, x509.AuthorityKeyIdentifier):
        return f"keyid {value.key_identifier.hex(':')}" if value.key_identifier else "-"
    if isinstance(value, x509.AuthorityInformationAccess):
        return ", ".join(f"{_oid(d.access_method)} {_name(d.access_location)}" for d in value)
    if isinstance(value, x509.CRLDistributionPoints | x509.FreshestCRL):
        return _points(value)
    if isinstance(value, x509.CertificatePolicies):
        return ", ".join(_oid(p.policy_identifier) for p in value)
    return str(value)[:600]
