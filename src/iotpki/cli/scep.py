"""``iotpki scep``: SCEP challenge passwords and pending SCEP enrollments."""

from __future__ import annotations

import typer

from iotpki.cli.context import console, installation
from iotpki.cli.tables import (
    JSON_OPTION,
    WIDE_OPTION,
    Column,
    print_records,
    short_date,
    short_time,
)
from iotpki.core.policy import parse_duration
from iotpki.core.scep import ScepService

__all__ = ["app"]

app = typer.Typer(help="SCEP (RFC 8894): challenge passwords and approvals.", no_args_is_help=True)
challenge_app = typer.Typer(help="One-time SCEP challenge passwords.", no_args_is_help=True)
app.add_typer(challenge_app, name="challenge")


def _service(ctx: typer.Context) -> ScepService:
    inst = installation(ctx)
    return ScepService(inst.authority, inst.keys, inst.settings.resolved_profiles())


@challenge_app.command("create")
def create(
    ctx: typer.Context,
    device_id: str = typer.Option(..., "--device-id", help="The device the password enrolls"),
    expires: str = typer.Option("24h", "--expires", help="Lifetime, e.g. 24h or 7d"),
    profile: str = typer.Option("device", "--profile"),
    ca: str | None = typer.Option(None, "--ca", help="Only for this issuing CA"),
    approval: bool = typer.Option(
        False, "--approval", help="Hold the enrollment PENDING until `iotpki scep approve`"
    ),
) -> None:
    """Create a one-time challenge password; it is printed once and only its hash is stored."""
    secret, record = _service(ctx).create_challenge(
        device_id,
        actor="cli",
        lifetime=parse_duration(expires),
        profile=profile,
        ca=ca,
        approval=approval,
    )
    console.print(
        f"challenge {record.challenge_id} for {record.device_id}, "
        f"expires {record.expires_at.isoformat()}:",
        highlight=False,
    )
    print(secret)


_PENDING = (
    Column("CA", "ca"),
    Column("transaction", "transaction_id", wrap=True),  # approve needs it whole: fold it
    Column("device", "device_id", wrap=True),
    Column("profile", "profile"),
    Column("requested", "requested", short=(short_time, short_date)),
)


@app.command("pending")
def pending(ctx: typer.Context, wide: bool = WIDE_OPTION, as_json: bool = JSON_OPTION) -> None:
    """List SCEP enrollments waiting for an operator."""
    records = [
        {
            "ca": record.ca_name,
            "transaction_id": record.transaction_id,
            "device_id": record.device_id,
            "profile": record.profile,
            "requested": record.created_at,
        }
        for record in _service(ctx).transactions("pending")
    ]
    print_records(records, _PENDING, wide=wide, as_json=as_json)


@app.command("approve")
def approve(
    ctx: typer.Context,
    transaction_id: str = typer.Argument(..., help="The SCEP transactionID"),
    ca: str | None = typer.Option(None, "--ca", help="[default: the default issuing CA]"),
) -> None:
    """Issue a pending enrollment; the device collects it with CertPoll."""
    service = _service(ctx)
    result = service.decide(
        ca or service.authority.default_issuing_ca(), transaction_id, approve=True, actor="cli"
    )
    console.print(f"issued certificate {result.transaction.serial}", highlight=False)


@app.command("reject")
def reject(
    ctx: typer.Context,
    transaction_id: str = typer.Argument(..., help="The SCEP transactionID"),
    ca: str | None = typer.Option(None, "--ca", help="[default: the default issuing CA]"),
) -> None:
    """Refuse a pending enrollment; the device's next CertPoll gets FAILURE."""
    service = _service(ctx)
    service.decide(
        ca or service.authority.default_issuing_ca(), transaction_id, approve=False, actor="cli"
    )
    console.print("rejected", highlight=False)
