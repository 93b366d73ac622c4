"""Issuance policy: profiles as data, and the one place that applies them to a CSR.

A profile names the keys it accepts, its lifetimes, the key usage and EKU it grants, how the
subject and SANs are formed, and how its certificates are linted. ``decide`` turns a CSR and a
request into a :class:`Decision` (subject, SANs, extensions, validity) or raises a
``PolicyViolation``; nothing else in iotpki decides what goes into a certificate.

Device identity scheme: the device ID is the subject commonName and is repeated as a URI SAN
``<uri_prefix><device-id>`` (by default ``urn:dev:ops:iotpki-<device-id>``, RFC 9039 style), so
that TLS peers can read it from either place.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from iotpki.core.csr import KeyRequest
from iotpki.core.device_id import is_device_id
from iotpki.core.keyquality import weaknesses
from iotpki.core.keytypes import (
    describe_key,
    generate_private_key,
    key_type_of,
    parse_key_type,
    signature_hash,
)
from iotpki.core.models import KeyAlgorithm, KeyType
from iotpki.errors import ConfigError, KeyRejected, PolicyViolation

__all__ = [
    "DEFAULT_PROFILES",
    "EKU_NAMES",
    "INTERNAL_SERVER_PROFILE",
    "Decision",
    "LintMode",
    "Profile",
    "check_public_key",
    "decide",
    "decide_renewal",
    "is_valid_name",
    "operational_profiles",
    "parse_duration",
    "profile_from_mapping",
    "template_request",
]

LintMode = Literal["always", "sample", "off"]
Identity = Literal["device", "server", "ca", "responder", "claim"]

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_DNS_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

_KEY_USAGE_NAMES = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
    "encipher_only",
    "decipher_only",
)
EKU_NAMES: dict[str, x509.ObjectIdentifier] = {
    "clientAuth": ExtendedKeyUsageOID.CLIENT_AUTH,
    "serverAuth": ExtendedKeyUsageOID.SERVER_AUTH,
    "codeSigning": ExtendedKeyUsageOID.CODE_SIGNING,
    "emailProtection": ExtendedKeyUsageOID.EMAIL_PROTECTION,
    "timeStamping": ExtendedKeyUsageOID.TIME_STAMPING,
    "OCSPSigning": ExtendedKeyUsageOID.OCSP_SIGNING,
    "cmcRA": x509.ObjectIdentifier("1.3.6.1.5.5.7.3.28"),  # RFC 6402: signs CMP answers
}
KEY_TYPES = tuple(KeyType)
_SAN_TYPES = ("dns", "ip", "uri", "email")


def parse_duration(text: str | int) -> timedelta:
    """``"30d"``, ``"12h"``, ``"90m"``, ``"2w"`` or a number of seconds, as a timedelta."""
    if isinstance(text, int):
        return timedelta(seconds=text)
    match = _DURATION.match(text)
    if not match:
        raise ConfigError(f"bad duration {text!r}: use e.g. 30d, 12h, 90m or 2w")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


@dataclass(frozen=True, slots=True)
class Profile:
    """A named set of rules for one kind of certificate."""

    name: str
    identity: Identity
    key_types: tuple[KeyType, ...]
    default_lifetime: timedelta
    max_lifetime: timedelta
    key_usage: tuple[str, ...]
    extended_key_usage: tuple[str, ...] = ()
    san_types: tuple[str, ...] = ()
    min_rsa_bits: int = 2048
    path_length: int | None = None
    ocsp_nocheck: bool = False
    organization: str | None = None
    uri_prefix: str = "urn:dev:ops:iotpki-"
    lint: LintMode = "sample"
    lint_sample_rate: float = 0.01
    backdate: timedelta = field(default=timedelta(minutes=1))
    # Issue only for keys a TPM attested (ACME device-attest-01): issue 9.
    require_attestation: bool = False
    # The PKI's own certificates (its TLS listener, OCSP responders, SCEP RAs): renewed by the
    # server itself, so kept apart from the fleet's expiry figures.
    operational: bool = False

    def __post_init__(self) -> None:
        for key_type in self.key_types:
            if key_type not in KEY_TYPES:
                raise ConfigError(f"profile {self.name}: unknown key type {key_type!r}")
        object.__setattr__(self, "key_types", tuple(KeyType(k) for k in self.key_types))
        for usage in self.key_usage:
            if usage not in _KEY_USAGE_NAMES:
                raise ConfigError(f"profile {self.name}: unknown key usage {usage!r}")
        for eku in self.extended_key_usage:
            if eku not in EKU_NAMES:
                raise ConfigError(f"profile {self.name}: unknown extended key usage {eku!r}")
        for san in self.san_types:
            if san not in _SAN_TYPES:
                raise ConfigError(f"profile {self.name}: unknown SAN type {san!r}")
        if self.min_rsa_bits < 2048:
            raise ConfigError(f"profile {self.name}: RSA keys below 2048 bits are never allowed")
        if not timedelta(0) < self.default_lifetime <= self.max_lifetime:
            raise ConfigError(f"profile {self.name}: need 0 < default_lifetime <= max_lifetime")
        if self.lint not in ("always", "sample", "off"):
            raise ConfigError(f"profile {self.name}: lint must be always, sample or off")
        if not 0.0 <= self.lint_sample_rate <= 1.0:
            raise ConfigError(f"profile {self.name}: lint_sample_rate must be within [0, 1]")


INTERNAL_SERVER_PROFILE = "internal-server"
"""The profile of the server's own TLS certificate."""

_ALL_KEYS = KEY_TYPES
_CLASSIC_KEYS = (KeyType.P256, KeyType.P384, KeyType.RSA, KeyType.ED25519)
DEFAULT_PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile(
            name="device",
            identity="device",
            key_types=_CLASSIC_KEYS,
            default_lifetime=timedelta(days=30),
            max_lifetime=timedelta(days=397),
            key_usage=("digital_signature",),
            extended_key_usage=("clientAuth",),
            san_types=("uri",),
        ),
        Profile(
            name="gateway",
            identity="device",
            key_types=_CLASSIC_KEYS,
            default_lifetime=timedelta(days=90),
            max_lifetime=timedelta(days=397),
            key_usage=("digital_signature",),
            extended_key_usage=("clientAuth", "serverAuth"),
            san_types=("uri", "dns", "ip"),
        ),
        Profile(
            name="server",
            identity="server",
            key_types=_CLASSIC_KEYS,
            default_lifetime=timedelta(days=90),
            max_lifetime=timedelta(days=397),
            key_usage=("digital_signature",),
            extended_key_usage=("serverAuth", "clientAuth"),
            san_types=("dns", "ip"),
        ),
        Profile(  # the server's own HTTPS listener; internal names such as localhost are usual
            name=INTERNAL_SERVER_PROFILE,
            identity="server",
            key_types=_CLASSIC_KEYS,
            default_lifetime=timedelta(days=90),
            max_lifetime=timedelta(days=397),
            key_usage=("digital_signature",),
            extended_key_usage=("serverAuth",),
            san_types=("dns", "ip"),
            lint="always",
            operational=True,
        ),
        Profile(
            name="ocsp-signer",
            identity="responder",
            key_types=_ALL_KEYS,
            default_lifetime=timedelta(days=7),
            max_lifetime=timedelta(days=30),
            key_usage=("digital_signature",),
            extended_key_usage=("OCSPSigning",),
            ocsp_nocheck=True,
            lint="always",
            operational=True,
        ),
        Profile(  # a production batch's shared claim certificate: it may only ask for a device's
            name="claim",  # first certificate (provisioning over MQTT), never act as one
            identity="claim",
            key_types=_CLASSIC_KEYS,
            default_lifetime=timedelta(days=365),
            max_lifetime=timedelta(days=5 * 365),
            key_usage=("digital_signature",),
            extended_key_usage=("clientAuth",),
            lint="always",
        ),
        Profile(  # RFC 9483 section 3.1: the key that signs a CA's CMP answers
            name="cmp-signer",
            identity="responder",
            key_types=_ALL_KEYS,
            default_lifetime=timedelta(days=90),
            max_lifetime=timedelta(days=397),
            key_usage=("digital_signature",),
            extended_key_usage=("cmcRA",),
            lint="always",
            operational=True,
        ),
        Profile(  # RFC 8894 section 2.1: the RA signs CertReps and decrypts requests
            name="scep-ra",
            identity="responder",
            key_types=(KeyType.RSA,),
            default_lifetime=timedelta(days=365),
            max_lifetime=timedelta(days=397),
            key_usage=("digital_signature", "key_encipherment"),
            lint="always",
            operational=True,
        ),
        Profile(
            name="sub-ca",
            identity="ca",
            key_types=_ALL_KEYS,
            default_lifetime=timedelta(days=5 * 365),
            max_lifetime=timedelta(days=10 * 365),
            key_usage=("digital_signature", "key_cert_sign", "crl_sign"),
            path_length=0,
            lint="always",
            operational=True,
        ),
    )
}


def profile_from_mapping(name: str, values: Mapping[str, object]) -> Profile:
    """A profile from settings data, starting from the built-in profile of that name if any."""
    base = DEFAULT_PROFILES.get(name)
    fields: dict[str, object] = {}
    for key, value in values.items():
        if key in ("default_lifetime", "max_lifetime", "backdate"):
            fields[key] = parse_duration(value)  # type: ignore[arg-type]
        elif key in ("key_types", "key_usage", "extended_key_usage", "san_types"):
            if not isinstance(value, list | tuple):
                raise ConfigError(f"profile {name}: {key} must be a list")
            fields[key] = tuple(str(v) for v in value)
            if key == "key_types":
                fields[key] = tuple(_key_type(name, str(v)) for v in value)
        else:
            fields[key] = value
    try:
        if base is not None:
            return replace(base, **fields)  # type: ignore[arg-type]
        return Profile(name=name, **fields)  # type: ignore[arg-type]
    except TypeError as exc:
        raise ConfigError(f"profile {name}: {exc}") from exc


def _key_type(profile: str, text: str) -> KeyType:
    try:
        return parse_key_type(text)
    except ConfigError as exc:
        raise ConfigError(f"profile {profile}: {exc.message}") from exc


def operational_profiles(profiles: Mapping[str, Profile]) -> tuple[str, ...]:
    """Names of the profiles of the PKI's own certificates, sorted."""
    return tuple(sorted(name for name, profile in profiles.items() if profile.operational))


def check_public_key(key: CertificatePublicKeyTypes, profile: Profile) -> None:
    """Refuse a key whose type, size or curve the profile does not allow."""
    if isinstance(key, dsa.DSAPublicKey):
        raise KeyRejected("DSA keys are not accepted", key=describe_key(key))
    if isinstance(key, rsa.RSAPublicKey):
        if KeyType.RSA not in profile.key_types:
            raise KeyRejected(f"profile {profile.name} does not accept RSA keys")
        if key.key_size < profile.min_rsa_bits:
            raise KeyRejected(
                f"RSA key of {key.key_size} bits is below the minimum of {profile.min_rsa_bits}",
                key=describe_key(key),
            )
        if key.public_numbers().e < 65537:
            raise KeyRejected("RSA public exponent below 65537", key=describe_key(key))
        weak = weaknesses(key)  # ROCA, small factors, Fermat (core.keyquality)
        if weak:
            raise KeyRejected(
                f"weak RSA key: {weak[0].detail}",
                key=describe_key(key),
                checks=[w.check for w in weak],
            )
        return
    key_type = key_type_of(key)
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key_type is None or key_type not in profile.key_types:
            raise KeyRejected(
                f"curve {key.curve.name} is not allowed by profile {profile.name}",
                key=describe_key(key),
            )
        return
    if key_type is not None:
        if key_type not in profile.key_types:
            raise KeyRejected(f"profile {profile.name} does not accept {key_type} keys")
        return
    if isinstance(key, ed448.Ed448PublicKey):
        raise KeyRejected("Ed448 keys are not accepted")
    raise KeyRejected(f"unsupported key type {describe_key(key)}")


@dataclass(frozen=True, slots=True)
class Decision:
    """What policy decided a certificate will contain."""

    subject: x509.Name
    sans: tuple[x509.GeneralName, ...]
    device_id: str | None
    not_before: datetime
    not_after: datetime
    extensions: tuple[tuple[x509.ExtensionType, bool], ...]


def _requested_sans(csr: KeyRequest) -> list[x509.GeneralName]:
    try:
        ext = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return list(ext.value)


def _common_name(csr: KeyRequest) -> str | None:
    values = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(values) > 1:
        raise PolicyViolation("the CSR subject has more than one commonName")
    return str(values[0].value) if values else None


def _check_csr_extensions(csr: KeyRequest, profile: Profile) -> None:
    """A CSR can never make itself a CA, nor ask for usages the profile does not grant."""
    for ext in csr.extensions:
        if isinstance(ext.value, x509.BasicConstraints):
            if ext.value.ca and profile.identity != "ca":
                raise PolicyViolation("the CSR asks for CA:true", extension="basicConstraints")
        elif isinstance(ext.value, x509.ExtendedKeyUsage):
            allowed = {EKU_NAMES[n] for n in profile.extended_key_usage}
            extra = [oid.dotted_string for oid in ext.value if oid not in allowed]
            if extra:
                raise PolicyViolation(
                    f"the CSR asks for extended key usages that profile {profile.name} "
                    f"does not grant: {', '.join(extra)}",
                    extension="extendedKeyUsage",
                )
        elif isinstance(ext.value, x509.KeyUsage):
            if ext.value.key_cert_sign and profile.identity != "ca":
                raise PolicyViolation("the CSR asks for keyCertSign", extension="keyUsage")
        elif isinstance(ext.value, x509.NameConstraints) and profile.identity != "ca":
            raise PolicyViolation("the CSR asks for name constraints", extension="nameConstraints")
        elif ext.critical and not isinstance(ext.value, x509.SubjectAlternativeName):
            raise PolicyViolation(
                f"the CSR carries an unknown critical extension {ext.oid.dotted_string}",
                extension=ext.oid.dotted_string,
            )


def _check_dns(name: str) -> None:
    labels = name.rstrip(".").split(".")
    if labels and labels[0] == "*":
        raise PolicyViolation(f"wildcard names are not issued: {name}")
    if len(name) > 253 or not all(_DNS_LABEL.match(label) for label in labels):
        raise PolicyViolation(f"not a valid DNS name: {name!r}")


def _server_sans(
    requested: list[x509.GeneralName], cn: str | None, profile: Profile
) -> list[x509.GeneralName]:
    sans: list[x509.GeneralName] = []
    for general_name in requested:
        if isinstance(general_name, x509.DNSName) and "dns" in profile.san_types:
            _check_dns(general_name.value)
        elif (isinstance(general_name, x509.IPAddress) and "ip" in profile.san_types) or (
            isinstance(general_name, x509.UniformResourceIdentifier) and "uri" in profile.san_types
        ):
            pass
        else:
            raise PolicyViolation(
                f"profile {profile.name} does not allow the SAN {general_name}",
                san=str(general_name.value),
            )
        if general_name not in sans:
            sans.append(general_name)
    if cn and not any(
        (isinstance(n, x509.DNSName) and n.value == cn)
        or (isinstance(n, x509.IPAddress) and str(n.value) == cn)
        for n in sans
    ):
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(cn)))
        except ValueError:
            if "dns" not in profile.san_types:
                raise PolicyViolation(
                    f"commonName {cn!r} is not a name this profile allows"
                ) from None
            _check_dns(cn)
            sans.append(x509.DNSName(cn))
    if not sans:
        raise PolicyViolation(f"profile {profile.name} needs at least one DNS or IP name")
    return sans


def _device_sans(
    requested: list[x509.GeneralName], device_id: str, profile: Profile
) -> list[x509.GeneralName]:
    own = x509.UniformResourceIdentifier(f"{profile.uri_prefix}{device_id}")
    sans: list[x509.GeneralName] = [own]
    for general_name in requested:
        if general_name == own:
            continue
        if isinstance(general_name, x509.UniformResourceIdentifier):
            raise PolicyViolation(
                f"URI SAN {general_name.value!r} does not match device {device_id}",
                san=general_name.value,
            )
        sans.extend(_server_sans([general_name], None, profile))
    return sans


def _resolve_device_id(cn: str | None, device_id: str | None) -> str:
    if device_id is None:
        device_id = cn
    elif cn is not None and cn != device_id:
        raise PolicyViolation(
            f"the CSR's commonName {cn!r} is not the device ID {device_id!r}", device_id=device_id
        )
    if device_id is None:
        raise PolicyViolation("a device certificate needs a device ID (or a commonName)")
    if not is_device_id(device_id):
        raise PolicyViolation(f"not a valid device ID: {device_id!r}", device_id=device_id)
    return device_id


def _subject(cn: str | None, profile: Profile) -> x509.Name:
    attrs: list[x509.NameAttribute[str]] = []
    if profile.organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, profile.organization))
    if cn:
        if len(cn) > 64:
            raise PolicyViolation("commonName longer than 64 characters")
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def _usage_extensions(
    profile: Profile, key: CertificatePublicKeyTypes
) -> list[tuple[x509.ExtensionType, bool]]:
    usages = set(profile.key_usage)
    if isinstance(key, rsa.RSAPublicKey) and profile.identity in ("device", "server"):
        usages.add("key_encipherment")
    flags = {name: name in usages for name in _KEY_USAGE_NAMES}
    if not flags["key_agreement"]:
        flags["encipher_only"] = flags["decipher_only"] = False
    extensions: list[tuple[x509.ExtensionType, bool]] = [
        (x509.BasicConstraints(ca=profile.identity == "ca", path_length=profile.path_length), True),
        (x509.KeyUsage(**flags), True),
    ]
    if profile.extended_key_usage:
        ekus = [EKU_NAMES[name] for name in profile.extended_key_usage]
        extensions.append((x509.ExtendedKeyUsage(ekus), False))
    if profile.ocsp_nocheck:
        extensions.append((x509.OCSPNoCheck(), False))
    return extensions


def decide(
    csr: KeyRequest,
    profile: Profile,
    *,
    now: datetime,
    device_id: str | None = None,
    lifetime: timedelta | None = None,
    ca_not_after: datetime | None = None,
) -> Decision:
    """Apply ``profile`` to a CSR whose signature was already verified."""
    public_key = csr.public_key()
    check_public_key(public_key, profile)
    _check_csr_extensions(csr, profile)
    if lifetime is not None and lifetime > profile.max_lifetime:
        raise PolicyViolation(
            f"lifetime {lifetime} exceeds profile {profile.name}'s maximum {profile.max_lifetime}",
            lifetime_seconds=int(lifetime.total_seconds()),
        )
    if lifetime is not None and lifetime <= timedelta(0):
        raise PolicyViolation("lifetime must be positive")
    cn = _common_name(csr)
    requested = _requested_sans(csr)
    resolved_id: str | None = None
    if profile.identity == "device":
        resolved_id = _resolve_device_id(cn, device_id)
        cn = resolved_id
        sans = _device_sans(requested, resolved_id, profile)
    elif profile.identity == "server":
        sans = _server_sans(requested, cn, profile)
    else:
        if requested:
            raise PolicyViolation(f"profile {profile.name} issues no subject alternative names")
        if not cn:
            raise PolicyViolation(f"profile {profile.name} needs a commonName")
        sans = []
    not_before = now - profile.backdate
    not_after = now + (lifetime or profile.default_lifetime)
    if ca_not_after is not None and not_after > ca_not_after:
        not_after = ca_not_after
    extensions = _usage_extensions(profile, public_key)
    if sans:
        extensions.append((x509.SubjectAlternativeName(sans), not cn))
    return Decision(
        subject=_subject(cn, profile),
        sans=tuple(sans),
        device_id=resolved_id,
        not_before=not_before,
        not_after=not_after,
        extensions=tuple(extensions),
    )


def is_valid_name(name: str) -> bool:
    """Whether ``name`` may name a CA or a profile (lower-case letters, digits, hyphens)."""
    return bool(_NAME.match(name))


def decide_renewal(
    old: x509.Certificate,
    profile: Profile,
    *,
    now: datetime,
    lifetime: timedelta | None = None,
    ca_not_after: datetime | None = None,
) -> Decision:
    """Renew with the same key and identity as ``old``, under the profile as it is now."""
    public_key = old.public_key()
    check_public_key(public_key, profile)
    if lifetime is not None and not timedelta(0) < lifetime <= profile.max_lifetime:
        raise PolicyViolation(f"lifetime {lifetime} is outside (0, {profile.max_lifetime}]")
    try:
        sans = tuple(old.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        sans = ()
    device_id = None
    if profile.identity == "device":
        names = old.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        device_id = str(names[0].value) if names else None
    not_after = now + (lifetime or profile.default_lifetime)
    if ca_not_after is not None and not_after > ca_not_after:
        not_after = ca_not_after
    extensions = _usage_extensions(profile, public_key)
    if sans:
        extensions.append((x509.SubjectAlternativeName(sans), not old.subject))
    return Decision(
        subject=old.subject,
        sans=sans,
        device_id=device_id,
        not_before=now - profile.backdate,
        not_after=not_after,
        extensions=tuple(extensions),
    )


_TEMPLATE_KEYS = {algorithm.key_type: algorithm for algorithm in reversed(KeyAlgorithm)}
"""The algorithm of each key type's template key: its first (smallest) size."""


def template_request(profile: Profile, now: datetime) -> tuple[CertificatePublicKeyTypes, Decision]:
    """A representative key and decision for linting a profile before its first use."""
    key = generate_private_key(_TEMPLATE_KEYS[profile.key_types[0]])
    builder = x509.CertificateSigningRequestBuilder()
    if profile.identity == "server":
        builder = builder.subject_name(x509.Name([])).add_extension(
            x509.SubjectAlternativeName([x509.DNSName("template.example")]), critical=False
        )
    else:
        cn = "template-check"
        builder = builder.subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
    csr = builder.sign(key, signature_hash(key))
    return key.public_key(), decide(csr, profile, now=now)
