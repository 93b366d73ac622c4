"""The ``iotpki`` command as an operator runs it, with openssl checking what it writes."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.interop

IOTPKI = [sys.executable, "-m", "iotpki.cli"]


def run(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "IOTPKI_HOME": str(home),
        "IOTPKI_PASSPHRASE": "cli-test",
        "COLUMNS": "200",
    }
    result = subprocess.run([*IOTPKI, *args], env=env, capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(f"iotpki {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def openssl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, check=check)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("cli") / "home"
    out = run(home, "init", "--algorithm", "p384").stdout
    assert "admin API token" in out
    return home


def _csr(
    tmp: Path,
    cn: str,
    key_args: tuple[str, ...] = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"),
) -> Path:
    csr = tmp / f"{cn}.csr"
    openssl(
        "req",
        "-new",
        *key_args,
        "-nodes",
        "-keyout",
        str(tmp / f"{cn}.key"),
        "-subj",
        f"/CN={cn}",
        "-out",
        str(csr),
    )
    return csr


def test_issue_verifies_with_openssl(home: Path, tmp_path: Path) -> None:
    chain = tmp_path / "chain.pem"
    run(
        home,
        "issue",
        "--csr",
        str(_csr(tmp_path, "dev-100")),
        "--profile",
        "device",
        "--out",
        str(chain),
    )
    root = tmp_path / "root.pem"
    root.write_text(run(home, "ca", "show", "root", "--pem").stdout)
    result = openssl("verify", "-CAfile", str(root), "-untrusted", str(chain), str(chain))
    assert result.stdout.strip().endswith("OK")
    text = openssl("x509", "-in", str(chain), "-noout", "-text").stdout
    assert "URI:urn:dev:ops:iotpki-dev-100" in text
    assert "OCSP - URI:http://127.0.0.1:8080/ocsp" in text


def test_cert_list_show_and_revoke(home: Path, tmp_path: Path) -> None:
    out = run(home, "issue", "--csr", str(_csr(tmp_path, "dev-200")), "--profile", "device").stdout
    serial = openssl_serial(out, tmp_path)
    listed = run(home, "cert", "list", "--device", "dev-200").stdout
    assert serial in listed and "valid" in listed
    run(home, "revoke", serial, "--reason", "keyCompromise")
    assert "revoked" in run(home, "cert", "show", serial).stdout


def openssl_serial(pem_chain: str, tmp: Path) -> str:
    path = tmp / "leaf.pem"
    path.write_text(pem_chain)
    serial = openssl("x509", "-in", str(path), "-noout", "-serial").stdout.split("=")[1].strip()
    return serial.lower().lstrip("0")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("-newkey", "rsa:1024"), "below the minimum"),
        (("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-224"), "not allowed"),
    ],
)
def test_bad_keys_refused_in_one_line(
    home: Path, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    result = run(
        home,
        "issue",
        "--csr",
        str(_csr(tmp_path, "dev-300", args)),
        "--profile",
        "device",
        check=False,
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_bad_inputs_give_clear_errors(home: Path, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.csr"
    garbage.write_bytes(
        b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
    )
    cases = [
        ("issue", "--csr", str(garbage), "--profile", "device"),
        ("issue", "--csr", str(_csr(tmp_path, "dev-400")), "--profile", "nope"),
        ("issue", "--csr", str(tmp_path / "missing.csr"), "--profile", "device"),
        ("revoke", "abcdef", "--reason", "keyCompromise"),
        ("revoke", "abcdef", "--reason", "bored"),
        ("ca", "show", "nope"),
    ]
    for args in cases:
        result = run(home, *args, check=False)
        assert result.returncode == 2, args
        assert result.stderr.startswith("error:") and "Traceback" not in result.stderr, args


def test_audit_verify_detects_tampering(tmp_path: Path) -> None:
    home = tmp_path / "home"
    run(home, "init")
    run(home, "issue", "--csr", str(_csr(tmp_path, "dev-500")), "--profile", "device")
    assert "audit chain intact" in run(home, "audit", "verify").stdout
    with sqlite3.connect(home / "iotpki.db") as db:
        db.execute("UPDATE audit_events SET data = '{}' WHERE seq = 2")
    result = run(home, "audit", "verify", check=False)
    assert result.returncode != 0
    assert "entry 2" in result.stderr


def test_offline_root_flow(tmp_path: Path) -> None:
    root_home, online_home = tmp_path / "root", tmp_path / "online"
    run(root_home, "init", "--root-only")
    csr = tmp_path / "plant.csr"
    run(online_home, "ca", "csr", "plant", "--out", str(csr))
    cert = tmp_path / "plant.crt"
    run(root_home, "ca", "sign-csr", str(csr), "--parent", "root", "--out", str(cert))
    root_pem = tmp_path / "root.pem"
    root_pem.write_text(run(root_home, "ca", "show", "root", "--pem").stdout)
    run(online_home, "ca", "import", "plant", str(cert), "--parent-cert", str(root_pem))
    chain = tmp_path / "leaf.pem"
    run(
        online_home,
        "issue",
        "--csr",
        str(_csr(tmp_path, "dev-600")),
        "--profile",
        "device",
        "--ca",
        "plant",
        "--out",
        str(chain),
    )
    result = openssl("verify", "-CAfile", str(root_pem), "-untrusted", str(chain), str(chain))
    assert result.stdout.strip().endswith("OK")
    listed = run(online_home, "ca", "list").stdout
    assert "offline" in listed
