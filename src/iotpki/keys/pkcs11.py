"""PKCS#11 key backend: CA keys generated inside a token (an HSM or SoftHSM) and never exported.

A key is named by an RFC 7512 URI, ``pkcs11:id=%8f%01...;object=<label>``, and found again by
its random 16-byte ``CKA_ID``. :meth:`Pkcs11Backend.signer` returns an object that subclasses
cryptography's private-key ABC, so the X.509, CRL, OCSP and CSR builders accept it: the data is
hashed in Python and only the digest goes to the token.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote, unquote_to_bytes

import pkcs11
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificateIssuerPublicKeyTypes,
)
from cryptography.hazmat.primitives.asymmetric.utils import (
    NoDigestInfo,
    Prehashed,
    encode_dss_signature,
)
from cryptography.utils import Buffer
from pkcs11 import MGF, Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11 import exceptions as p11
from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters

from iotpki.core.models import KeyAlgorithm
from iotpki.errors import BackendError, ConfigError, KeyMissing
from iotpki.keys.held import HeldEcKey, HeldEd25519Key, HeldKey, HeldRsaKey
from iotpki.keys.held import digest as held_digest

__all__ = ["Pkcs11Backend"]

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class _KeySpec:
    """How the token generates and signs with one ``KeyAlgorithm``."""

    key_type: KeyType
    generate: Mechanism
    sign: Mechanism
    bits: int | None = None
    ec_params: bytes | None = None  # DER OID of the named curve (CKA_EC_PARAMS)


_SPECS = {
    KeyAlgorithm.P256: _KeySpec(
        KeyType.EC,
        Mechanism.EC_KEY_PAIR_GEN,
        Mechanism.ECDSA,
        ec_params=encode_named_curve_parameters("secp256r1"),
    ),
    KeyAlgorithm.P384: _KeySpec(
        KeyType.EC,
        Mechanism.EC_KEY_PAIR_GEN,
        Mechanism.ECDSA,
        ec_params=encode_named_curve_parameters("secp384r1"),
    ),
    KeyAlgorithm.RSA2048: _KeySpec(
        KeyType.RSA, Mechanism.RSA_PKCS_KEY_PAIR_GEN, Mechanism.RSA_PKCS, bits=2048
    ),
    KeyAlgorithm.RSA3072: _KeySpec(
        KeyType.RSA, Mechanism.RSA_PKCS_KEY_PAIR_GEN, Mechanism.RSA_PKCS, bits=3072
    ),
    KeyAlgorithm.RSA4096: _KeySpec(
        KeyType.RSA, Mechanism.RSA_PKCS_KEY_PAIR_GEN, Mechanism.RSA_PKCS, bits=4096
    ),
    # Edwards keys name their curve in CKA_EC_PARAMS by OID (id-Ed25519, RFC 8410).
    KeyAlgorithm.ED25519: _KeySpec(
        KeyType.EC_EDWARDS,
        Mechanism.EC_EDWARDS_KEY_PAIR_GEN,
        Mechanism.EDDSA,
        ec_params=encode_named_curve_parameters("1.3.101.112"),
    ),
}

# A CA key signs and does nothing else; it is born sensitive and can never leave the token.
_PRIVATE_TEMPLATE = {
    Attribute.TOKEN: True,
    Attribute.PRIVATE: True,
    Attribute.SENSITIVE: True,
    Attribute.EXTRACTABLE: False,
    Attribute.SIGN: True,
    Attribute.DECRYPT: False,
    Attribute.UNWRAP: False,
    Attribute.DERIVE: False,
}
_PUBLIC_TEMPLATE = {
    Attribute.TOKEN: True,
    Attribute.PRIVATE: False,
    Attribute.VERIFY: True,
    Attribute.ENCRYPT: False,
    Attribute.WRAP: False,
}

# tpm2-pkcs11 1.9 (Debian 12) checks a requested public key against the TPM object with
# CKA_ENCRYPT and CKA_VERIFY swapped (it derives ENCRYPT from the TPM's sign attribute): a
# sign-only key is refused unless asked for this way. The TPM key itself is sign-only.
_TPM2_PKCS11 = "tpm2-software.github.io"
_TPM2_PKCS11_PUBLIC = {Attribute.ENCRYPT: True, Attribute.VERIFY: False}

# RFC 8017 section 9.2, note 1: the DER DigestInfo prefix that EMSA-PKCS1-v1_5 puts before a digest.
_DIGEST_INFO_PREFIX = {
    "sha224": bytes.fromhex("302d300d06096086480165030402040500041c"),
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
}
# CK_RSA_PKCS_PSS_PARAMS: the hash and MGF1 hash the token must be told about.
_PSS_HASH = {
    "sha224": (Mechanism.SHA224, MGF.SHA224),
    "sha256": (Mechanism.SHA256, MGF.SHA256),
    "sha384": (Mechanism.SHA384, MGF.SHA384),
    "sha512": (Mechanism.SHA512, MGF.SHA512),
}

# The session or the handles found through it are no longer valid: the module was
# re-initialised, the token re-inserted, or another session of this process logged out.
_STALE = (
    p11.SessionClosed,
    p11.SessionHandleInvalid,
    p11.DeviceRemoved,
    p11.TokenNotPresent,
    p11.UserNotLoggedIn,
    p11.ObjectHandleInvalid,
    p11.KeyHandleInvalid,
)
_WRONG_PIN = (p11.PinIncorrect, p11.PinInvalid, p11.PinLenRange)


class Pkcs11Backend:
    """CA keys held on one PKCS#11 token; the token makes every signature."""

    name = "pkcs11"

    def __init__(self, module_path: str, token_label: str, pin: str) -> None:
        self._module_path = module_path
        self._token_label = token_label
        self._pin = pin
        self._lock = threading.Lock()
        self._session: pkcs11.Session | None = None
        self._keys: dict[tuple[bytes, ObjectClass], pkcs11.Key] = {}

    def __repr__(self) -> str:
        return f"Pkcs11Backend({self._module_path!r}, token={self._token_label!r})"

    def __enter__(self) -> Pkcs11Backend:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def generate(self, label: str, algorithm: KeyAlgorithm) -> str:
        """Generate a non-extractable key pair on the token and return its ``pkcs11:`` URI."""
        spec = _SPECS.get(algorithm)
        if spec is None:
            raise ConfigError(
                f"the PKCS#11 backend cannot hold {algorithm} keys: PKCS#11 2.40 tokens such as "
                "SoftHSM2 have no ML-DSA; use the file backend for ML-DSA CAs",
                algorithm=str(algorithm),
            )
        key_id = secrets.token_bytes(16)

        def create(session: pkcs11.Session) -> None:
            offered = session.token.slot.get_mechanisms()
            missing = [m.name for m in (spec.generate, spec.sign) if m not in offered]
            if missing:
                raise ConfigError(
                    f"token {self._token_label!r} does not offer {', '.join(missing)}, "
                    f"needed for {algorithm} keys",
                    algorithm=str(algorithm),
                    token=self._token_label,
                )
            public_template: dict[Attribute, Any] = dict(_PUBLIC_TEMPLATE)
            if spec.ec_params is not None:
                public_template[Attribute.EC_PARAMS] = spec.ec_params
            if pkcs11.lib(self._module_path).manufacturer_id == _TPM2_PKCS11:
                public_template.update(_TPM2_PKCS11_PUBLIC)
            session.generate_keypair(
                spec.key_type,
                spec.bits,
                id=key_id,
                label=label,
                store=True,
                capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
                public_template=public_template,
                private_template=dict(_PRIVATE_TEMPLATE),
            )

        self._run(f"generating a {algorithm} key", None, create)
        return _format_ref(key_id, label)

    def public_key(self, key_ref: str) -> CertificateIssuerPublicKeyTypes:
        """The public half of a key, read from the token's public-key object."""
        key_id = _parse_ref(key_ref)
        return self._run(
            "reading a public key", key_ref, lambda s: self._read_public(s, key_id, key_ref)
        )

    def signer(self, key_ref: str) -> CertificateIssuerPrivateKeyTypes:
        """A cryptography private key whose ``sign`` the token performs."""
        key_id = _parse_ref(key_ref)

        def load(session: pkcs11.Session) -> CertificateIssuerPublicKeyTypes:
            self._private(session, key_id, key_ref)  # fail now, not at the first signature
            return self._read_public(session, key_id, key_ref)

        public = self._run("looking up a key", key_ref, load)
        if isinstance(public, ec.EllipticCurvePublicKey):
            return _TokenEcKey(self, key_id, key_ref, public)
        if isinstance(public, rsa.RSAPublicKey):
            return _TokenRsaKey(self, key_id, key_ref, public)
        if isinstance(public, ed25519.Ed25519PublicKey):
            return _TokenEd25519Key(self, key_id, key_ref, public)
        raise BackendError(
            f"key {key_ref} has a type this backend cannot sign with", key_ref=key_ref
        )

    def close(self) -> None:
        """Close the session; the next call opens a new one."""
        with self._lock:
            self._drop_session()

    def _sign(
        self,
        key_id: bytes,
        key_ref: str,
        data: bytes,
        mechanism: Mechanism,
        param: tuple[Mechanism, MGF, int] | None = None,
    ) -> bytes:
        """Have the token sign ``data`` (a digest or DigestInfo) with one mechanism."""

        def sign(session: pkcs11.Session) -> bytes:
            key = self._private(session, key_id, key_ref)
            return bytes(key.sign(data, mechanism=mechanism, mechanism_param=param))

        return self._run("signing", key_ref, sign)

    def _run(
        self, action: str, key_ref: str | None, operation: Callable[[pkcs11.Session], _T]
    ) -> _T:
        """Run one token operation under the lock; once more in a fresh session if it was stale."""
        with self._lock:
            try:
                try:
                    return operation(self._open())
                except (*_STALE, KeyMissing):
                    # PKCS#11 logins belong to the application: when another session of this
                    # process logs out, private keys vanish from view (KeyMissing) and their
                    # handles turn invalid. Log in again and look once more.
                    self._drop_session()
                    return operation(self._open())
            except p11.PKCS11Error as exc:
                if isinstance(exc, _STALE):
                    self._drop_session()
                raise BackendError(
                    f"PKCS#11 token {self._token_label!r} failed {action}: {_describe(exc)}",
                    token=self._token_label,
                    key_ref=key_ref,
                ) from exc

    def _open(self) -> pkcs11.Session:
        """The session, opened and logged in on first use (the lock is held)."""
        if self._session is not None:
            return self._session
        where = f"token {self._token_label!r} of {self._module_path}"
        try:
            token = pkcs11.lib(self._module_path).get_token(token_label=self._token_label)
        except p11.NoSuchToken as exc:
            raise ConfigError(f"no {where}", token=self._token_label) from exc
        except p11.MultipleTokensReturned as exc:
            raise ConfigError(f"more than one {where}", token=self._token_label) from exc
        except p11.PKCS11Error as exc:  # also raised when the module itself does not load
            raise ConfigError(
                f"cannot use PKCS#11 module {self._module_path}: {_describe(exc)}",
                module=self._module_path,
            ) from exc
        try:
            try:
                self._session = token.open(rw=True, user_pin=self._pin)
            except p11.UserAlreadyLoggedIn:
                # PKCS#11 logins belong to the application, not to a session: another session of
                # this process is logged in to the token, and a new session shares its login.
                self._session = token.open(rw=True)
        except _WRONG_PIN as exc:
            raise ConfigError(f"wrong PIN for {where}", token=self._token_label) from exc
        except p11.PinLocked as exc:
            raise ConfigError(f"the PIN of {where} is locked", token=self._token_label) from exc
        except p11.PinExpired as exc:
            raise ConfigError(f"the PIN of {where} has expired", token=self._token_label) from exc
        except p11.PKCS11Error as exc:
            raise BackendError(
                f"cannot open a session on {where}: {_describe(exc)}", token=self._token_label
            ) from exc
        return self._session

    def _drop_session(self) -> None:
        """Close the session if the token still knows it, and forget the handles found in it."""
        session, self._session = self._session, None
        self._keys.clear()
        if session is not None:
            # Fails when the session is gone already or its login was lost: nothing to undo.
            with contextlib.suppress(p11.PKCS11Error):
                session.close()

    def _find(
        self, session: pkcs11.Session, key_id: bytes, object_class: ObjectClass, key_ref: str
    ) -> pkcs11.Key:
        """The one object of that class and CKA_ID; handles are cached for the session."""
        cached = self._keys.get((key_id, object_class))
        if cached is not None:
            return cached
        try:
            key = session.get_key(object_class=object_class, id=key_id)
        except p11.NoSuchKey as exc:
            half = "private" if object_class is ObjectClass.PRIVATE_KEY else "public"
            raise KeyMissing(
                f"token {self._token_label!r} holds no {half} key {key_ref}",
                key_ref=key_ref,
                token=self._token_label,
            ) from exc
        except p11.MultipleObjectsReturned as exc:
            raise BackendError(
                f"token {self._token_label!r} holds several keys with the id of {key_ref}",
                key_ref=key_ref,
            ) from exc
        self._keys[key_id, object_class] = key
        return key

    def _private(self, session: pkcs11.Session, key_id: bytes, key_ref: str) -> pkcs11.SignMixin:
        """The private key, checked to be allowed to sign (CKA_SIGN)."""
        key = self._find(session, key_id, ObjectClass.PRIVATE_KEY, key_ref)
        if not isinstance(key, pkcs11.SignMixin):
            raise BackendError(f"key {key_ref} is not allowed to sign", key_ref=key_ref)
        return key

    def _read_public(
        self, session: pkcs11.Session, key_id: bytes, key_ref: str
    ) -> CertificateIssuerPublicKeyTypes:
        """Rebuild the public key from the token's CKA_EC_POINT or CKA_MODULUS attributes."""
        key = self._find(session, key_id, ObjectClass.PUBLIC_KEY, key_ref)
        if key.key_type is KeyType.RSA:
            modulus = int.from_bytes(key[Attribute.MODULUS], "big")
            exponent = int.from_bytes(key[Attribute.PUBLIC_EXPONENT], "big")
            return rsa.RSAPublicNumbers(exponent, modulus).public_key()
        if key.key_type is KeyType.EC and isinstance(key, pkcs11.PublicKey):
            loaded = serialization.load_der_public_key(encode_ec_public_key(key))
            if isinstance(loaded, ec.EllipticCurvePublicKey):
                return loaded
        if key.key_type is KeyType.EC_EDWARDS:
            point = bytes(key[Attribute.EC_POINT])
            if len(point) == 34 and point[:2] == b"\x04\x20":  # DER OCTET STRING around it
                point = point[2:]
            if len(point) == 32:
                return ed25519.Ed25519PublicKey.from_public_bytes(point)
        raise BackendError(
            f"key {key_ref} is a {key.key_type.name} key, which this backend does not handle",
            key_ref=key_ref,
        )


class _TokenKey(HeldKey):
    """How a key on the token words its refusals."""

    where = "PKCS#11"
    export_refusal = "is non-extractable; it never leaves the token"


class _TokenEcKey(_TokenKey, HeldEcKey):
    """An EC private key on the token: ECDSA over a digest made in Python."""

    def __init__(
        self,
        backend: Pkcs11Backend,
        key_id: bytes,
        key_ref: str,
        public: ec.EllipticCurvePublicKey,
    ) -> None:
        HeldEcKey.__init__(self, key_ref, public)
        self._backend = backend
        self._key_id = key_id

    def sign(self, data: Buffer, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        """ECDSA: hash here, CKM_ECDSA on the token, then DER-encode the raw ``r || s``."""
        if not isinstance(signature_algorithm, ec.ECDSA):
            self._refuse(f"{type(signature_algorithm).__name__} signatures")
        if signature_algorithm.deterministic_signing:
            self._refuse("deterministic ECDSA (RFC 6979); the token picks its nonce")
        digest = held_digest(data, signature_algorithm.algorithm)
        raw = self._backend._sign(self._key_id, self._key_ref, digest, Mechanism.ECDSA)
        half = len(raw) // 2  # CKM_ECDSA returns r || s, each as long as the group order
        return encode_dss_signature(
            int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
        )


class _TokenRsaKey(_TokenKey, HeldRsaKey):
    """An RSA private key on the token: PKCS#1 v1.5 or PSS over a digest made in Python."""

    def __init__(
        self, backend: Pkcs11Backend, key_id: bytes, key_ref: str, public: rsa.RSAPublicKey
    ) -> None:
        HeldRsaKey.__init__(self, key_ref, public)
        self._backend = backend
        self._key_id = key_id

    def sign(
        self,
        data: bytes,
        padding: asym_padding.AsymmetricPadding,
        algorithm: Prehashed | hashes.HashAlgorithm | NoDigestInfo,
    ) -> bytes:
        """Hash here; the token applies CKM_RSA_PKCS to the DigestInfo or CKM_RSA_PKCS_PSS."""
        if isinstance(algorithm, NoDigestInfo):
            if not isinstance(padding, asym_padding.PKCS1v15):
                self._refuse("PSS without a hash")
            return self._backend._sign(self._key_id, self._key_ref, data, Mechanism.RSA_PKCS)
        hash_algorithm = algorithm._algorithm if isinstance(algorithm, Prehashed) else algorithm
        digest = held_digest(data, algorithm)
        if isinstance(padding, asym_padding.PKCS1v15):
            prefix = _DIGEST_INFO_PREFIX.get(hash_algorithm.name)
            if prefix is None:
                self._refuse(f"PKCS#1 v1.5 signatures with {hash_algorithm.name}")
            return self._backend._sign(
                self._key_id, self._key_ref, prefix + digest, Mechanism.RSA_PKCS
            )
        if isinstance(padding, asym_padding.PSS):
            return self._sign_pss(digest, hash_algorithm, padding)
        self._refuse(f"{padding.name} padding")

    def _sign_pss(
        self, digest: bytes, hash_algorithm: hashes.HashAlgorithm, pss: asym_padding.PSS
    ) -> bytes:
        """RFC 8017 section 8.1 through CKM_RSA_PKCS_PSS with explicit parameters."""
        mgf = pss.mgf
        mgf_hash = (
            _PSS_HASH.get(mgf._algorithm.name) if isinstance(mgf, asym_padding.MGF1) else None
        )
        hash_mechanism = _PSS_HASH.get(hash_algorithm.name)
        if hash_mechanism is None or mgf_hash is None:
            self._refuse(f"PSS with {hash_algorithm.name} and this MGF")
        salt = pss._salt_length
        if isinstance(salt, asym_padding._MaxLength):
            salt = asym_padding.calculate_max_pss_salt_length(self._public, hash_algorithm)
        elif isinstance(salt, asym_padding._DigestLength):
            salt = hash_algorithm.digest_size
        elif not isinstance(salt, int):
            self._refuse("PSS.AUTO, which only verification can use")
        param = (hash_mechanism[0], mgf_hash[1], salt)
        return self._backend._sign(
            self._key_id, self._key_ref, digest, Mechanism.RSA_PKCS_PSS, param
        )


class _TokenEd25519Key(_TokenKey, HeldEd25519Key):
    """An Ed25519 private key on the token: pure EdDSA (CKM_EDDSA) over the whole message."""

    def __init__(
        self,
        backend: Pkcs11Backend,
        key_id: bytes,
        key_ref: str,
        public: ed25519.Ed25519PublicKey,
    ) -> None:
        HeldEd25519Key.__init__(self, key_ref, public)
        self._backend = backend
        self._key_id = key_id

    def sign(self, data: Buffer) -> bytes:
        """RFC 8032 Ed25519: the token hashes the message itself."""
        return self._backend._sign(self._key_id, self._key_ref, bytes(data), Mechanism.EDDSA)


def _format_ref(key_id: bytes, label: str) -> str:
    """An RFC 7512 URI naming the key by CKA_ID (percent-encoded bytes) and label."""
    id_part = "".join(f"%{byte:02x}" for byte in key_id)
    return f"pkcs11:id={id_part};object={quote(label, safe='')}"


def _parse_ref(key_ref: str) -> bytes:
    """The CKA_ID that a ``pkcs11:`` URI names (RFC 7512 section 2.3)."""
    scheme, colon, rest = key_ref.partition(":")
    path = rest.partition("?")[0]
    attributes = dict(part.partition("=")[::2] for part in path.split(";") if part)
    key_id = unquote_to_bytes(attributes.get("id", ""))
    if scheme != "pkcs11" or not colon or not key_id:
        raise ConfigError(
            f"{key_ref!r} is not a pkcs11: URI with an id, as the PKCS#11 backend writes",
            key_ref=key_ref,
        )
    return key_id


def _describe(exc: p11.PKCS11Error) -> str:
    """The PKCS#11 error's name (the CKR_ code) and any message python-pkcs11 gave it."""
    message = str(exc).strip()
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
