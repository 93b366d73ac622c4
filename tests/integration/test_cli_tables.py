"""The CLI in an 80-column terminal: tables that fit, ``--wide``/``--json`` in full, serial
prefixes, plain-word parser errors and the roles in ``--help`` (typer, in process)."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from typer.testing import CliRunner, Result

from iotpki.cli.context import console
from iotpki.cli.lookup import find_certificate
from iotpki.cli.main import app
from iotpki.core.models import CertificateQuery, CertificateRecord, CertStatus, Role
from iotpki.errors import Conflict, MalformedInput, NotFound, RequestError
from iotpki.services.installation import Installation, open_installation
from iotpki.settings import load_settings

from conftest import device_csr, make_installation

PASSPHRASE = {"IOTPKI_PASSPHRASE": "test-passphrase"}


@pytest.fixture(autouse=True)
def _console_follows_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shared console reads COLUMNS on every print, as in a fresh process."""
    monkeypatch.setattr(console, "_width", None)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("tables") / "home"
    inst = make_installation(home)
    for i in range(17):  # 17 serials: two share a first hex digit (pigeonhole)
        inst.authority.issue(device_csr(f"sensor-{i:06d}"), profile="device", actor="test")
    inst.close()
    return home


def _invoke(home: Path, *args: str, columns: int = 80) -> Result:
    env = {**PASSPHRASE, "COLUMNS": str(columns)}
    return CliRunner().invoke(app, ["--home", str(home), *args], env=env)


def _ok(home: Path, *args: str, columns: int = 80) -> str:
    result = _invoke(home, *args, columns=columns)
    assert result.exit_code == 0, result.output
    return result.stdout


def _open(home: Path) -> Installation:
    return open_installation(load_settings(home, PASSPHRASE), lint=False)


def _records(home: Path) -> list[CertificateRecord]:
    inst = _open(home)
    try:
        return inst.authority.search(CertificateQuery(limit=1000))
    finally:
        inst.close()


@pytest.mark.parametrize(
    "command", [("cert", "list"), ("ca", "list"), ("ca", "show", "issuing"), ("crl", "show")]
)
def test_tables_fit_80_columns_without_cutting(home: Path, command: tuple[str, ...]) -> None:
    out = _ok(home, *command)
    assert "\u2026" not in out and "..." not in out
    assert max(len(line) for line in out.splitlines()) <= 80
    if command[:2] != ("ca", "show"):  # a table, not name/value details
        header = out.splitlines()[0].split()
        wide = _ok(home, *command, "--wide", columns=400).splitlines()[0].split()
        assert set(header) <= set(wide)  # no header cut short (nor any value beneath it)


def test_cert_list_at_80_columns_keeps_what_matters_whole(home: Path) -> None:
    out = _ok(home, "cert", "list")
    lines = out.splitlines()
    for record in _records(home):
        line = next(line for line in lines if line.startswith(record.serial[:8]))
        assert record.not_after.strftime("%Y-%m-%d") in line and "valid" in line
        if record.device_id:
            assert record.device_id in line.split()
    assert "issuing" in out


def test_cert_list_wide_prints_full_values(home: Path) -> None:
    out = _ok(home, "cert", "list", "--wide")
    for record in _records(home):
        line = next(line for line in out.splitlines() if record.serial in line)
        assert record.subject in line and record.not_after.strftime("%H:%M:%SZ") in line


def test_wide_terminal_shows_full_serials_without_asking(home: Path) -> None:
    out = _ok(home, "cert", "list", columns=200)
    assert all(r.serial in out for r in _records(home))


def test_cert_list_json_round_trips(home: Path) -> None:
    items = json.loads(_ok(home, "cert", "list", "--json", "--limit", "1000"))
    by_serial = {r.serial: r for r in _records(home)}
    assert {item["serial"] for item in items} == set(by_serial)
    for item in items:
        record = by_serial[item["serial"]]
        assert datetime.fromisoformat(item["not_after"]) == record.not_after
        assert (item["subject"], item["device_id"], item["sans"]) == (
            record.subject,
            record.device_id,
            list(record.sans),
        )
        assert item["key_fingerprint"] == record.key_fingerprint and item["status"] == "valid"


def test_ca_list_json_round_trips(home: Path) -> None:
    items = {item["name"]: item for item in json.loads(_ok(home, "ca", "list", "--json"))}
    inst = _open(home)
    try:
        for ca in inst.authority.list_cas():
            cert = ca.certificate
            item = items[ca.name]
            assert item["subject"] == cert.subject.rfc4514_string()
            assert datetime.fromisoformat(item["not_after"]) == cert.not_valid_after_utc
            assert int(item["serial"], 16) == cert.serial_number
    finally:
        inst.close()


def _ambiguous(records: list[CertificateRecord]) -> tuple[str, list[str]]:
    """A one-digit prefix shared by several serials, and those serials."""
    by_digit: dict[str, list[str]] = defaultdict(list)
    for record in records:
        by_digit[record.serial[0]].append(record.serial)
    digit, serials = max(by_digit.items(), key=lambda kv: len(kv[1]))
    assert len(serials) > 1
    return digit, serials


def test_show_and_revoke_by_unique_prefix(tmp_path: Path) -> None:
    inst = make_installation(tmp_path / "home")
    serial = inst.authority.issue(device_csr("dev-1"), profile="device", actor="t").record.serial
    inst.close()
    home = tmp_path / "home"
    assert serial in _ok(home, "cert", "show", serial[:8])
    assert f"revoked {serial}" in _ok(home, "revoke", f"{serial[:8]}...", "--reason", "superseded")
    inst = _open(home)
    try:
        assert inst.authority.get(serial).status is CertStatus.REVOKED
    finally:
        inst.close()


def test_ambiguous_prefix_lists_the_matches(home: Path) -> None:
    digit, serials = _ambiguous(_records(home))
    for command in (("revoke", digit), ("cert", "show", digit)):
        result = _invoke(home, *command)
        assert isinstance(result.exception, Conflict), result.output
        message = result.exception.message
        assert "ambiguous" in message and all(s in message for s in serials[:10])
    assert all(r.status is CertStatus.VALID for r in _records(home))


def test_not_a_serial_says_so(home: Path) -> None:
    for command in (("revoke", "not-a-serial"), ("cert", "show", "not-a-serial")):
        result = _invoke(home, *command)
        assert isinstance(result.exception, MalformedInput)
        assert result.exception.message.startswith("not a hexadecimal serial")
    missing = _invoke(home, "cert", "show", "f" * 41)  # longer than any 159-bit serial
    assert isinstance(missing.exception, NotFound)


def test_prefix_lookup_reads_the_serial_index_not_the_table(home: Path) -> None:
    inst = _open(home)
    statements: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        statements.append((statement, params))

    record = inst.authority.search(CertificateQuery(limit=1))[0]
    event.listen(inst.store.engine, "before_cursor_execute", capture)
    try:
        assert find_certificate(inst, record.serial[:6], None).serial == record.serial
    finally:
        event.remove(inst.store.engine, "before_cursor_execute", capture)
    plans = []
    with inst.store.engine.connect() as conn:
        for statement, params in statements:
            if "FROM certificates" in statement:
                plan = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params).all()
                plans.extend(str(row[-1]) for row in plan)
    inst.close()
    assert any("ix_certificates_serial (serial>? AND serial<?)" in p for p in plans), plans
    assert not any(p.startswith("SCAN certificates") for p in plans), plans


def test_garbage_csr_is_refused_in_plain_words(home: Path, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.csr"
    garbage.write_bytes(
        b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
    )
    result = _invoke(home, "issue", "--csr", str(garbage), "--profile", "device")
    assert isinstance(result.exception, MalformedInput)
    message = result.exception.message
    assert message.startswith("not a valid certificate signing request (PEM or DER): ")
    assert "ParseError" not in message and "asn1" not in message


def test_garbage_certificate_is_refused_in_plain_words(home: Path, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.crt"
    garbage.write_bytes(b"\x30\x82\x01\x00\x02")
    result = _invoke(home, "est", "bootstrap-ca", "add", "maker", str(garbage))
    assert isinstance(result.exception, MalformedInput)
    assert result.exception.message == (
        "not a valid X.509 certificate (PEM or DER): the data ends early (cut short, or not DER "
        "at all)"
    )


def test_token_create_help_lists_every_role(home: Path) -> None:
    out = " ".join(_ok(home, "token", "create", "--help", columns=200).split())
    for role in Role:
        assert str(role) in out
    assert "auditor, provisioner or reporter" in out


def test_acme_renew_early_takes_a_serial_prefix(tmp_path: Path) -> None:
    inst = make_installation(tmp_path / "home")
    serial = inst.authority.issue(device_csr("dev-2"), profile="device", actor="t").record.serial
    inst.close()
    out = _ok(tmp_path / "home", "acme", "renew-early", "--serial", serial[:8])
    assert serial in out


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("yesterday", "--issued-before must be an ISO 8601 time"),
        ("2025-01-01", "--issued-before needs a time zone"),
    ],
)
def test_acme_renew_early_refuses_a_bad_time_in_plain_words(
    tmp_path: Path, value: str, message: str
) -> None:
    make_installation(tmp_path / "home").close()
    result = _invoke(tmp_path / "home", "acme", "renew-early", "--issued-before", value)
    assert result.exit_code != 0
    assert isinstance(result.exception, RequestError)  # the CLI prints these as "error: ..."
    assert result.exception.message == message
