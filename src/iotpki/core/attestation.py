"""TPM 2.0 key attestation, verified without a TPM library: the WebAuthn ``tpm`` statement format
as draft-ietf-acme-device-attest uses it, and the TPM structures it carries.

draft-ietf-acme-device-attest section 5: the client answers device-attest-01 with ``attObj``, a
WebAuthn attestation object (CBOR map of ``fmt`` and ``attStmt``; ``authData`` is not used).
WebAuthn Level 2 section 8.3 defines the ``tpm`` statement: ``ver`` "2.0", ``alg`` (a COSE
algorithm), ``x5c`` (the attestation key's certificate, then its chain), ``sig`` over
``certInfo`` (a TPMS_ATTEST made by TPM2_Certify) and ``pubArea`` (the TPMT_PUBLIC of the
certified key). iotpki checks, in :func:`verify_tpm_statement`:

1. ``x5c`` chains to one of the configured TPM-manufacturer / attestation roots, each certificate
   valid at the time of use, and the attestation-key certificate has the TCG AK purpose;
2. ``sig`` verifies over ``certInfo`` with the attestation key;
3. ``certInfo`` is TPM-generated (magic), of type TPM_ST_ATTEST_CERTIFY, and certifies the very
   key in ``pubArea``: its ``attested.name`` is nameAlg || H(pubArea);
4. ``certInfo.extraData`` is SHA-256 of the ACME key authorization (the freshness proof);
5. the key is fixedTPM, fixedParent, sensitiveDataOrigin, an unrestricted signing key.

Every refusal is an :class:`~iotpki.errors.AttestationRejected` whose ``check`` names the step.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from base64 import urlsafe_b64encode
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import cbor2
from asn1crypto import core as asn1
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from iotpki.core.x509util import issued_by
from iotpki.errors import AttestationRejected

__all__ = [
    "ATTRIBUTES_REQUIRED",
    "OID_AK_CERTIFICATE",
    "OID_HARDWARE_MODULE_NAME",
    "OID_PERMANENT_IDENTIFIER",
    "AttestedKey",
    "CertifyInfo",
    "HardwareModule",
    "PublicArea",
    "TpmStatement",
    "check_csr_key",
    "ek_permanent_identifier",
    "key_authorization_digest",
    "parse_attestation_object",
    "parse_certify_info",
    "parse_public_area",
    "permanent_identifier_der",
    "verify_chain",
    "verify_tpm_statement",
]

# TPM 2.0 Library Part 2 (Structures): the constants this module needs.
TPM_GENERATED_VALUE = 0xFF544347  # section 6.2, "\xffTCG"
TPM_ST_ATTEST_CERTIFY = 0x8017  # section 6.9
TPM_ALG_RSA = 0x0001
TPM_ALG_ECC = 0x0023
TPM_ALG_NULL = 0x0010
_HASHES: dict[int, hashes.HashAlgorithm] = {
    0x0004: hashes.SHA1(),
    0x000B: hashes.SHA256(),
    0x000C: hashes.SHA384(),
    0x000D: hashes.SHA512(),
}
_CURVES: dict[int, ec.EllipticCurve] = {0x0003: ec.SECP256R1(), 0x0004: ec.SECP384R1()}

# TPMA_OBJECT bits (Part 2 section 8.3).
FIXED_TPM = 1 << 1
FIXED_PARENT = 1 << 4
SENSITIVE_DATA_ORIGIN = 1 << 5
USER_WITH_AUTH = 1 << 6
RESTRICTED = 1 << 16
DECRYPT = 1 << 17
SIGN_ENCRYPT = 1 << 18
ATTRIBUTES_REQUIRED = FIXED_TPM | FIXED_PARENT | SENSITIVE_DATA_ORIGIN | SIGN_ENCRYPT
_ATTRIBUTE_NAMES = {
    FIXED_TPM: "fixedTPM",
    FIXED_PARENT: "fixedParent",
    SENSITIVE_DATA_ORIGIN: "sensitiveDataOrigin",
    SIGN_ENCRYPT: "sign",
}

# COSE algorithms (RFC 9053, RFC 8812) a TPM attestation key signs with.
_COSE: dict[int, tuple[str, hashes.HashAlgorithm]] = {
    -257: ("pkcs1", hashes.SHA256()),
    -258: ("pkcs1", hashes.SHA384()),
    -259: ("pkcs1", hashes.SHA512()),
    -65535: ("pkcs1", hashes.SHA1()),
    -37: ("pss", hashes.SHA256()),
    -38: ("pss", hashes.SHA384()),
    -7: ("ecdsa", hashes.SHA256()),
    -35: ("ecdsa", hashes.SHA384()),
}

# TCG EK Credential Profile 2.0 / WebAuthn 8.3.1: the AK certificate's extended key usage.
OID_AK_CERTIFICATE = x509.ObjectIdentifier("2.23.133.8.3")
# RFC 4043 and RFC 4108 subject alternative names (otherName) naming a device.
OID_PERMANENT_IDENTIFIER = x509.ObjectIdentifier("1.3.6.1.5.5.7.8.3")
OID_HARDWARE_MODULE_NAME = x509.ObjectIdentifier("1.3.6.1.5.5.7.8.4")
_MAX_CHAIN = 6


class _PermanentIdentifier(asn1.Sequence):  # type: ignore[misc]  # asn1crypto is untyped
    """RFC 4043 section 2: PermanentIdentifier."""

    _fields = [  # noqa: RUF012 - asn1crypto's declaration style
        ("identifier_value", asn1.UTF8String, {"optional": True}),
        ("assigner", asn1.ObjectIdentifier, {"optional": True}),
    ]


class _HardwareModuleName(asn1.Sequence):  # type: ignore[misc]  # asn1crypto is untyped
    """RFC 4108 section 5: HardwareModuleName."""

    _fields = [  # noqa: RUF012 - asn1crypto's declaration style
        ("hw_type", asn1.ObjectIdentifier),
        ("hw_serial_num", asn1.OctetString),
    ]


@dataclass(frozen=True, slots=True)
class HardwareModule:
    """An RFC 4108 hardware module name: the module type and its serial number."""

    hw_type: str
    serial: bytes

    @property
    def identifier(self) -> str:
        """The ``hardware-module`` ACME identifier value: ``<hwType OID>:<serial in hex>``."""
        return f"{self.hw_type}:{self.serial.hex()}"


@dataclass(frozen=True, slots=True)
class PublicArea:
    """A parsed TPMT_PUBLIC (Part 2 section 12.2.4) and its exact bytes."""

    raw: bytes
    type: int
    name_alg: int
    attributes: int
    auth_policy: bytes
    public_key: CertificatePublicKeyTypes

    @property
    def name(self) -> bytes:
        """The TPM name of the object: nameAlg || H_nameAlg(TPMT_PUBLIC) (Part 1 section 16)."""
        digest = hashes.Hash(_hash(self.name_alg, "pubArea nameAlg"))
        digest.update(self.raw)
        return struct.pack(">H", self.name_alg) + digest.finalize()

    def missing_attributes(self) -> list[str]:
        """The required TPMA_OBJECT attributes the key lacks, by their TPM names."""
        return [name for bit, name in _ATTRIBUTE_NAMES.items() if not self.attributes & bit]


@dataclass(frozen=True, slots=True)
class CertifyInfo:
    """A parsed TPMS_ATTEST of type TPM_ST_ATTEST_CERTIFY (Part 2 section 10.12.12)."""

    qualified_signer: bytes
    extra_data: bytes
    clock: int
    reset_count: int
    restart_count: int
    firmware_version: int
    name: bytes
    qualified_name: bytes


@dataclass(frozen=True, slots=True)
class TpmStatement:
    """A WebAuthn ``tpm`` attestation statement (WebAuthn section 8.3)."""

    alg: int
    x5c: tuple[x509.Certificate, ...]
    sig: bytes
    cert_info: bytes
    pub_area: bytes


@dataclass(frozen=True, slots=True)
class AttestedKey:
    """What a verified statement proves: this key lives in a genuine TPM."""

    public_key: CertificatePublicKeyTypes
    attributes: int
    ak_chain: tuple[x509.Certificate, ...]
    root: x509.Certificate
    permanent_identifiers: tuple[str, ...]
    hardware_modules: tuple[HardwareModule, ...]

    def identifies(self, identifier_type: str, value: str) -> bool:
        """Whether the AK certificate names the device by this ACME identifier."""
        if identifier_type == "permanent-identifier":
            return value in self.permanent_identifiers
        if identifier_type == "hardware-module":
            return value.lower() in {module.identifier for module in self.hardware_modules}
        return False


def _reject(check: str, message: str, **data: object) -> AttestationRejected:
    """The refusal for one failed verification step."""
    return AttestationRejected(message, check=check, **data)


def _hash(alg: int, what: str) -> hashes.HashAlgorithm:
    """The hash of a TPM_ALG_ID, refused when iotpki does not accept it."""
    algorithm = _HASHES.get(alg)
    if algorithm is None:
        raise _reject("structure", f"{what} names an unsupported hash 0x{alg:04x}")
    return algorithm


class _Reader:
    """Big-endian reads over a TPM marshalled structure; running short is a refusal."""

    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._offset = 0
        self._what = what

    def take(self, size: int) -> bytes:
        end = self._offset + size
        if end > len(self._data):
            raise _reject("structure", f"{self._what} is truncated")
        chunk = self._data[self._offset : end]
        self._offset = end
        return chunk

    def u8(self) -> int:
        return int(self.take(1)[0])

    def u16(self) -> int:
        return int(struct.unpack(">H", self.take(2))[0])

    def u32(self) -> int:
        return int(struct.unpack(">I", self.take(4))[0])

    def u64(self) -> int:
        return int(struct.unpack(">Q", self.take(8))[0])

    def tpm2b(self) -> bytes:
        return self.take(self.u16())

    def end(self) -> None:
        if self._offset != len(self._data):
            raise _reject("structure", f"{self._what} has trailing bytes")


def parse_public_area(data: bytes) -> PublicArea:
    """Parse a TPMT_PUBLIC of an RSA or ECC key (Part 2 section 12.2.4)."""
    reader = _Reader(data, "pubArea")
    key_type = reader.u16()
    name_alg = reader.u16()
    attributes = reader.u32()
    auth_policy = reader.tpm2b()
    if reader.u16() != TPM_ALG_NULL:  # TPMT_SYM_DEF_OBJECT: only storage keys have one
        reader.take(4)  # keyBits, mode
    scheme = reader.u16()  # TPMT_RSA_SCHEME / TPMT_ECC_SCHEME
    if scheme != TPM_ALG_NULL:
        reader.u16()  # its hashAlg
    public_key: CertificatePublicKeyTypes
    if key_type == TPM_ALG_RSA:
        reader.u16()  # keyBits (the modulus says it)
        exponent = reader.u32() or 65537  # Part 2 section 12.2.3.5: zero means 2^16 + 1
        modulus = int.from_bytes(reader.tpm2b(), "big")
        try:
            public_key = rsa.RSAPublicNumbers(exponent, modulus).public_key()
        except ValueError as exc:
            raise _reject("structure", f"pubArea holds an invalid RSA key: {exc}") from exc
    elif key_type == TPM_ALG_ECC:
        curve = _CURVES.get(reader.u16())
        if reader.u16() != TPM_ALG_NULL:  # TPMT_KDF_SCHEME
            reader.u16()
        x, y = reader.tpm2b(), reader.tpm2b()
        if curve is None:
            raise _reject("structure", "pubArea holds a key on an unsupported curve")
        try:
            public_key = ec.EllipticCurvePublicNumbers(
                int.from_bytes(x, "big"), int.from_bytes(y, "big"), curve
            ).public_key()
        except ValueError as exc:
            raise _reject("structure", f"pubArea holds an invalid EC point: {exc}") from exc
    else:
        raise _reject("structure", f"pubArea holds an unsupported key type 0x{key_type:04x}")
    reader.end()
    return PublicArea(data, key_type, name_alg, attributes, auth_policy, public_key)


def parse_certify_info(data: bytes) -> CertifyInfo:
    """Parse a TPMS_ATTEST that TPM2_Certify produced (Part 2 section 10.12.12)."""
    reader = _Reader(data, "certInfo")
    if reader.u32() != TPM_GENERATED_VALUE:
        raise _reject("cert_info", "certInfo was not generated by a TPM (magic)")
    if reader.u16() != TPM_ST_ATTEST_CERTIFY:
        raise _reject("cert_info", "certInfo is not a TPM2_Certify attestation")
    qualified_signer = reader.tpm2b()
    extra_data = reader.tpm2b()
    clock, reset_count, restart_count = reader.u64(), reader.u32(), reader.u32()
    reader.u8()  # safe
    firmware_version = reader.u64()
    name, qualified_name = reader.tpm2b(), reader.tpm2b()
    reader.end()
    return CertifyInfo(
        qualified_signer,
        extra_data,
        clock,
        reset_count,
        restart_count,
        firmware_version,
        name,
        qualified_name,
    )


def parse_attestation_object(data: bytes) -> TpmStatement:
    """Decode a CBOR attestation object whose format is ``tpm`` (WebAuthn section 6.5)."""
    try:
        decoded: Any = cbor2.loads(data)
    except (cbor2.CBORDecodeError, ValueError, TypeError, RecursionError) as exc:
        raise _reject("cbor", f"attObj is not CBOR: {exc}") from exc
    if not isinstance(decoded, dict):
        raise _reject("cbor", "attObj is not a CBOR map")
    if decoded.get("fmt") != "tpm":
        raise _reject("format", f"attestation format {decoded.get('fmt')!r} is not supported")
    statement = decoded.get("attStmt")
    if not isinstance(statement, dict):
        raise _reject("cbor", "attStmt is missing or not a map")
    if statement.get("ver") != "2.0":
        raise _reject("cbor", "attStmt.ver must be '2.0'")
    alg = statement.get("alg")
    x5c = statement.get("x5c")
    fields = [statement.get(name) for name in ("sig", "certInfo", "pubArea")]
    if not isinstance(alg, int) or isinstance(alg, bool):
        raise _reject("cbor", "attStmt.alg must be an integer")
    if not isinstance(x5c, list) or not x5c or not all(isinstance(c, bytes) for c in x5c):
        raise _reject("cbor", "attStmt.x5c must be a non-empty array of certificates")
    if not all(isinstance(field, bytes) for field in fields):
        raise _reject("cbor", "attStmt.sig, certInfo and pubArea must be byte strings")
    if len(x5c) > _MAX_CHAIN:
        raise _reject("chain", f"attStmt.x5c holds more than {_MAX_CHAIN} certificates")
    try:
        chain = tuple(x509.load_der_x509_certificate(der) for der in x5c)
    except ValueError as exc:
        raise _reject(
            "cbor", f"attStmt.x5c holds a certificate that does not parse: {exc}"
        ) from exc
    sig, cert_info, pub_area = (bytes(field) for field in fields if isinstance(field, bytes))
    return TpmStatement(alg, chain, sig, cert_info, pub_area)


def key_authorization_digest(key_authorization: str) -> bytes:
    """The freshness value a device puts into certInfo.extraData: SHA-256 of the key
    authorization (RFC 8555 section 8.1), as device-attest-01 asks."""
    return hashlib.sha256(key_authorization.encode()).digest()


def verify_chain(
    chain: Sequence[x509.Certificate], roots: Sequence[x509.Certificate], at: datetime
) -> x509.Certificate:
    """Check that ``chain[0]`` chains through ``chain[1:]`` to one of ``roots``; return the root.

    Each link is checked by issuer name and signature, every certificate must be valid at ``at``
    and every issuer a CA. Manufacturer certificates carry TPM-specific names and extensions
    (a critical SAN with an empty subject) that a web-PKI verifier refuses, hence this walk.
    """
    if not roots:
        raise _reject("chain", "no attestation roots are configured")
    pool = list(chain[1:])
    current = chain[0]
    for _ in range(_MAX_CHAIN + 1):
        _check_validity(current, at)
        for root in roots:
            if current == root or issued_by(current, root):
                _check_validity(root, at)
                _check_ca(root)
                return root
        issuer = next((cert for cert in pool if issued_by(current, cert)), None)
        if issuer is None:
            raise _reject(
                "chain",
                f"{current.subject.rfc4514_string() or 'the certificate'} issued by "
                f"{current.issuer.rfc4514_string()} does not chain to a trusted root",
            )
        _check_ca(issuer)
        pool.remove(issuer)
        current = issuer
    raise _reject("chain", "the certificate chain is too long")


def _check_validity(cert: x509.Certificate, at: datetime) -> None:
    """Refuse a certificate outside its validity period."""
    if not cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
        raise _reject(
            "chain",
            f"certificate {cert.subject.rfc4514_string() or cert.serial_number} "
            f"is not valid at {at.isoformat()}",
        )


def _check_ca(cert: x509.Certificate) -> None:
    """Refuse an issuer that is not a CA (RFC 5280 section 4.2.1.9)."""
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise _reject("chain", f"{cert.subject.rfc4514_string()} is not a CA certificate")


def _verify_signature(
    public_key: CertificatePublicKeyTypes, alg: int, signature: bytes, data: bytes
) -> None:
    """Verify ``sig`` over ``certInfo`` with the attestation key and COSE algorithm ``alg``."""
    scheme = _COSE.get(alg)
    if scheme is None:
        raise _reject("signature", f"COSE algorithm {alg} is not supported")
    kind, algorithm = scheme
    try:
        if kind == "ecdsa" and isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, data, ec.ECDSA(algorithm))
        elif kind == "pkcs1" and isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, data, padding.PKCS1v15(), algorithm)
        elif kind == "pss" and isinstance(public_key, rsa.RSAPublicKey):
            pss = padding.PSS(padding.MGF1(algorithm), padding.PSS.AUTO)
            public_key.verify(signature, data, pss, algorithm)
        else:
            raise _reject("signature", f"COSE algorithm {alg} does not fit the attestation key")
    except InvalidSignature as exc:
        raise _reject(
            "signature", "the attestation signature over certInfo does not verify"
        ) from exc


def permanent_identifier_der(value: str) -> bytes:
    """The DER of an RFC 4043 PermanentIdentifier, the value of its otherName."""
    return bytes(_PermanentIdentifier({"identifier_value": value}).dump())


def _device_names(cert: x509.Certificate) -> tuple[tuple[str, ...], tuple[HardwareModule, ...]]:
    """The permanent identifiers and hardware module names in a certificate's SAN."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return (), ()
    permanent: list[str] = []
    modules: list[HardwareModule] = []
    for other in san.get_values_for_type(x509.OtherName):
        try:
            if other.type_id == OID_PERMANENT_IDENTIFIER:
                value = _PermanentIdentifier.load(other.value)["identifier_value"].native
                if isinstance(value, str):
                    permanent.append(value)
            elif other.type_id == OID_HARDWARE_MODULE_NAME:
                parsed = _HardwareModuleName.load(other.value)
                modules.append(
                    HardwareModule(parsed["hw_type"].dotted, parsed["hw_serial_num"].native)
                )
        except (ValueError, TypeError) as exc:
            raise _reject("chain", f"the AK certificate has a malformed otherName: {exc}") from exc
    return tuple(permanent), tuple(modules)


def _check_ak_certificate(cert: x509.Certificate) -> None:
    """WebAuthn section 8.3.1: an AK certificate is an end entity for tcg-kp-AIKCertificate."""
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound as exc:
        raise _reject("ak_certificate", "the AK certificate has no extended key usage") from exc
    if OID_AK_CERTIFICATE not in usages:
        raise _reject("ak_certificate", "the AK certificate lacks tcg-kp-AIKCertificate")
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return
    if constraints.ca:
        raise _reject("ak_certificate", "the AK certificate is a CA certificate")


def verify_tpm_statement(
    statement: TpmStatement,
    *,
    key_authorization: str,
    roots: Sequence[x509.Certificate],
    at: datetime,
) -> AttestedKey:
    """Run every check of the module docstring; return the attested key or raise."""
    ak_cert = statement.x5c[0]
    root = verify_chain(statement.x5c, roots, at)
    _check_ak_certificate(ak_cert)
    _verify_signature(ak_cert.public_key(), statement.alg, statement.sig, statement.cert_info)
    info = parse_certify_info(statement.cert_info)
    area = parse_public_area(statement.pub_area)
    # WebAuthn 8.3 step 4: attested.name is the name of pubArea, computed with its nameAlg.
    if not hmac.compare_digest(info.name, area.name):
        raise _reject("name", "certInfo does not certify the key in pubArea")
    if not hmac.compare_digest(info.extra_data, key_authorization_digest(key_authorization)):
        raise _reject("extra_data", "certInfo.extraData is not the hash of the key authorization")
    missing = area.missing_attributes()
    if missing or area.attributes & RESTRICTED:
        raise _reject(
            "attributes",
            "the key is not a TPM-bound signing key: "
            + (f"missing {', '.join(missing)}" if missing else "it is restricted"),
            missing=missing,
        )
    permanent, modules = _device_names(ak_cert)
    return AttestedKey(area.public_key, area.attributes, statement.x5c, root, permanent, modules)


def check_csr_key(attested: CertificatePublicKeyTypes, csr: x509.CertificateSigningRequest) -> None:
    """draft-ietf-acme-device-attest section 5: at finalize the CSR must carry the attested key."""
    if csr.public_key() != attested:
        raise _reject("csr_key", "the CSR's key is not the key the TPM attested")


def ek_permanent_identifier(ek_public_key: CertificatePublicKeyTypes) -> str:
    """The permanent identifier an AK CA gives a TPM: ``urn:ek:sha256:`` + the SHA-256 of its
    EK's SubjectPublicKeyInfo, as step-ca names TPM devices, but in unpadded base64url so that
    the value is also a valid iotpki device id (no ``+``, ``/`` or ``=``)."""
    spki = ek_public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = urlsafe_b64encode(hashlib.sha256(spki).digest()).rstrip(b"=")
    return "urn:ek:sha256:" + digest.decode()
