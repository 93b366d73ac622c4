"""``iotpki issue``, ``iotpki revoke`` and ``iotpki cert ...``: end-entity certificates."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import typer

from iotpki.cli.context import console, installation, read_file
from iotpki.cli.lookup import find_certificate
from iotpki.cli.tables import (
    JSON_OPTION,
    WIDE_OPTION,
    Column,
    print_details,
    print_json,
    print_records,
    short_date,
    short_serial,
    short_subject,
    short_time,
)
from iotpki.core.csr import load_csr
from iotpki.core.encoding import pem
from iotpki.core.models import CertificateQuery, CertificateRecord, CertStatus, RevocationReason
from iotpki.core.policy import parse_duration
from iotpki.errors import RequestError

__all__ = ["app", "certificate_json", "issue", "revoke"]

app = typer.Typer(help="Inspect issued certificates.", no_args_is_help=True)

_REASONS = ", ".join(r.value for r in RevocationReason)


def issue(
    ctx: typer.Context,
    csr: Path = typer.Option(..., "--csr", help="PKCS#10 request, PEM or DER"),
    profile: str = typer.Option(..., "--profile", help="device, gateway, server, ..."),
    ca: str | None = typer.Option(None, "--ca", help="Issuing CA [default: the first]"),
    device_id: str | None = typer.Option(None, "--device-id", help="Device ID [default: CN]"),
    lifetime: str | None = typer.Option(None, "--lifetime", help="e.g. 30d, 12h"),
    out: Path | None = typer.Option(None, "--out", help="Write the PEM chain here"),
) -> None:
    """Issue a certificate from a CSR; writes the PEM chain, leaf first."""
    data = read_file(csr)
    inst = installation(ctx)
    issued = inst.authority.issue(
        load_csr(data),
        profile=profile,
        ca=ca,
        device_id=device_id,
        lifetime=parse_duration(lifetime) if lifetime else None,
        actor="cli",
    )
    chain = pem(issued.chain)
    if out is None:
        typer.echo(chain.decode(), nl=False)
    else:
        out.write_bytes(chain)
        console.print(f"issued serial {issued.record.serial} to {out}")


def revoke(
    ctx: typer.Context,
    serial: str = typer.Argument(..., help="Serial in hex, or a unique prefix of it"),
    reason: str = typer.Option("unspecified", "--reason", help=_REASONS),
    ca: str | None = typer.Option(None, "--ca"),
) -> None:
    """Revoke a certificate with an RFC 5280 reason."""
    try:
        parsed = RevocationReason(reason)
    except ValueError:
        raise RequestError(f"unknown reason {reason!r}; choose from {_REASONS}") from None
    inst = installation(ctx)
    found = find_certificate(inst, serial, ca)
    record = inst.authority.revoke(found.serial, reason=parsed, ca=found.ca_name, actor="cli")
    console.print(f"revoked {record.serial} ({reason})", highlight=False)


def _status(record: CertificateRecord, now: datetime) -> str:
    if record.status is CertStatus.REVOKED:
        return "revoked"
    return "expired" if record.not_after < now else "valid"


_COLOURS = {"revoked": "red", "expired": "yellow", "valid": "green"}


def _colour(status: object) -> str:
    return _COLOURS.get(str(status), "")


def certificate_json(record: CertificateRecord, now: datetime) -> dict[str, object]:
    """One certificate as a full JSON-ready record (``--json``)."""
    return {
        "serial": record.serial,
        "ca": record.ca_name,
        "profile": record.profile,
        "device_id": record.device_id,
        "subject": record.subject,
        "sans": list(record.sans),
        "not_before": record.not_before,
        "not_after": record.not_after,
        "status": _status(record, now),
        "revoked_at": record.revoked_at,
        "revocation_reason": record.revocation_reason,
        "key_algorithm": record.key_algorithm,
        "key_fingerprint": record.key_fingerprint,
        "lint_status": record.lint_status,
    }


_LIST_COLUMNS = (
    Column("serial", "serial", short=(short_serial,)),
    Column("ca", "ca"),
    Column("profile", "profile"),
    Column("device", "device_id"),
    Column("subject", "subject", short=(short_subject,), wrap=True),
    Column("not after", "not_after", short=(short_time, short_date)),
    Column("status", "status", style=_colour),
)


@app.command("list")
def list_certificates(
    ctx: typer.Context,
    status: str | None = typer.Option(None, help="valid or revoked"),
    device: str | None = typer.Option(None, help="Device ID"),
    profile: str | None = typer.Option(None),
    ca: str | None = typer.Option(None),
    search: str | None = typer.Option(None, "--search", "-q", help="Subject or SAN substring"),
    expiring_within: str | None = typer.Option(None, help="e.g. 30d"),
    limit: int = typer.Option(50, min=1, max=1000),
    wide: bool = WIDE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """List certificates, newest first."""
    if status is not None and status not in {s.value for s in CertStatus}:
        raise RequestError("status must be valid or revoked")
    inst = installation(ctx)
    now = datetime.now(UTC)
    records = inst.authority.search(
        CertificateQuery(
            status=CertStatus(status) if status else None,
            ca_name=ca,
            profile=profile,
            device_id=device,
            subject_contains=search,
            expiring_before=now + parse_duration(expiring_within) if expiring_within else None,
            limit=limit,
        )
    )
    rows = [certificate_json(r, now) for r in records]
    print_records(rows, _LIST_COLUMNS, wide=wide, as_json=as_json)


@app.command("show")
def show(
    ctx: typer.Context,
    serial: str = typer.Argument(..., help="Serial in hex, or a unique prefix of it"),
    ca: str | None = typer.Option(None),
    pem_out: bool = typer.Option(False, "--pem", help="Print the certificate as PEM"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Show one certificate."""
    inst = installation(ctx)
    record = find_certificate(inst, serial, ca)
    if pem_out:
        typer.echo(pem([record.certificate]).decode(), nl=False)
        return
    findings = inst.store.lint_findings(record.ca_name, record.serial)
    data = certificate_json(record, datetime.now(UTC))
    if as_json:
        data["lint_findings"] = [
            {"severity": f.severity, "code": f.code, "node": f.node, "message": f.message}
            for f in findings
        ]
        print_json(data)
        return
    rows = [
        ("serial", record.serial),
        ("ca", record.ca_name),
        ("profile", record.profile),
        ("device", record.device_id or ""),
        ("subject", record.subject),
        ("names", ", ".join(record.sans)),
        ("not before", record.not_before.isoformat()),
        ("not after", record.not_after.isoformat()),
        ("status", str(data["status"])),
        ("key", f"{record.key_algorithm} sha256:{record.key_fingerprint}"),
        ("lint", record.lint_status or "pending"),
    ]
    if record.revoked_at:
        reason = record.revocation_reason
        rows.append(("revoked", f"{record.revoked_at.isoformat()} ({reason})"))
    print_details(rows)
    for finding in findings:
        console.print(f"lint {finding.severity}: {finding.code} {finding.message}", markup=False)
