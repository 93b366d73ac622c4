"""The whole authority with CA keys in SoftHSM2, on SQLite and on PostgreSQL."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pkcs11
import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from iotpki.core.encoding import pem
from iotpki.core.models import KeyAlgorithm

from conftest import ManualClock, device_csr, make_installation
from softhsm import softhsm_token

pytestmark = pytest.mark.interop


@pytest.mark.parametrize("algorithm", [KeyAlgorithm.P256, KeyAlgorithm.RSA3072])
def test_hsm_ca_issues_what_openssl_verifies(
    tmp_path: Path, database_url: str, clock: ManualClock, algorithm: KeyAlgorithm
) -> None:
    module, label, pin = softhsm_token(tmp_path)
    inst = make_installation(
        tmp_path / "home",
        database_url,
        clock=clock,
        key_backend="pkcs11",
        pkcs11_module=module,
        pkcs11_token=label,
        pkcs11_pin=pin,
    )
    try:
        issuing = inst.authority.get_ca("issuing")
        assert issuing.key_backend == "pkcs11"
        assert issuing.key_ref is not None and issuing.key_ref.startswith("pkcs11:")
        inst.authority.create_issuing(
            "hsm-rsa",
            parent="root",
            common_name="HSM CA",
            algorithm=algorithm,
            lifetime=issuing.certificate.not_valid_after_utc - clock.now(),
            backend="pkcs11",
            actor="t",
        )
        issued = inst.authority.issue(
            device_csr("dev-1"), profile="device", ca="hsm-rsa", actor="t"
        )
        chain = inst.authority.chain("hsm-rsa")
        (tmp_path / "root.pem").write_bytes(pem([chain[-1]]))
        (tmp_path / "leaf.pem").write_bytes(pem(issued.chain))
        result = subprocess.run(
            [
                "openssl",
                "verify",
                "-CAfile",
                str(tmp_path / "root.pem"),
                "-untrusted",
                str(tmp_path / "leaf.pem"),
                str(tmp_path / "leaf.pem"),
            ],
            capture_output=True,
            text=True,
        )
        assert result.stdout.strip().endswith("OK"), result.stderr
        _assert_not_extractable(module, label)
        assert not (tmp_path / "home" / "keys").exists() or not any(
            (tmp_path / "home" / "keys").iterdir()
        ), "no CA key may be written to files when the backend is pkcs11"
        assert (
            issued.certificate.public_bytes(Encoding.DER)
            == inst.authority.get(issued.record.serial).der
        )
    finally:
        inst.close()


def _assert_not_extractable(module: str, label: str) -> None:
    token = pkcs11.lib(module).get_token(token_label=label)
    with token.open() as session:  # the backend's login is process-wide
        keys = list(session.get_objects({pkcs11.Attribute.CLASS: pkcs11.ObjectClass.PRIVATE_KEY}))
        assert len(keys) == 3
        for key in keys:
            assert key[pkcs11.Attribute.EXTRACTABLE] is False
            assert key[pkcs11.Attribute.SENSITIVE] is True
            with pytest.raises(pkcs11.exceptions.PKCS11Error):
                key[pkcs11.Attribute.VALUE]
