"""TPM 2.0 key backend (tpm2-pytss): device keys created inside the TPM and never exported.

Keys are made by TPM2_Create under a persistent storage root key (SRK, ECC P-256, at
0x81000001 as the TCG provisioning guidance places it) with fixedTPM | fixedParent |
sensitiveDataOrigin: the TPM generates them and refuses to duplicate them. What is kept on disk,
``<key_dir>/<label>.tpmkey``, is the public area and the private area *wrapped by the SRK*, which
only this TPM can load. A key is named ``tpm:<path>``.

Every operation loads the key, uses it and flushes it: a TPM has few transient object slots
(swtpm three) and without a resource manager (tpm2-abrmd) nothing else frees them.

Also here, for the device side of attestation: restricted attestation keys (AK), TPM2_Certify
into a WebAuthn ``tpm`` attestation statement over an ACME key authorization, the EK certificate
from NV, and TPM2_ActivateCredential for the AK CA.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature
from cryptography.utils import Buffer
from tpm2_pytss import ESAPI, TCTILdr, TSS2_Exception
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_CAP, TPM2_RH, TPM2_SE, TPM2_ST, TPMA_OBJECT
from tpm2_pytss.tsskey import TSSPrivKey
from tpm2_pytss.types import (
    TPM2B_DATA,
    TPM2B_DIGEST,
    TPM2B_ENCRYPTED_SECRET,
    TPM2B_ID_OBJECT,
    TPM2B_PRIVATE,
    TPM2B_PUBLIC,
    TPMS_SCHEME_HASH,
    TPMT_SIG_SCHEME,
    TPMT_SYM_DEF,
    TPMT_TK_HASHCHECK,
    TPMU_SIG_SCHEME,
)

from iotpki.core.attestation import key_authorization_digest
from iotpki.core.models import KeyAlgorithm
from iotpki.errors import BackendError, ConfigError, KeyMissing
from iotpki.keys.held import HeldEcKey, HeldKey, HeldRsaKey
from iotpki.keys.held import digest as held_digest

__all__ = ["EK_CERT_NV_INDEX", "EK_HANDLE", "SRK_HANDLE", "TpmBackend"]

_T = TypeVar("_T")

SRK_HANDLE = 0x81000001  # TCG TPM v2.0 Provisioning Guidance, section 7.8: the storage key
EK_HANDLE = 0x81010001  # ... the RSA 2048 endorsement key
EK_CERT_NV_INDEX = 0x01C00002  # TCG EK Credential Profile 2.0, section 2.2.1.4

_BOUND = (
    TPMA_OBJECT.FIXEDTPM
    | TPMA_OBJECT.FIXEDPARENT
    | TPMA_OBJECT.SENSITIVEDATAORIGIN
    | TPMA_OBJECT.USERWITHAUTH
)
_SRK_ATTRIBUTES = _BOUND | TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.DECRYPT | TPMA_OBJECT.NODA
_KEY_ATTRIBUTES = _BOUND | TPMA_OBJECT.SIGN_ENCRYPT
_AK_ATTRIBUTES = _BOUND | TPMA_OBJECT.SIGN_ENCRYPT | TPMA_OBJECT.RESTRICTED
_TEMPLATES = {
    KeyAlgorithm.P256: "ecc256:ecdsa-sha256:null",
    KeyAlgorithm.P384: "ecc384:ecdsa-sha384:null",
    KeyAlgorithm.RSA2048: "rsa2048:rsassa-sha256:null",
    KeyAlgorithm.RSA3072: "rsa3072:rsassa-sha256:null",
}
_TPM_HASH = {"sha256": TPM2_ALG.SHA256, "sha384": TPM2_ALG.SHA384, "sha512": TPM2_ALG.SHA512}
_COSE_ES256 = -7
_COSE_RS256 = -257


class TpmBackend:
    """Device keys in one TPM 2.0 reached through a TCTI (``device:/dev/tpmrm0``, ``swtpm:...``)."""

    name = "tpm"

    def __init__(self, tcti: str, key_dir: Path) -> None:
        self._tcti = tcti
        self._key_dir = key_dir
        self._lock = threading.Lock()
        self._context: ESAPI | None = None
        self._srk_handle: ESYS_TR | None = None

    def __repr__(self) -> str:
        return f"TpmBackend({self._tcti!r}, {str(self._key_dir)!r})"

    def generate(self, label: str, algorithm: KeyAlgorithm) -> str:
        """Create a non-exportable signing key under the SRK; return its ``tpm:`` reference."""
        template = _TEMPLATES.get(algorithm)
        if template is None:
            raise ConfigError(
                f"the TPM backend cannot hold {algorithm} keys", algorithm=str(algorithm)
            )
        return self._create(label, template, _KEY_ATTRIBUTES)

    def create_attestation_key(self, label: str) -> str:
        """Create a restricted ECDSA P-256 attestation key (AK) under the SRK."""
        return self._create(label, "ecc256:ecdsa-sha256:null", _AK_ATTRIBUTES)

    def public_key(self, key_ref: str) -> CertificateIssuerPublicKeyTypes:
        """The public half, from the key file's public area."""
        public, _ = self._read(key_ref)
        loaded = serialization.load_pem_public_key(public.publicArea.to_pem())
        if not isinstance(loaded, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
            raise BackendError(f"TPM key {key_ref} has an unexpected type", key_ref=key_ref)
        return loaded

    def public_area(self, key_ref: str) -> bytes:
        """The key's TPMT_PUBLIC, as an attestation statement carries it (``pubArea``)."""
        public, _ = self._read(key_ref)
        return bytes(public.publicArea.marshal())

    def tss2_pem(self, key_ref: str) -> bytes:
        """The key as a ``TSS2 PRIVATE KEY`` PEM (the TPM-wrapped blob and its parent, the SRK):
        OpenSSL's tpm2 provider loads it, so Python's ``ssl`` can do TLS with the TPM key."""
        public, private = self._read(key_ref)
        return bytes(TSSPrivKey(private, public, empty_auth=True, parent=SRK_HANDLE).to_pem())

    def signer(self, key_ref: str) -> TpmEcKey | TpmRsaKey:
        """A cryptography private key whose ``sign`` the TPM performs."""
        public = self.public_key(key_ref)
        if isinstance(public, ec.EllipticCurvePublicKey):
            return TpmEcKey(self, key_ref, public)
        if isinstance(public, rsa.RSAPublicKey):
            return TpmRsaKey(self, key_ref, public)
        raise BackendError(f"TPM key {key_ref} cannot sign", key_ref=key_ref)

    def endorsement_certificate(self) -> x509.Certificate:
        """The EK certificate the manufacturer stored in NV index 0x01c00002."""

        def read(ctx: ESAPI) -> bytes:
            index = ctx.tr_from_tpmpublic(EK_CERT_NV_INDEX)
            nv_public, _ = ctx.nv_read_public(index)
            size = int(nv_public.nvPublic.dataSize)
            data = b""
            while len(data) < size:  # NV reads are limited to TPM_PT_NV_BUFFER_MAX per call
                chunk = min(768, size - len(data))
                data += bytes(ctx.nv_read(index, chunk, len(data)))
            ctx.tr_close(index)
            return data

        der = self._run("reading the EK certificate", None, read)
        try:
            return x509.load_der_x509_certificate(der)
        except ValueError as exc:
            raise BackendError(f"the EK certificate in NV does not parse: {exc}") from exc

    def certify(self, key_ref: str, ak_ref: str, qualifying_data: bytes) -> tuple[bytes, bytes]:
        """TPM2_Certify the key with the AK; returns (TPMS_ATTEST bytes, DER ECDSA signature)."""
        key_public, key_private = self._read(key_ref)
        ak_public, ak_private = self._read(ak_ref)

        def certify(ctx: ESAPI) -> tuple[bytes, bytes]:
            with (
                self._loaded(ctx, key_public, key_private) as key,
                self._loaded(ctx, ak_public, ak_private) as ak,
            ):
                info, signature = ctx.certify(
                    key, ak, TPM2B_DATA(qualifying_data), TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL)
                )
            return bytes(info.marshal())[2:], _der_signature(signature)

        return self._run("certifying a key", key_ref, certify)

    def attestation_object(
        self,
        key_ref: str,
        ak_ref: str,
        ak_chain: Sequence[x509.Certificate],
        key_authorization: str,
    ) -> bytes:
        """A CBOR WebAuthn attestation object (fmt ``tpm``) answering device-attest-01."""
        cert_info, sig = self.certify(key_ref, ak_ref, key_authorization_digest(key_authorization))
        statement = {
            "ver": "2.0",
            "alg": _COSE_ES256,
            "x5c": [cert.public_bytes(serialization.Encoding.DER) for cert in ak_chain],
            "sig": sig,
            "certInfo": cert_info,
            "pubArea": self.public_area(key_ref),
        }
        return bytes(cbor2.dumps({"fmt": "tpm", "attStmt": statement}))

    def activate_credential(self, ak_ref: str, credential_blob: bytes, secret: bytes) -> bytes:
        """TPM2_ActivateCredential: recover the AK CA's secret with the EK (Part 3 section 12.5)."""
        ak_public, ak_private = self._read(ak_ref)

        def activate(ctx: ESAPI) -> bytes:
            ek = ctx.tr_from_tpmpublic(EK_HANDLE)
            # The EK's authPolicy is PolicySecret(TPM_RH_ENDORSEMENT) (EK Credential Profile 2.3).
            session = ctx.start_auth_session(
                ESYS_TR.NONE,
                ESYS_TR.NONE,
                TPM2_SE.POLICY,
                TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL),
                TPM2_ALG.SHA256,
            )
            try:
                ctx.policy_secret(ESYS_TR.ENDORSEMENT, session, expiration=0)
                with self._loaded(ctx, ak_public, ak_private) as ak:
                    recovered = ctx.activate_credential(
                        ak,
                        ek,
                        TPM2B_ID_OBJECT.unmarshal(credential_blob)[0],
                        TPM2B_ENCRYPTED_SECRET.unmarshal(secret)[0],
                        session2=session,
                    )
            finally:
                ctx.flush_context(session)
                ctx.tr_close(ek)
            return bytes(recovered)

        return self._run("activating a credential", ak_ref, activate)

    def close(self) -> None:
        """Close the TPM connection; the next call opens a new one."""
        with self._lock:
            context, self._context = self._context, None
            self._srk_handle = None
            if context is not None:
                context.close()

    def _create(self, label: str, template: str, attributes: TPMA_OBJECT) -> str:
        """TPM2_Create under the SRK and write the wrapped key file."""
        path = self._key_dir / f"{label}.tpmkey"
        if path.exists():
            raise ConfigError(f"a TPM key named {label!r} exists already", key_ref=f"tpm:{path}")
        in_public = TPM2B_PUBLIC.parse(template, objectAttributes=attributes)

        def create(ctx: ESAPI) -> tuple[TPM2B_PRIVATE, TPM2B_PUBLIC]:
            private, public, *_ = ctx.create(self._srk(ctx), None, in_public)
            return private, public

        private, public = self._run(f"creating key {label!r}", None, create)
        self._key_dir.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes(public.marshal()) + bytes(private.marshal()))
        return f"tpm:{path}"

    def _read(self, key_ref: str) -> tuple[TPM2B_PUBLIC, TPM2B_PRIVATE]:
        """The public area and SRK-wrapped private area from a key file."""
        scheme, colon, path = key_ref.partition(":")
        if scheme != "tpm" or not colon or not path:
            raise ConfigError(f"{key_ref!r} is not a tpm: key reference", key_ref=key_ref)
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError as exc:
            raise KeyMissing(f"no TPM key file {path}", key_ref=key_ref) from exc
        try:
            public, used = TPM2B_PUBLIC.unmarshal(data)
            private, _ = TPM2B_PRIVATE.unmarshal(data[used:])
        except (TSS2_Exception, ValueError) as exc:
            raise BackendError(f"TPM key file {path} is corrupt", key_ref=key_ref) from exc
        return public, private

    def _srk(self, ctx: ESAPI) -> ESYS_TR:
        """The persistent SRK; created and made persistent on first use."""
        if self._srk_handle is not None:
            return self._srk_handle
        _, handles = ctx.get_capability(TPM2_CAP.HANDLES, SRK_HANDLE, 1)
        if SRK_HANDLE in list(handles.data.handles):
            self._srk_handle = ctx.tr_from_tpmpublic(SRK_HANDLE)
            return self._srk_handle
        template = TPM2B_PUBLIC.parse("ecc256:null:aes128cfb", objectAttributes=_SRK_ATTRIBUTES)
        transient, *_ = ctx.create_primary(None, template, ESYS_TR.OWNER)
        try:
            self._srk_handle = ctx.evict_control(ESYS_TR.OWNER, transient, SRK_HANDLE)
        finally:
            ctx.flush_context(transient)
        return self._srk_handle

    class _Loaded:
        """A key loaded under the SRK for one operation, flushed at exit."""

        def __init__(
            self, ctx: ESAPI, parent: ESYS_TR, public: TPM2B_PUBLIC, private: TPM2B_PRIVATE
        ) -> None:
            self._ctx = ctx
            self._handle = ctx.load(parent, private, public)

        def __enter__(self) -> ESYS_TR:
            return self._handle

        def __exit__(self, *exc: object) -> None:
            self._ctx.flush_context(self._handle)

    def _loaded(self, ctx: ESAPI, public: TPM2B_PUBLIC, private: TPM2B_PRIVATE) -> _Loaded:
        return TpmBackend._Loaded(ctx, self._srk(ctx), public, private)

    def _sign(self, key_ref: str, digest: bytes, scheme: TPM2_ALG, hash_name: str) -> Any:
        """TPM2_Sign a digest made in Python; returns the TPMT_SIGNATURE."""
        public, private = self._read(key_ref)
        hash_alg = _TPM_HASH.get(hash_name)
        if hash_alg is None:
            _refuse(key_ref, f"signatures with {hash_name}")
        in_scheme = TPMT_SIG_SCHEME(
            scheme=scheme, details=TPMU_SIG_SCHEME(any=TPMS_SCHEME_HASH(hashAlg=hash_alg))
        )
        # An unrestricted key signs any digest: the NULL ticket says "not hashed by the TPM".
        ticket = TPMT_TK_HASHCHECK(tag=TPM2_ST.HASHCHECK, hierarchy=TPM2_RH.NULL)

        def sign(ctx: ESAPI) -> Any:
            with self._loaded(ctx, public, private) as key:
                return ctx.sign(key, TPM2B_DIGEST(digest), in_scheme, ticket)

        return self._run("signing", key_ref, sign)

    def _run(self, action: str, key_ref: str | None, operation: Callable[[ESAPI], _T]) -> _T:
        """Run one TPM operation under the lock; TSS errors become BackendError."""
        with self._lock:
            try:
                if self._context is None:
                    name, _, conf = self._tcti.partition(":")
                    self._context = ESAPI(TCTILdr(name, conf or None))
                return operation(self._context)
            except TSS2_Exception as exc:
                raise BackendError(
                    f"the TPM ({self._tcti}) failed {action}: {exc}", key_ref=key_ref
                ) from exc


def _der_signature(signature: Any) -> bytes:
    """A TPMT_SIGNATURE as the bytes X.509 and WebAuthn use (DER ECDSA, raw RSA)."""
    if signature.sigAlg == TPM2_ALG.ECDSA:
        return encode_dss_signature(
            int.from_bytes(bytes(signature.signature.ecdsa.signatureR), "big"),
            int.from_bytes(bytes(signature.signature.ecdsa.signatureS), "big"),
        )
    if signature.sigAlg in (TPM2_ALG.RSASSA, TPM2_ALG.RSAPSS):
        return bytes(signature.signature.rsassa.sig)
    raise BackendError(f"the TPM returned an unexpected signature scheme {signature.sigAlg}")


def _digest(data: Buffer, algorithm: Prehashed | hashes.HashAlgorithm) -> tuple[bytes, str]:
    """The digest to send to the TPM and the name of its hash."""
    name = algorithm._algorithm.name if isinstance(algorithm, Prehashed) else algorithm.name
    return held_digest(data, algorithm), name


def _refuse(key_ref: str, what: str) -> NoReturn:
    """Raise for an operation the TPM key does not offer."""
    raise BackendError(f"TPM key {key_ref} does not support {what}", key_ref=key_ref)


class _TpmKey(HeldKey):
    """How a key in the TPM words its refusals."""

    where = "TPM"
    export_refusal = "does not support export (fixedTPM)"


class TpmEcKey(_TpmKey, HeldEcKey):
    """An EC key in the TPM: ECDSA over a digest made in Python."""

    def __init__(
        self, backend: TpmBackend, key_ref: str, public: ec.EllipticCurvePublicKey
    ) -> None:
        HeldEcKey.__init__(self, key_ref, public)
        self._backend = backend

    def sign(self, data: Buffer, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        """ECDSA in the TPM (TPM2_Sign with TPM_ALG_ECDSA), DER-encoded."""
        if (
            not isinstance(signature_algorithm, ec.ECDSA)
            or signature_algorithm.deterministic_signing
        ):
            self._refuse("anything but randomised ECDSA")
        digest, hash_name = _digest(data, signature_algorithm.algorithm)
        return _der_signature(self._backend._sign(self._key_ref, digest, TPM2_ALG.ECDSA, hash_name))


class TpmRsaKey(_TpmKey, HeldRsaKey):
    """An RSA key in the TPM: PKCS#1 v1.5 (TPM_ALG_RSASSA) over a digest made in Python."""

    def __init__(self, backend: TpmBackend, key_ref: str, public: rsa.RSAPublicKey) -> None:
        HeldRsaKey.__init__(self, key_ref, public)
        self._backend = backend

    def sign(
        self,
        data: Buffer,
        padding: asym_padding.AsymmetricPadding,
        algorithm: Any,
    ) -> bytes:
        """RSASSA-PKCS1-v1_5 in the TPM; the key's scheme allows no other padding."""
        if not isinstance(padding, asym_padding.PKCS1v15) or not isinstance(
            algorithm, (Prehashed, hashes.HashAlgorithm)
        ):
            self._refuse("padding other than PKCS#1 v1.5")
        digest, hash_name = _digest(data, algorithm)
        return _der_signature(
            self._backend._sign(self._key_ref, digest, TPM2_ALG.RSASSA, hash_name)
        )
