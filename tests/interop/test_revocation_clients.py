"""Revocation through real clients: ``openssl ocsp``, ``openssl verify -crl_check``,
``openssl crl -verify`` and GnuTLS's ``ocsptool`` and ``certtool``, against a real server."""

from __future__ import annotations

import base64
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from revocationkit import PEM as _PEM
from revocationkit import RevocationServer as Server
from revocationkit import revocation_server, wait_for

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    delays = {"revocation_delay": "1s", "full_crl_delay": "2s"}
    with revocation_server(tmp_path_factory.mktemp("revocation"), revocation=delays) as running:
        yield running


def _openssl_ocsp(server: Server, cert: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "openssl", "ocsp", "-sha1",
            "-issuer", str(server.dir / "issuing.pem"),
            "-cert", str(cert),
            "-url", f"{server.url}/ocsp",
            "-CAfile", str(server.dir / "chain.pem"),
            "-resp_text", *extra,
        ],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def _stranger(server: Server) -> Path:
    """A certificate naming the issuing CA as issuer with a serial that CA never issued."""
    key = ec.generate_private_key(ec.SECP256R1())
    issuer = server.inst.authority.get_ca("issuing").certificate
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "forged")]))
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    path = server.dir / "stranger.pem"
    path.write_bytes(cert.public_bytes(_PEM))
    return path


def test_openssl_ocsp_good_revoked_unknown(server: Server) -> None:
    cert, path = server.issue("ocsp-good")
    for nonce in ((), ("-no_nonce",)):
        out = _openssl_ocsp(server, path, *nonce)
        assert out.returncode == 0, out.stderr
        assert "Response verify OK" in out.stderr
        assert f"{path}: good" in out.stdout
        assert ("WARNING: no nonce in response" not in out.stderr) or nonce
    assert "OCSP Nonce" in _openssl_ocsp(server, path).stdout
    server.revoke(cert)
    revoked = _openssl_ocsp(server, path, "-no_nonce")
    assert "Response verify OK" in revoked.stderr
    assert f"{path}: revoked" in revoked.stdout
    assert "Reason: keyCompromise" in revoked.stdout
    unknown = _openssl_ocsp(server, _stranger(server))
    assert "Response verify OK" in unknown.stderr and ": unknown" in unknown.stdout


def test_openssl_ocsp_get_and_sha256(server: Server) -> None:
    _, path = server.issue("ocsp-get")
    out = subprocess.run(
        [
            "openssl", "ocsp", "-sha256",
            "-issuer", str(server.dir / "issuing.pem"), "-cert", str(path),
            "-url", f"{server.url}/ocsp", "-CAfile", str(server.dir / "chain.pem"),
            "-no_nonce", "-reqout", str(server.dir / "req.der"),
        ],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert "Response verify OK" in out.stderr and ": good" in out.stdout
    encoded = quote(base64.b64encode((server.dir / "req.der").read_bytes()).decode(), safe="")
    got = subprocess.run(
        ["curl", "-sf", "-D", "-", "-o", str(server.dir / "resp.der"),
         f"{server.url}/ocsp/{encoded}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "max-age=" in got.stdout.lower()
    verified = subprocess.run(
        ["openssl", "ocsp", "-respin", str(server.dir / "resp.der"), "-no_nonce",
         "-CAfile", str(server.dir / "chain.pem"), "-issuer", str(server.dir / "issuing.pem"),
         "-sha256", "-cert", str(path)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert "Response verify OK" in verified.stderr and ": good" in verified.stdout


def test_crl_visible_within_the_delay_and_openssl_verify(server: Server) -> None:
    _, good_path = server.issue("crl-good")
    bad, bad_path = server.issue("crl-bad")
    server.revoke(bad)

    def listed() -> bool:
        crl_path = server.crl_pem("issuing")
        crl = x509.load_pem_x509_crl(crl_path.read_bytes())
        return crl.get_revoked_certificate_by_serial_number(bad.serial_number) is not None

    wait_for(listed, "the complete CRL listing the revoked certificate")
    crls = [server.crl_pem("issuing"), server.crl_pem("root")]
    for path in crls:
        ca = "root" if "root" in path.name else "issuing"
        check = subprocess.run(
            ["openssl", "crl", "-in", str(path), "-CAfile", str(server.dir / f"{ca}.pem"),
             "-verify", "-noout"],
            capture_output=True, text=True,
        )  # fmt: skip
        assert "verify OK" in check.stderr, check.stderr
    bundle = server.dir / "crls.pem"
    bundle.write_text("".join(p.read_text() for p in crls))
    for mode in ("-crl_check", "-crl_check_all"):
        base = ["openssl", "verify", mode, "-CAfile", str(server.dir / "root.pem"),
                "-untrusted", str(server.dir / "issuing.pem"), "-CRLfile", str(bundle)]  # fmt: skip
        ok = subprocess.run([*base, str(good_path)], capture_output=True, text=True)
        assert ok.returncode == 0 and ": OK" in ok.stdout, ok.stdout + ok.stderr
        refused = subprocess.run([*base, str(bad_path)], capture_output=True, text=True)
        assert refused.returncode != 0 and "certificate revoked" in refused.stdout + refused.stderr


def test_delta_crl_with_openssl_use_deltas(server: Server) -> None:
    _, good_path = server.issue("delta-good")
    bad, bad_path = server.issue("delta-bad")
    server.revoke(bad)

    def in_delta() -> bool:
        crl = x509.load_pem_x509_crl(server.crl_pem("issuing", "-delta").read_bytes())
        return crl.get_revoked_certificate_by_serial_number(bad.serial_number) is not None

    wait_for(in_delta, "the delta CRL listing the revoked certificate")
    bundle = server.dir / "with-delta.pem"
    bundle.write_text(
        server.crl_pem("issuing").read_text() + server.crl_pem("issuing", "-delta").read_text()
    )
    base = ["openssl", "verify", "-crl_check", "-use_deltas", "-CAfile",
            str(server.dir / "root.pem"), "-untrusted", str(server.dir / "issuing.pem"),
            "-CRLfile", str(bundle)]  # fmt: skip
    assert subprocess.run([*base, str(good_path)], capture_output=True).returncode == 0
    refused = subprocess.run([*base, str(bad_path)], capture_output=True, text=True)
    assert "certificate revoked" in refused.stdout + refused.stderr


@pytest.mark.skipif(shutil.which("ocsptool") is None, reason="gnutls-bin is not installed")
def test_gnutls_ocsptool_and_certtool(server: Server) -> None:
    cert, path = server.issue("gnutls")
    ask = [
        "ocsptool", "--ask",  # the URL is the certificate's AIA: this server
        "--load-issuer", str(server.dir / "issuing.pem"),
        "--load-cert", str(path),
        "--load-trust", str(server.dir / "chain.pem"),
    ]  # fmt: skip
    good = subprocess.run(ask, capture_output=True, text=True, timeout=30)
    assert "Certificate Status: good" in good.stdout, good.stdout + good.stderr
    assert "Verifying OCSP Response: Success" in good.stdout
    server.revoke(cert)
    revoked = subprocess.run(ask, capture_output=True, text=True, timeout=30)
    assert "Certificate Status: revoked" in revoked.stdout, revoked.stdout + revoked.stderr
    assert "Verifying OCSP Response: Success" in revoked.stdout
    crl = server.crl_pem("issuing")
    checked = subprocess.run(
        ["certtool", "--verify-crl", "--load-ca-certificate", str(server.dir / "issuing.pem"),
         "--infile", str(crl)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert checked.returncode == 0 and "Verified" in checked.stdout, checked.stdout
