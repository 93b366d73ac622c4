"""ACME resources on the wire (RFC 8555 section 7.1): identifiers, orders, authorizations,
challenges, and the names a CSR requests. Pure functions over JSON-ready values.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from iotpki.core.acme_ports import AcmeAuthorization, AcmeChallenge, AcmeOrder, Identifier
from iotpki.core.device_id import is_device_id
from iotpki.core.models import RevocationReason
from iotpki.protocols.acme.jws import b64url_decode, b64url_encode
from iotpki.protocols.acme.problems import AcmeProblem

__all__ = [
    "CHALLENGE_TYPES",
    "authorization_json",
    "cert_id",
    "challenge_json",
    "csr_identifiers",
    "order_json",
    "parse_cert_id",
    "parse_identifiers",
    "revocation_reason",
    "timestamp",
]

_DNS_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
# RFC 4108 HardwareModuleName as draft-ietf-acme-device-attest names it: "<hwType OID>:<hex>".
_HARDWARE_MODULE = re.compile(r"^[0-2](?:\.[0-9]{1,9}){1,20}:[0-9a-f]{2,128}$")
_DEVICE_KINDS = ("permanent-identifier", "hardware-module")
_MAX_IDENTIFIERS = 100

# Which challenges prove which identifier type: RFC 8555 section 8 (dns), RFC 8738 section 7
# (ip: http-01 and tls-alpn-01, never dns-01). Device identifiers are authorised by the
# account's EAB policy and need no challenge here, unless attestation roots are trusted: then
# they get device-attest-01 (``device_attest.challenge_types``).
CHALLENGE_TYPES: dict[str, tuple[str, ...]] = {
    "dns": ("http-01", "dns-01", "tls-alpn-01"),
    "ip": ("http-01", "tls-alpn-01"),
    "permanent-identifier": (),
    "hardware-module": (),
}

# RFC 5280 section 5.3.1 CRLReason codes, as revokeCert carries them (RFC 8555 section 7.6).
_REASONS = {
    0: RevocationReason.UNSPECIFIED,
    1: RevocationReason.KEY_COMPROMISE,
    3: RevocationReason.AFFILIATION_CHANGED,
    4: RevocationReason.SUPERSEDED,
    5: RevocationReason.CESSATION_OF_OPERATION,
    9: RevocationReason.PRIVILEGE_WITHDRAWN,
}


def timestamp(value: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _dns_name(value: str) -> str:
    name = value.lower()
    if name.startswith("*."):
        raise AcmeProblem("rejectedIdentifier", f"wildcard names are not issued: {value}")
    labels = name.split(".")
    if len(name) > 253 or len(labels) < 1 or not all(_DNS_LABEL.match(x) for x in labels):
        raise AcmeProblem("rejectedIdentifier", f"not a valid DNS name: {value!r}")
    return name


def _identifier(item: object) -> Identifier:
    if not isinstance(item, dict) or set(item) != {"type", "value"}:
        raise AcmeProblem("malformed", "an identifier is an object with type and value")
    kind, value = item["type"], item["value"]
    if not isinstance(kind, str) or not isinstance(value, str) or not value:
        raise AcmeProblem("malformed", "identifier type and value are strings")
    if kind == "dns":
        return ("dns", _dns_name(value))
    if kind == "ip":
        # RFC 8738 section 3: the textual form of the address; RFC 5952 for IPv6.
        try:
            return ("ip", str(ipaddress.ip_address(value)))
        except ValueError:
            raise AcmeProblem("malformed", f"not an IP address: {value!r}") from None
    if kind == "permanent-identifier":
        if not is_device_id(value):
            raise AcmeProblem("rejectedIdentifier", f"not a valid device serial: {value!r}")
        return ("permanent-identifier", value)
    if kind == "hardware-module":
        if not _HARDWARE_MODULE.match(value.lower()):
            raise AcmeProblem(
                "rejectedIdentifier", f"not a hardware module name (<OID>:<hex>): {value!r}"
            )
        return ("hardware-module", value.lower())
    raise AcmeProblem("unsupportedIdentifier", f"identifier type {kind!r} is not supported")


def parse_identifiers(value: object) -> list[Identifier]:
    """The identifiers of a newOrder request (section 7.4), normalised and de-duplicated."""
    if not isinstance(value, list) or not value:
        raise AcmeProblem("malformed", "identifiers must be a non-empty array")
    if len(value) > _MAX_IDENTIFIERS:
        raise AcmeProblem("rejectedIdentifier", f"at most {_MAX_IDENTIFIERS} identifiers")
    identifiers: list[Identifier] = []
    errors: list[dict[str, Any]] = []
    for item in value:
        try:
            identifier = _identifier(item)
        except AcmeProblem as problem:
            if isinstance(item, dict) and problem.kind != "malformed":
                errors.append({**problem.document(), "identifier": item})
                continue
            raise
        if identifier not in identifiers:
            identifiers.append(identifier)
    if errors:
        if len(errors) == 1:
            only = errors[0]
            raise AcmeProblem(only["type"].rsplit(":", 1)[1], only["detail"])
        raise AcmeProblem(
            "rejectedIdentifier", "several identifiers are refused", subproblems=errors
        )
    kinds = {kind in _DEVICE_KINDS for kind, _ in identifiers}
    if len(kinds) > 1:
        raise AcmeProblem("rejectedIdentifier", "device identifiers cannot be combined with names")
    if sum(kind in _DEVICE_KINDS for kind, _ in identifiers) > 1:
        raise AcmeProblem("rejectedIdentifier", "one device identifier per order")
    return sorted(identifiers)


def csr_identifiers(csr: x509.CertificateSigningRequest) -> set[Identifier]:
    """The names a CSR asks for: its commonName and DNS/IP SANs (section 7.4).

    Any other SAN type comes back as ("other", ...) so that it never matches an order.
    """
    names: set[Identifier] = set()
    for attribute in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        names.add(("cn", str(attribute.value)))
    try:
        sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        sans = x509.SubjectAlternativeName([])
    except ValueError as exc:
        raise AcmeProblem("badCSR", f"the CSR's extensions do not parse: {exc}") from exc
    for name in sans:
        if isinstance(name, x509.DNSName):
            names.add(("dns", name.value.lower()))
        elif isinstance(name, x509.IPAddress):
            names.add(("ip", str(name.value)))
        else:
            names.add(("other", str(name.value)))
    return names


def revocation_reason(value: object) -> RevocationReason:
    """The RFC 5280 reason of a revokeCert request (absent means unspecified)."""
    if value is None:
        return RevocationReason.UNSPECIFIED
    if isinstance(value, bool) or not isinstance(value, int) or value not in _REASONS:
        raise AcmeProblem(
            "badRevocationReason",
            f"revocation reason {value!r} is not accepted",
            extra={"allowed": sorted(_REASONS)},
        )
    return _REASONS[value]


def cert_id(certificate: x509.Certificate) -> str:
    """The RFC 9773 section 4.1 CertID: base64url(AKI keyIdentifier) '.' base64url(serial)."""
    try:
        aki = certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound:
        raise AcmeProblem("malformed", "the certificate has no authority key identifier") from None
    if aki.key_identifier is None:
        raise AcmeProblem("malformed", "the authority key identifier has no keyIdentifier")
    serial = certificate.serial_number
    serial_bytes = serial.to_bytes(serial.bit_length() // 8 + 1, "big")
    return f"{b64url_encode(aki.key_identifier)}.{b64url_encode(serial_bytes)}"


def parse_cert_id(value: str) -> tuple[bytes, str]:
    """(keyIdentifier, serial in lower-case hex) from an RFC 9773 CertID."""
    aki_text, dot, serial_text = value.partition(".")
    if not dot or not aki_text or not serial_text or len(value) > 256:
        raise AcmeProblem("malformed", "a renewalInfo CertID is AKI '.' serial, base64url")
    key_id = b64url_decode(aki_text)
    serial_bytes = b64url_decode(serial_text)
    if not serial_bytes or (serial_bytes[0] & 0x80):
        raise AcmeProblem("malformed", "the CertID serial must be a positive DER integer")
    return key_id, format(int.from_bytes(serial_bytes, "big"), "x")


def order_json(order: AcmeOrder, base: str, authz_ids: list[str]) -> dict[str, Any]:
    """An order object (section 7.1.3)."""
    body: dict[str, Any] = {
        "status": order.status,
        "expires": timestamp(order.expires),
        "identifiers": [{"type": t, "value": v} for t, v in order.identifiers],
        "authorizations": [f"{base}/authz/{a}" for a in authz_ids],
        "finalize": f"{base}/order/{order.order_id}/finalize",
    }
    if order.certificate_serial is not None and order.status == "valid":
        body["certificate"] = f"{base}/cert/{order.order_id}"
    if order.error:
        body["error"] = order.error
    if order.replaces:
        body["replaces"] = order.replaces
    return body


def challenge_json(challenge: AcmeChallenge, base: str) -> dict[str, Any]:
    """A challenge object (section 7.1.5, 8.3, 8.4; RFC 8737 section 3)."""
    body: dict[str, Any] = {
        "type": challenge.type,
        "url": f"{base}/chall/{challenge.challenge_id}",
        "status": challenge.status,
        "token": challenge.token,
    }
    if challenge.validated_at is not None:
        body["validated"] = timestamp(challenge.validated_at)
    if challenge.error:
        body["error"] = challenge.error
    return body


def authorization_json(
    authz: AcmeAuthorization, challenges: list[AcmeChallenge], base: str
) -> dict[str, Any]:
    """An authorization object (section 7.1.4); a valid one lists only its valid challenge."""
    shown = challenges
    if authz.status == "valid":
        shown = [c for c in challenges if c.status == "valid"]
    elif authz.status == "invalid":
        shown = [c for c in challenges if c.status == "invalid"] or challenges
    return {
        "identifier": {"type": authz.identifier[0], "value": authz.identifier[1]},
        "status": authz.status,
        "expires": timestamp(authz.expires),
        "challenges": [challenge_json(c, base) for c in shown],
    }
