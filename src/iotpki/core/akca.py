"""The attestation-key CA ("AK CA"): certify a TPM's attestation key after credential activation.

A TPM vendor certifies the endorsement key (EK) — an encryption key — not the attestation keys a
device makes later. TPM 2.0 Part 1 section 24 ("Credential Protection") closes the gap:

1. the device sends its EK certificate and the public area of its AK; the AK CA checks the EK
   certificate against the registered manufacturer roots and the AK's attributes (a restricted,
   fixedTPM signing key), then seals a secret to *that EK and that AK name* with MakeCredential;
2. only the TPM holding the EK can unseal it, and TPM2_ActivateCredential releases it only if an
   object with that name is loaded in the same TPM: returning the secret proves both;
3. the AK CA then issues the AK certificate (the authority signs it) naming the device by
   ``urn:ek:sha256:...`` (RFC 4043 permanentIdentifier).

MakeCredential is done here in plain Python (KDFa, AES-CFB, HMAC, RSA-OAEP); the server needs no
TPM library. The challenge is stateless: the secret is an HMAC, under the installation's key, of
the nonce, time, AK name and EK, so that any replica can check the answer; the store records each
activated nonce until its challenge expires, so that a challenge is activated once.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from iotpki.core import policy
from iotpki.core.attestation import (
    FIXED_PARENT,
    FIXED_TPM,
    OID_AK_CERTIFICATE,
    OID_PERMANENT_IDENTIFIER,
    RESTRICTED,
    SENSITIVE_DATA_ORIGIN,
    SIGN_ENCRYPT,
    PublicArea,
    ek_permanent_identifier,
    parse_public_area,
    permanent_identifier_der,
    verify_chain,
)
from iotpki.core.models import KeyType
from iotpki.core.ports import Clock
from iotpki.core.ports.shared import OnceRegistry
from iotpki.errors import AttestationRejected

__all__ = [
    "AK_PROFILE",
    "ActivatedKey",
    "ActivationChallenge",
    "AttestationKeyCA",
    "ak_certificate_decision",
    "kdfa",
    "make_credential",
]

_AK_ATTRIBUTES = FIXED_TPM | FIXED_PARENT | SENSITIVE_DATA_ORIGIN | SIGN_ENCRYPT | RESTRICTED
_DECRYPT = 1 << 17
_DOMAIN = b"iotpki ak-ca activation v1"

# The record-keeping profile of AK certificates; their content is decided below, not by a CSR.
AK_PROFILE = policy.Profile(
    name="attestation-key",
    identity="device",
    key_types=(KeyType.P256, KeyType.P384, KeyType.RSA),
    default_lifetime=timedelta(days=365),
    max_lifetime=timedelta(days=3650),
    key_usage=("digital_signature",),
    lint="off",
)


def kdfa(
    algorithm: hashes.HashAlgorithm,
    key: bytes,
    label: bytes,
    context_u: bytes,
    context_v: bytes,
    bits: int,
) -> bytes:
    """TPM 2.0 Part 1 section 11.4.10.2: KDFa, the counter-mode KDF of SP 800-108 with HMAC."""
    out = b""
    counter = 0
    while len(out) * 8 < bits:
        counter += 1
        mac = hmac.new(key, digestmod=algorithm.name)
        mac.update(struct.pack(">I", counter) + label + b"\x00" + context_u + context_v)
        mac.update(struct.pack(">I", bits))
        out += mac.digest()
    return out[: bits // 8]


def make_credential(
    ek_public: rsa.RSAPublicKey, ak_name: bytes, credential: bytes, *, seed: bytes | None = None
) -> tuple[bytes, bytes]:
    """TPM2_MakeCredential for an RSA 2048 EK of the default template (SHA-256, AES-128-CFB).

    Returns the marshalled TPM2B_ID_OBJECT (credentialBlob) and TPM2B_ENCRYPTED_SECRET, the two
    inputs of TPM2_ActivateCredential (Part 3 section 12.5, Part 1 section 24).
    """
    sha256 = hashes.SHA256()
    seed = seed or secrets.token_bytes(sha256.digest_size)
    # Part 1 annex B.10.3: the seed is OAEP-encrypted to the EK with the label "IDENTITY".
    encrypted_seed = ek_public.encrypt(
        seed, padding.OAEP(padding.MGF1(sha256), sha256, b"IDENTITY\x00")
    )
    sym_key = kdfa(sha256, seed, b"STORAGE", ak_name, b"", 128)
    plaintext = struct.pack(">H", len(credential)) + credential  # TPM2B_DIGEST
    encryptor = Cipher(algorithms.AES(sym_key), CFB(b"\x00" * 16)).encryptor()
    enc_identity = encryptor.update(plaintext) + encryptor.finalize()
    hmac_key = kdfa(sha256, seed, b"INTEGRITY", b"", b"", sha256.digest_size * 8)
    outer = hmac.new(hmac_key, enc_identity + ak_name, "sha256").digest()
    id_object = struct.pack(">H", len(outer)) + outer + enc_identity
    return (
        struct.pack(">H", len(id_object)) + id_object,
        struct.pack(">H", len(encrypted_seed)) + encrypted_seed,
    )


@dataclass(frozen=True, slots=True)
class ActivationChallenge:
    """What the AK CA sends the device: the sealed credential and what to send back with it."""

    nonce: bytes
    issued_at: datetime
    credential_blob: bytes
    encrypted_secret: bytes


@dataclass(frozen=True, slots=True)
class ActivatedKey:
    """An attestation key proven to live in the TPM of a trusted EK."""

    ak: PublicArea
    ek_certificate: x509.Certificate
    permanent_identifier: str


class AttestationKeyCA:
    """Credential activation against registered EK manufacturer roots (pure, stateless)."""

    def __init__(
        self,
        *,
        ek_roots: Sequence[x509.Certificate],
        secret_key: bytes,
        clock: Clock,
        spent: OnceRegistry,
        validity: timedelta = timedelta(minutes=10),
    ) -> None:
        self._ek_roots = tuple(ek_roots)
        self._secret_key = secret_key
        self._spent = spent
        self._clock = clock
        self._validity = validity

    def challenge(
        self,
        ek_chain: Sequence[x509.Certificate],
        ak_pub_area: bytes,
    ) -> ActivationChallenge:
        """Check the EK certificate and AK, then seal a fresh secret to them (step 1)."""
        ek_cert, ak = self._check(ek_chain, ak_pub_area)
        ek_public = ek_cert.public_key()
        assert isinstance(ek_public, rsa.RSAPublicKey)  # _check refuses anything else
        nonce = secrets.token_bytes(16)
        issued_at = self._clock.now()
        credential = self._credential(nonce, issued_at, ak, ek_cert)
        blob, secret = make_credential(ek_public, ak.name, credential)
        return ActivationChallenge(nonce, issued_at, blob, secret)

    def activate(
        self,
        ek_chain: Sequence[x509.Certificate],
        ak_pub_area: bytes,
        nonce: bytes,
        issued_at: datetime,
        credential: bytes,
    ) -> ActivatedKey:
        """Check the secret the TPM released (step 2); return the AK to certify."""
        ek_cert, ak = self._check(ek_chain, ak_pub_area)
        now = self._clock.now()
        if not issued_at <= now <= issued_at + self._validity:
            raise AttestationRejected(
                "the activation challenge has expired", check="activation_expired"
            )
        expected = self._credential(nonce, issued_at, ak, ek_cert)
        if not hmac.compare_digest(expected, credential):
            raise AttestationRejected(
                "the activated credential is wrong: the AK is not in the TPM of this EK",
                check="activation",
            )
        expires = issued_at + self._validity
        if self._spent.spend("akca", nonce.hex(), ak.name.hex()[:128], now, expires) is not None:
            raise AttestationRejected(
                "the activation challenge was already used", check="activation_replayed"
            )
        return ActivatedKey(ak, ek_cert, ek_permanent_identifier(ek_cert.public_key()))

    def _check(
        self, ek_chain: Sequence[x509.Certificate], ak_pub_area: bytes
    ) -> tuple[x509.Certificate, PublicArea]:
        """The EK certificate chains to a registered root; the AK is a TPM-bound AK."""
        if not ek_chain:
            raise AttestationRejected("no EK certificate was sent", check="ek_chain")
        try:
            verify_chain(ek_chain, self._ek_roots, self._clock.now())
        except AttestationRejected as exc:
            raise AttestationRejected(
                f"the EK certificate is not from a registered manufacturer: {exc.message}",
                check="ek_chain",
            ) from exc
        ek_cert = ek_chain[0]
        ek_public = ek_cert.public_key()
        if not isinstance(ek_public, rsa.RSAPublicKey) or ek_public.key_size != 2048:
            raise AttestationRejected(
                "only RSA 2048 endorsement keys are supported", check="ek_chain"
            )
        ak = parse_public_area(ak_pub_area)
        if ak.attributes & _AK_ATTRIBUTES != _AK_ATTRIBUTES or ak.attributes & _DECRYPT:
            raise AttestationRejected(
                "the AK is not a restricted, fixedTPM signing key", check="ak_attributes"
            )
        return ek_cert, ak

    def _credential(
        self, nonce: bytes, issued_at: datetime, ak: PublicArea, ek_cert: x509.Certificate
    ) -> bytes:
        """The secret sealed to the TPM: an HMAC binding nonce, time, AK name and EK."""
        ek_spki = ek_cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        mac = hmac.new(self._secret_key, _DOMAIN, "sha256")
        for part in (
            nonce,
            issued_at.isoformat().encode(),
            ak.name,
            hashlib.sha256(ek_spki).digest(),
        ):
            mac.update(struct.pack(">H", len(part)) + part)
        return mac.digest()


def ak_certificate_decision(
    activated: ActivatedKey, now: datetime, lifetime: timedelta = AK_PROFILE.default_lifetime
) -> policy.Decision:
    """The content of an AK certificate (TCG EK Credential Profile section 3.2, WebAuthn 8.3.1):
    empty subject, critical SAN with the device's permanentIdentifier, tcg-kp-AIKCertificate."""
    san = x509.OtherName(
        OID_PERMANENT_IDENTIFIER, permanent_identifier_der(activated.permanent_identifier)
    )
    extensions: tuple[tuple[x509.ExtensionType, bool], ...] = (
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            True,
        ),
        (x509.ExtendedKeyUsage([OID_AK_CERTIFICATE]), False),
        (x509.SubjectAlternativeName([san]), True),
    )
    return policy.Decision(
        subject=x509.Name([]),
        sans=(san,),
        device_id=None,
        not_before=now - AK_PROFILE.backdate,
        not_after=now + lifetime,
        extensions=extensions,
    )
