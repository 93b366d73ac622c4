"""``iotpki issue``, ``iotpki revoke`` and ``iotpki cert ...``: end-entity certificates."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.table import Table

from iotpki.cli.context import console, installation
from iotpki.core.csr import load_csr
from iotpki.core.encoding import pem
from iotpki.core.models import CertificateQuery, CertStatus, RevocationReason
from iotpki.core.policy import parse_duration
from iotpki.errors import ConfigError, RequestError

__all__ = ["app", "issue", "revoke"]

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
    try:
        data = csr.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {csr}: {exc.strerror}") from exc
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
    serial: str,
    reason: str = typer.Option("unspecified", "--reason", help=_REASONS),
    ca: str | None = typer.Option(None, "--ca"),
) -> None:
    """Revoke a certificate with an RFC 5280 reason."""
    try:
        parsed = RevocationReason(reason)
    except ValueError:
        raise RequestError(f"unknown reason {reason!r}; choose from {_REASONS}") from None
    record = installation(ctx).authority.revoke(serial, reason=parsed, ca=ca, actor="cli")
    console.print(f"revoked {record.serial} ({reason})")


def _status(status: CertStatus, not_after: datetime, now: datetime) -> str:
    if status is CertStatus.REVOKED:
        return "[red]revoked[/red]"
    return "[yellow]expired[/yellow]" if not_after < now else "[green]valid[/green]"


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
    table = Table("serial", "ca", "profile", "device", "subject", "not after", "status")
    for r in records:
        table.add_row(
            r.serial,
            r.ca_name,
            r.profile,
            r.device_id or "",
            r.subject,
            r.not_after.strftime("%Y-%m-%d %H:%M"),
            _status(r.status, r.not_after, now),
        )
    console.print(table)


@app.command("show")
def show(
    ctx: typer.Context,
    serial: str,
    ca: str | None = typer.Option(None),
    pem_out: bool = typer.Option(False, "--pem", help="Print the certificate as PEM"),
) -> None:
    """Show one certificate."""
    inst = installation(ctx)
    record = inst.authority.get(serial, ca=ca)
    if pem_out:
        typer.echo(pem([record.certificate]).decode(), nl=False)
        return
    now = datetime.now(UTC)
    table = Table(show_header=False)
    rows = [
        ("serial", record.serial),
        ("ca", record.ca_name),
        ("profile", record.profile),
        ("device", record.device_id or ""),
        ("subject", record.subject),
        ("names", ", ".join(record.sans)),
        ("not before", record.not_before.isoformat()),
        ("not after", record.not_after.isoformat()),
        ("status", _status(record.status, record.not_after, now)),
        ("key", f"{record.key_algorithm} sha256:{record.key_fingerprint}"),
        ("lint", record.lint_status or "pending"),
    ]
    if record.revoked_at:
        reason = record.revocation_reason
        rows.append(("revoked", f"{record.revoked_at.isoformat()} ({reason})"))
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)
    for finding in inst.store.lint_findings(record.ca_name, record.serial):
        console.print(f"lint {finding.severity}: {finding.code} {finding.message}")
