"""keys/pkcs11.py against a tpm2-pkcs11 token on a real software TPM: the same PKCS#11 path as
SoftHSM keeps a device key inside the TPM."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from iotpki.core.models import KeyAlgorithm
from iotpki.errors import BackendError
from iotpki.keys.pkcs11 import Pkcs11Backend

from tpm import SoftwareTpm, tpm2_pkcs11_token
from tpm import manufactured_tpm as manufactured_tpm
from tpm import swtpm as swtpm

pytestmark = pytest.mark.interop


def test_device_key_in_tpm_through_pkcs11(swtpm: SoftwareTpm, tmp_path: Path) -> None:
    module, label, pin = tpm2_pkcs11_token(swtpm, tmp_path)
    with Pkcs11Backend(module, label, pin) as backend:
        key_ref = backend.generate("device", KeyAlgorithm.P256)
        signer = backend.signer(key_ref)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tpm-device")])
        csr = (
            x509.CertificateSigningRequestBuilder().subject_name(name).sign(signer, hashes.SHA256())
        )
        assert csr.is_signature_valid
        assert csr.public_key() == backend.public_key(key_ref)
        with pytest.raises(BackendError, match="non-extractable"):
            signer.private_numbers()
    # A new session finds the key again by its pkcs11: URI.
    with Pkcs11Backend(module, label, pin) as again:
        assert again.public_key(key_ref) == csr.public_key()
