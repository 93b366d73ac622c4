"""``iotpki token create|list|revoke``: API tokens for the admin API and dashboard."""

from __future__ import annotations

import typer
from rich.table import Table

from iotpki.cli.context import console, installation
from iotpki.core.access import create_token, list_tokens, revoke_token
from iotpki.core.models import Role
from iotpki.core.policy import parse_duration
from iotpki.errors import RequestError

__all__ = ["app"]

app = typer.Typer(help="Manage API tokens.", no_args_is_help=True)


@app.command("create")
def create(
    ctx: typer.Context,
    role: str = typer.Option(..., "--role", help="admin, operator, auditor or provisioner"),
    description: str = typer.Option("", "--description"),
    lifetime: str | None = typer.Option(None, "--lifetime", help="e.g. 90d [default: none]"),
) -> None:
    """Create a token; it is printed once and only its hash is stored."""
    try:
        parsed = Role(role)
    except ValueError:
        raise RequestError(f"unknown role {role!r}") from None
    inst = installation(ctx)
    token, record = create_token(
        inst.store,
        inst.authority.clock,
        role=parsed,
        description=description,
        lifetime=parse_duration(lifetime) if lifetime else None,
        actor="cli",
    )
    console.print(f"token {record.token_id} ({parsed}):")
    print(token)


@app.command("list")
def list_(ctx: typer.Context) -> None:
    """Every token: id, description, role, created, expiry and whether it is revoked."""
    inst = installation(ctx)
    table = Table("id", "description", "role", "created", "expires", "revoked")
    for record in list_tokens(inst.store):
        table.add_row(
            record.token_id,
            record.description,
            str(record.role),
            record.created_at.isoformat(timespec="seconds"),
            record.expires_at.isoformat(timespec="seconds") if record.expires_at else "",
            "yes" if record.revoked else "no",
        )
    console.print(table)


@app.command("revoke")
def revoke(ctx: typer.Context, token_id: str = typer.Argument(..., help="The token's id")) -> None:
    """Revoke a token at once, with the dashboard sessions opened with it."""
    inst = installation(ctx)
    record = revoke_token(inst.store, inst.authority.clock, token_id, actor="cli")
    console.print(f"token {record.token_id} ({record.role}) revoked")
