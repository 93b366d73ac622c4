"""TPM attestation: server-side verification rate and device-side cost, beside a software key.

Run on demand: ``.venv/bin/python benchmarks/attestation.py``. Needs swtpm (Debian swtpm,
swtpm-tools) and tpm2-pytss (``pip install -e '.[tpm]'``). In one run, on a fresh swtpm:

- server: WebAuthn ``tpm`` attestation statements (device-attest-01 ``attObj``) parsed and fully
  verified per second by ``iotpki.core.attestation`` (chain, signature, certInfo/pubArea, key
  authorization, attributes), on one core; and, as the floor, a bare ECDSA P-256 verify;
- device: one ECDSA P-256 signature by a TPM-held key (TPM2_Sign through tpm2-pytss, key loaded
  and flushed each time) against the same signature by a software key (pyca/cryptography), and
  one attestation (TPM2_Certify + CBOR) against a software "attestation" (sign of the same bytes).

swtpm is a software TPM: a hardware TPM signs in tens of milliseconds, so device figures here are
a lower bound on real hardware cost; the server figures do not depend on the TPM.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from iotpki.core.attestation import (
    OID_AK_CERTIFICATE,
    OID_PERMANENT_IDENTIFIER,
    parse_attestation_object,
    permanent_identifier_der,
    verify_tpm_statement,
)
from iotpki.core.models import KeyAlgorithm
from iotpki.keys.tpm import TpmBackend

from tpm import manufacture, start_swtpm

KEY_AUTH = "benchmark-token.benchmark-thumbprint"


def rate(operation: Callable[[], object], seconds: float = 2.0) -> tuple[float, float]:
    """Operations per second and mean milliseconds per operation over about ``seconds``."""
    operation()  # warm up
    count = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        operation()
        count += 1
    return count / elapsed, elapsed / count * 1000


def _certificates(
    ak_public: ec.EllipticCurvePublicKey,
) -> tuple[x509.Certificate, x509.Certificate]:
    now = datetime.now(UTC)
    root_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Benchmark attestation root")])
    root = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(root_key.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(root_key, hashes.SHA256())
    )
    san = x509.OtherName(OID_PERMANENT_IDENTIFIER, permanent_identifier_der("urn:ek:bench"))
    ak_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(name)
        .public_key(ak_public)
        .serial_number(2)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([san]), critical=True)
        .add_extension(x509.ExtendedKeyUsage([OID_AK_CERTIFICATE]), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    return root, ak_cert


def main() -> None:
    """Run every figure and print the table."""
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        tpm = start_swtpm(manufacture(base / "manufacture"), base)
        backend = TpmBackend(tpm.tcti, base / "keys")
        try:
            key = backend.generate("device", KeyAlgorithm.P256)
            ak = backend.create_attestation_key("ak")
            ak_public = backend.public_key(ak)
            assert isinstance(ak_public, ec.EllipticCurvePublicKey)
            root, ak_cert = _certificates(ak_public)
            att_obj = backend.attestation_object(key, ak, [ak_cert], KEY_AUTH)
            now = datetime.now(UTC)

            def verify() -> object:
                statement = parse_attestation_object(att_obj)
                return verify_tpm_statement(
                    statement, key_authorization=KEY_AUTH, roots=[root], at=now
                )

            software = ec.generate_private_key(ec.SECP256R1())
            signature = software.sign(b"x" * 64, ec.ECDSA(hashes.SHA256()))
            tpm_signer = backend.signer(key)
            rows = [
                ("server: attestation statements verified", *rate(verify)),
                (
                    "server: bare ECDSA P-256 verify (floor)",
                    *rate(
                        lambda: software.public_key().verify(
                            signature, b"x" * 64, ec.ECDSA(hashes.SHA256())
                        )
                    ),
                ),
                (
                    "device: TPM ECDSA P-256 signature",
                    *rate(lambda: tpm_signer.sign(b"x" * 64, ec.ECDSA(hashes.SHA256()))),
                ),
                (
                    "device: software ECDSA P-256 signature",
                    *rate(lambda: software.sign(b"x" * 64, ec.ECDSA(hashes.SHA256()))),
                ),
                (
                    "device: TPM attestation (Certify + CBOR)",
                    *rate(lambda: backend.attestation_object(key, ak, [ak_cert], KEY_AUTH)),
                ),
                (
                    "device: software key 'attestation' (sign)",
                    *rate(lambda: software.sign(att_obj, ec.ECDSA(hashes.SHA256()))),
                ),
            ]
        finally:
            backend.close()
            tpm.stop()
    print(f"{'figure':<46} {'per second':>12} {'ms each':>10}")
    for label, per_second, ms in rows:
        print(f"{label:<46} {per_second:>12,.0f} {ms:>10.3f}")


if __name__ == "__main__":
    main()
