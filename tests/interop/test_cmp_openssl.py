"""CMP (RFC 9483) with ``openssl cmp`` as the client against a real ``iotpki serve``: MAC- and
signature-protected enrollment, p10cr, cr with implicit confirmation, kur, rr, genm, and the
refusals (wrong, reused and foreign credentials, replays) with their failInfo."""

from __future__ import annotations

import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from iotpki.protocols.cmp import codec
from servekit import BOUND, IOTPKI, Server, environment

pytestmark = pytest.mark.interop

RECIPIENT = "/CN=iotpki Issuing CA"


@dataclass
class Cmp:
    """A served installation and the files an ``openssl cmp`` run needs."""

    home: Path
    work: Path
    server: Server

    def iotpki(self, *args: str) -> str:
        done = subprocess.run(
            [*IOTPKI, "--home", str(self.home), *args],
            env=environment(),
            capture_output=True,
            text=True,
            timeout=BOUND,
            check=True,
        )
        return done.stdout

    def secret(self, device: str) -> str:
        return self.iotpki("est", "secret", device).strip().splitlines()[-1]

    def key(self, name: str) -> Path:
        path = self.work / f"{name}.key"
        subprocess.run(
            ["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(path)],
            check=True,
            timeout=BOUND,
        )
        return path

    def url(self, *, https: bool = False) -> list[str]:
        if https:
            port = self.server.https_port
            tls = ["-tls_used", "-tls_trusted", str(self.work / "root.pem")]
            return ["-server", f"127.0.0.1:{port}", "-path", ".well-known/cmp", *tls]
        return ["-server", f"127.0.0.1:{self.server.http_port}", "-path", ".well-known/cmp"]

    def openssl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # openssl cmp logs to stdout or stderr: both in .stdout
            ["openssl", "cmp", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=BOUND,
            cwd=self.work,
        )

    def verify(self, cert: Path) -> None:
        done = subprocess.run(
            ["openssl", "verify", "-CAfile", "root.pem", "-untrusted", "issuing.pem", str(cert)],
            capture_output=True,
            text=True,
            timeout=BOUND,
            cwd=self.work,
        )
        assert done.returncode == 0 and ": OK" in done.stdout, done.stdout + done.stdout


@pytest.fixture(scope="module")
def cmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cmp]:
    home = tmp_path_factory.mktemp("cmp") / "home"
    work = tmp_path_factory.mktemp("cmp-work")
    server = Server(home)
    server.wait_serving()
    served = Cmp(home, work, server)
    (work / "root.pem").write_text(served.iotpki("ca", "show", "root", "--pem"))
    (work / "issuing.pem").write_text(served.iotpki("ca", "show", "issuing", "--pem"))
    yield served
    server.finish()


def _mac_ir(
    cmp: Cmp, device: str, secret: str, cert: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    key = cmp.key(cert)
    return cmp.openssl(
        "-cmd", "ir", *cmp.url(), "-ref", device, "-secret", f"pass:{secret}",
        "-recipient", RECIPIENT, "-newkey", str(key), "-subject", f"/CN={device}",
        "-certout", f"{cert}.pem", "-unprotected_errors", *extra,
    )  # fmt: skip


def _refused(done: subprocess.CompletedProcess[str], fail_info: str) -> None:
    assert done.returncode != 0, done.stdout
    assert f"PKIFailureInfo: {fail_info}" in done.stdout, done.stdout


def test_ir_with_the_one_time_secret_issues_a_certificate_that_verifies(cmp: Cmp) -> None:
    done = _mac_ir(cmp, "cmp-1", cmp.secret("cmp-1"), "cmp-1", "-cacertsout", "capubs.pem")
    assert done.returncode == 0, done.stdout
    cmp.verify(cmp.work / "cmp-1.pem")
    cert = x509.load_pem_x509_certificate((cmp.work / "cmp-1.pem").read_bytes())
    assert cert.subject.rfc4514_string() == "CN=cmp-1"
    anchors = x509.load_pem_x509_certificates((cmp.work / "capubs.pem").read_bytes())
    root = x509.load_pem_x509_certificate((cmp.work / "root.pem").read_bytes())
    assert anchors == [root]
    assert "received PKICONF" in done.stdout  # certConf was sent and answered


def test_a_wrong_secret_and_a_reused_secret_are_refused_with_their_failinfo(cmp: Cmp) -> None:
    _refused(_mac_ir(cmp, "cmp-2", "not-the-secret", "cmp-2-wrong"), "badMessageCheck")
    secret = cmp.secret("cmp-2")
    assert _mac_ir(cmp, "cmp-2", secret, "cmp-2").returncode == 0
    reused = _mac_ir(cmp, "cmp-2", secret, "cmp-2-again")
    _refused(reused, "badMessageCheck")
    assert "already used" in reused.stdout


def test_p10cr_and_cr_with_implicit_confirmation(cmp: Cmp) -> None:
    key = cmp.key("cmp-3")
    csr = cmp.work / "cmp-3.csr"
    subprocess.run(
        ["openssl", "req", "-new", "-key", str(key), "-subj", "/CN=cmp-3", "-out", str(csr)],
        check=True,
        capture_output=True,
        timeout=BOUND,
    )
    done = cmp.openssl(
        "-cmd", "p10cr", *cmp.url(), "-ref", "cmp-3", "-secret", f"pass:{cmp.secret('cmp-3')}",
        "-recipient", RECIPIENT, "-csr", str(csr), "-certout", "cmp-3.pem",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout
    cmp.verify(cmp.work / "cmp-3.pem")
    key = cmp.key("cmp-4")
    done = cmp.openssl(
        "-cmd", "cr", *cmp.url(), "-ref", "cmp-4", "-secret", f"pass:{cmp.secret('cmp-4')}",
        "-recipient", RECIPIENT, "-newkey", str(key), "-subject", "/CN=cmp-4",
        "-certout", "cmp-4.pem", "-implicit_confirm",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout
    assert "PKICONF" not in done.stdout  # confirmation granted implicitly: no certConf
    cmp.verify(cmp.work / "cmp-4.pem")


def _manufacturer(cmp: Cmp, name: str, serial: str) -> tuple[Path, Path, Path]:
    """A manufacturer CA and one IDevID (subject serialNumber ``serial``) it issued."""
    work = cmp.work
    ca_key, ca_cert = work / f"{name}-ca.key", work / f"{name}-ca.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(ca_key), "-out", str(ca_cert), "-subj", f"/CN={name} CA",
         "-days", "30", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign"],
        check=True, capture_output=True, timeout=BOUND,
    )  # fmt: skip
    key, csr, cert = work / f"{serial}.key", work / f"{serial}.csr", work / f"{serial}.pem"
    subprocess.run(
        ["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(key), "-subj", f"/CN={serial}/serialNumber={serial}",
         "-out", str(csr)],
        check=True, capture_output=True, timeout=BOUND,
    )  # fmt: skip
    subprocess.run(
        ["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
         "-CAcreateserial", "-days", "30", "-out", str(cert)],
        check=True, capture_output=True, timeout=BOUND,
    )  # fmt: skip
    return ca_cert, cert, key


def _signed_ir(cmp: Cmp, cert: Path, key: Path, device: str) -> subprocess.CompletedProcess[str]:
    new_key = cmp.key(f"{device}-new")
    return cmp.openssl(
        "-cmd", "ir", *cmp.url(), "-cert", str(cert), "-key", str(key),
        "-newkey", str(new_key), "-subject", f"/CN={device}", "-trusted", "root.pem",
        "-certout", f"{device}-op.pem", "-unprotected_errors",
    )  # fmt: skip


def test_ir_signed_with_a_registered_idevid_and_a_foreign_one_refused(cmp: Cmp) -> None:
    mfr_ca, idevid, idevid_key = _manufacturer(cmp, "acme", "SN-CMP-1")
    cmp.iotpki("est", "bootstrap-ca", "add", "acme", str(mfr_ca), "--policy", "any")
    done = _signed_ir(cmp, idevid, idevid_key, "SN-CMP-1")
    assert done.returncode == 0, done.stdout
    cmp.verify(cmp.work / "SN-CMP-1-op.pem")
    _, foreign, foreign_key = _manufacturer(cmp, "stranger", "SN-CMP-2")
    _refused(_signed_ir(cmp, foreign, foreign_key, "SN-CMP-2"), "signerNotTrusted")


def test_kur_genm_and_rr_signed_with_the_current_certificate(cmp: Cmp) -> None:
    assert _mac_ir(cmp, "cmp-5", cmp.secret("cmp-5"), "cmp-5").returncode == 0
    new_key = cmp.key("cmp-5-next")
    done = cmp.openssl(
        "-cmd", "kur", *cmp.url(), "-cert", "cmp-5.pem", "-key", "cmp-5.key",
        "-newkey", str(new_key), "-trusted", "root.pem", "-certout", "cmp-5-next.pem",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout
    cmp.verify(cmp.work / "cmp-5-next.pem")
    old = x509.load_pem_x509_certificate((cmp.work / "cmp-5.pem").read_bytes())
    new = x509.load_pem_x509_certificate((cmp.work / "cmp-5-next.pem").read_bytes())
    assert new.subject == old.subject and new.public_key() != old.public_key()
    current = ["-cert", "cmp-5-next.pem", "-key", "cmp-5-next.key", "-trusted", "root.pem"]
    done = cmp.openssl("-cmd", "genm", *cmp.url(), *current, "-infotype", "signKeyPairTypes")
    assert done.returncode == 0 and "id-it-signKeyPairTypes" in done.stdout, done.stdout
    done = cmp.openssl("-cmd", "rr", *cmp.url(), *current, "-oldcert", "cmp-5-next.pem")
    assert done.returncode == 0 and "revocation accepted" in done.stdout, done.stdout
    again = cmp.openssl(
        "-cmd", "kur", *cmp.url(), *current, "-newkey", str(cmp.key("cmp-5-third")),
        "-certout", "cmp-5-third.pem", "-unprotected_errors",
    )  # fmt: skip
    _refused(again, "notAuthorized")  # a revoked certificate renews nothing


def test_the_https_listener_and_a_profile_label(cmp: Cmp) -> None:
    key = cmp.key("cmp-6")
    done = cmp.openssl(
        "-cmd", "ir", *cmp.url(https=True), "-ref", "cmp-6",
        "-secret", f"pass:{cmp.secret('cmp-6')}", "-recipient", RECIPIENT,
        "-newkey", str(key), "-subject", "/CN=cmp-6", "-certout", "cmp-6.pem",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout
    cmp.verify(cmp.work / "cmp-6.pem")
    labelled = [arg.replace(".well-known/cmp", ".well-known/cmp/p/gateway") for arg in cmp.url()]
    done = cmp.openssl(
        "-cmd", "ir", *labelled, "-ref", "cmp-7", "-secret", f"pass:{cmp.secret('cmp-7')}",
        "-recipient", RECIPIENT, "-newkey", str(cmp.key("cmp-7")), "-subject", "/CN=cmp-7",
        "-certout", "cmp-7.pem",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout
    cert = x509.load_pem_x509_certificate((cmp.work / "cmp-7.pem").read_bytes())
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.SERVER_AUTH in usages  # the gateway profile's


def _post(cmp: Cmp, der: bytes) -> codec.ReadMessage:
    request = urllib.request.Request(
        f"http://127.0.0.1:{cmp.server.http_port}/.well-known/cmp",
        data=der,
        headers={"Content-Type": "application/pkixcmp"},
    )
    with urllib.request.urlopen(request, timeout=BOUND) as response:
        assert response.headers["Content-Type"] == "application/pkixcmp"
        return codec.decode(response.read())


def test_a_replayed_transaction_never_issues_a_second_certificate(cmp: Cmp) -> None:
    key = cmp.key("cmp-8")
    cmp.openssl(  # no server listens on port 1: the request is only written out
        "-cmd", "ir", "-server", "127.0.0.1:1", "-ref", "cmp-8",
        "-secret", f"pass:{cmp.secret('cmp-8')}", "-recipient", RECIPIENT,
        "-newkey", str(key), "-subject", "/CN=cmp-8", "-certout", "unused.pem",
        "-reqout", "cmp-8-ir.der",
    )  # fmt: skip
    request = (cmp.work / "cmp-8-ir.der").read_bytes()
    first = _post(cmp, request)
    assert first.kind == "ip"
    second = _post(cmp, request)
    assert second.kind == "error"
    fail_info = second.body["pKIStatusInfo"]["failInfo"]
    assert fail_info[codec.FailInfo.TRANSACTION_ID_IN_USE] == 1
    unreadable = _post(cmp, b"\x30\x03\x02\x01\x02")
    assert unreadable.kind == "error"
    assert unreadable.body["pKIStatusInfo"]["failInfo"][codec.FailInfo.BAD_DATA_FORMAT] == 1


def test_the_audit_chain_verifies_after_the_cmp_traffic(cmp: Cmp) -> None:
    cmp.iotpki("audit", "verify")  # check=True: a broken chain exits non-zero
