"""curl with OpenSSL as the EST client, over real TLS: cacerts, simpleenroll with Basic and with
an IDevID, simplereenroll with the issued certificate; openssl pkcs7 parses, openssl verify
checks."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from estkit import Manufacturer, b64_csr, write_identity
from estserver import RunningServer, https_server
from iotpki.core.enrollment import Enrollment
from iotpki.core.models import RevocationReason
from iotpki.services.installation import Installation

from conftest import ManualClock, device_csr, make_installation

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(not shutil.which("curl"), reason="curl is not installed"),
]


@pytest.fixture
def setup(
    tmp_path: Path, clock: ManualClock
) -> Iterator[tuple[Installation, Enrollment, Manufacturer, RunningServer]]:
    inst = make_installation(tmp_path / "home", clock=clock, lint_background=False)
    enrollment = Enrollment(inst.authority)
    maker = Manufacturer.create()
    enrollment.add_bootstrap_ca("acme", maker.cert, enroll_policy="any", actor="test")
    with https_server(inst) as server:
        yield inst, enrollment, maker, server
    inst.close()


def _curl(server: RunningServer, path: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [
            "curl",
            "--silent",
            "--show-error",
            "--cacert",
            str(server.ca_file),
            "--write-out",
            "\n%{http_code}",
            *args,
            f"{server.url}/.well-known/est/{path}",
        ],
        capture_output=True,
        timeout=30,
        check=False,
    )


def _split(result: subprocess.CompletedProcess[bytes]) -> tuple[bytes, int]:
    body, _, code = result.stdout.rpartition(b"\n")
    return body, int(code)


def _pkcs7_to_pem(body: bytes, tmp_path: Path, name: str) -> Path:
    """base64 -d | openssl pkcs7 -inform DER -print_certs, as INTEROP.md describes."""
    der = subprocess.run(["base64", "-d"], input=body, capture_output=True, check=True).stdout
    out = tmp_path / f"{name}.pem"
    subprocess.run(
        ["openssl", "pkcs7", "-inform", "DER", "-print_certs", "-out", str(out)],
        input=der,
        check=True,
        capture_output=True,
    )
    return out


def _verify(tmp_path: Path, server: RunningServer, leaf: Path, chain: Path) -> None:
    result = subprocess.run(
        ["openssl", "verify", "-CAfile", str(server.ca_file), "-untrusted", str(chain), str(leaf)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert ": OK" in result.stdout


def test_curl_enrolls_with_basic_and_idevid_then_reenrolls(
    tmp_path: Path,
    setup: tuple[Installation, Enrollment, Manufacturer, RunningServer],
    clock: ManualClock,
) -> None:
    inst, enrollment, maker, server = setup
    body, code = _split(_curl(server, "cacerts"))
    assert code == 200
    chain = _pkcs7_to_pem(body, tmp_path, "cacerts")
    assert chain.read_text().count("BEGIN CERTIFICATE") == 2

    # simpleenroll with HTTP Basic and a one-time secret
    secret, _ = enrollment.create_secret("curl-dev-1", actor="test")
    csr_file = tmp_path / "csr.b64"
    key = ec.generate_private_key(ec.SECP256R1())
    csr_file.write_bytes(b64_csr(device_csr("curl-dev-1", key=key)))
    args = ["-H", "Content-Type: application/pkcs10", "--data-binary", f"@{csr_file}"]
    body, code = _split(_curl(server, "simpleenroll", "--user", f"curl-dev-1:{secret}", *args))
    assert code == 200, body
    leaf = _pkcs7_to_pem(body, tmp_path, "basic")
    _verify(tmp_path, server, leaf, chain)
    _, reused = _split(_curl(server, "simpleenroll", "--user", f"curl-dev-1:{secret}", *args))
    assert reused == 401

    # simpleenroll with an IDevID as TLS client certificate
    id_key, idevid = maker.idevid("SN-CURL-7")
    id_cert, id_key_file = write_identity(tmp_path, "idevid", id_key, idevid)
    key = ec.generate_private_key(ec.SECP256R1())
    csr_file.write_bytes(b64_csr(device_csr("SN-CURL-7", key=key)))
    tls = ["--cert", str(id_cert), "--key", str(id_key_file)]
    body, code = _split(_curl(server, "simpleenroll", *tls, *args))
    assert code == 200, body
    ldevid = _pkcs7_to_pem(body, tmp_path, "idevid-enrolled")
    _verify(tmp_path, server, ldevid, chain)

    # simplereenroll with the issued certificate and a new key
    new_key = ec.generate_private_key(ec.SECP256R1())
    csr_file.write_bytes(b64_csr(device_csr("SN-CURL-7", key=new_key)))
    key_file = tmp_path / "ldevid.key"
    write_identity(tmp_path, "ldevid", key, load_pem(ldevid))
    tls = ["--cert", str(tmp_path / "ldevid.pem"), "--key", str(key_file)]
    body, code = _split(_curl(server, "simplereenroll", *tls, *args))
    assert code == 200, body
    renewed = _pkcs7_to_pem(body, tmp_path, "renewed")
    _verify(tmp_path, server, renewed, chain)
    assert load_pem(renewed).public_key() == new_key.public_key()

    # an expired certificate gets an HTTP 401 with a reason, not a TLS alert
    clock.advance(timedelta(days=40))
    body, code = _split(_curl(server, "simplereenroll", *tls, *args))
    assert code == 401
    assert b"expired" in body
    clock.advance(timedelta(days=-40))

    # a revoked certificate gets 403
    serial = format(load_pem(renewed).serial_number, "x")
    inst.authority.revoke(serial, reason=RevocationReason.SUPERSEDED, actor="test")
    write_identity(tmp_path, "renewed-id", new_key, load_pem(renewed))
    tls = ["--cert", str(tmp_path / "renewed-id.pem"), "--key", str(tmp_path / "renewed-id.key")]
    _, code = _split(_curl(server, "simplereenroll", *tls, *args))
    assert code == 403


def load_pem(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())
