"""CRL partitions through real clients: ``openssl verify -crl_check``/``-crl_check_all`` and
GnuTLS ``certtool --verify-crl`` with the partition CRLs a real server publishes."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from revocationkit import RevocationServer as Server
from revocationkit import revocation_server, wait_for

pytestmark = pytest.mark.interop


def _cdp(cert: x509.Certificate, cls: type[x509.CRLDistributionPoints | x509.FreshestCRL]) -> str:
    points = cert.extensions.get_extension_for_class(cls).value
    assert points[0].full_name is not None
    return str(points[0].full_name[0].value)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with revocation_server(tmp_path_factory.mktemp("partitions")) as running:
        yield running


def _verify(server: Server, mode: str, crls: list[Path], cert: Path, *extra: str) -> str:
    bundle = server.dir / "bundle.pem"
    bundle.write_text("".join(p.read_text() for p in crls))
    done = subprocess.run(
        ["openssl", "verify", mode, *extra, "-CAfile", str(server.dir / "root.pem"),
         "-untrusted", str(server.dir / "issuing.pem"), "-CRLfile", str(bundle), str(cert)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    return f"rc={done.returncode} {done.stdout}{done.stderr}"


def _two_partitions(server: Server, stem: str) -> list[tuple[x509.Certificate, Path]]:
    """Certificates until two of them name different partitions."""
    first = server.issue(f"{stem}-0")
    for i in range(1, 40):
        other = server.issue(f"{stem}-{i}")
        if _cdp(other[0], x509.CRLDistributionPoints) != _cdp(first[0], x509.CRLDistributionPoints):
            return [first, other]
    raise AssertionError("forty random serials fell in one partition")


def test_openssl_verify_with_partition_crls(server: Server) -> None:
    (good, good_path), (bad, bad_path) = _two_partitions(server, "pv")
    server.revoke(bad)
    bad_url = _cdp(bad, x509.CRLDistributionPoints)

    def listed() -> bool:
        crl = x509.load_pem_x509_crl(server.fetch(bad_url, "bad-partition").read_bytes())
        return crl.get_revoked_certificate_by_serial_number(bad.serial_number) is not None

    wait_for(listed, "the partition CRL listing the revoked certificate")
    good_crl = server.fetch(_cdp(good, x509.CRLDistributionPoints), "good-partition")
    bad_crl = server.fetch(bad_url, "bad-partition")
    root_crl = server.fetch(f"{server.url}/crl/root.crl", "root")
    for mode in ("-crl_check", "-crl_check_all"):
        crls = [good_crl, bad_crl, root_crl]
        ok = _verify(server, mode, crls, good_path)
        assert ok.startswith("rc=0") and ": OK" in ok, ok
        refused = _verify(server, mode, crls, bad_path)
        assert not refused.startswith("rc=0") and "certificate revoked" in refused, refused


def test_openssl_rejects_a_partition_crl_whose_idp_is_not_the_cdp(server: Server) -> None:
    (good, good_path), (other, _) = _two_partitions(server, "pidp")

    def published() -> bool:
        server.fetch(_cdp(other, x509.CRLDistributionPoints), "other-partition")
        server.fetch(_cdp(good, x509.CRLDistributionPoints), "own-partition")
        return True

    wait_for(published, "both partition CRLs")
    other_crl = server.fetch(_cdp(other, x509.CRLDistributionPoints), "other-partition")
    own_crl = server.fetch(_cdp(good, x509.CRLDistributionPoints), "own-partition")
    wrong = _verify(server, "-crl_check", [other_crl], good_path)
    assert not wrong.startswith("rc=0") and "different CRL scope" in wrong, wrong
    right = _verify(server, "-crl_check", [own_crl], good_path)
    assert right.startswith("rc=0"), right


def test_openssl_use_deltas_with_a_partition_delta(server: Server) -> None:
    (good, good_path), (bad, bad_path) = _two_partitions(server, "pd")
    full_url = _cdp(bad, x509.CRLDistributionPoints)
    delta_url = _cdp(bad, x509.FreshestCRL)
    assert delta_url == full_url.removesuffix(".crl") + "-delta.crl"

    def published() -> bool:
        server.fetch(delta_url, "bad-delta")
        return True

    wait_for(published, "the partition's delta CRL")
    server.revoke(bad)

    def listed() -> bool:
        crl = x509.load_pem_x509_crl(server.fetch(full_url, "bad-full").read_bytes())
        return crl.get_revoked_certificate_by_serial_number(bad.serial_number) is not None

    wait_for(listed, "the partition CRL listing the revoked certificate")
    crls = [
        server.fetch(full_url, "bad-full"),
        server.fetch(delta_url, "bad-delta"),
        server.fetch(_cdp(good, x509.CRLDistributionPoints), "good-full"),
        server.fetch(_cdp(good, x509.FreshestCRL), "good-delta"),
    ]
    ok = _verify(server, "-crl_check", crls, good_path, "-use_deltas")
    assert ok.startswith("rc=0"), ok
    refused = _verify(server, "-crl_check", crls, bad_path, "-use_deltas")
    assert "certificate revoked" in refused, refused


@pytest.mark.skipif(shutil.which("certtool") is None, reason="gnutls-bin is not installed")
def test_gnutls_certtool_verifies_partition_crls(server: Server) -> None:
    cert, _ = server.issue("pg")
    server.revoke(cert)
    url = _cdp(cert, x509.CRLDistributionPoints)

    def listed() -> bool:
        crl = x509.load_pem_x509_crl(server.fetch(url, "gnutls").read_bytes())
        return crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None

    wait_for(listed, "the partition CRL listing the revoked certificate")
    for path in (
        server.fetch(url, "gnutls"),
        server.fetch(url.removesuffix(".crl") + "-delta.crl", "gnutls-delta"),
    ):
        checked = subprocess.run(
            ["certtool", "--verify-crl", "--load-ca-certificate", str(server.dir / "issuing.pem"),
             "--infile", str(path)],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert checked.returncode == 0 and "Verified" in checked.stdout, checked.stdout
