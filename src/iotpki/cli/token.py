"""``iotpki token create|list|revoke``: API tokens for the admin API and dashboard."""

from __future__ import annotations

import typer

from iotpki.cli.context import console, installation, one_of
from iotpki.cli.tables import (
    JSON_OPTION,
    WIDE_OPTION,
    Column,
    print_records,
    short_date,
    short_time,
)
from iotpki.core.access import PERMISSIONS, create_token, list_tokens, revoke_token
from iotpki.core.models import Role
from iotpki.core.policy import parse_duration
from iotpki.errors import RequestError

__all__ = ["ROLES", "app"]

app = typer.Typer(help="Manage API tokens.", no_args_is_help=True)

ROLES = one_of(PERMISSIONS)
"""Every role a token may hold, from the role definitions."""


@app.command("create")
def create(
    ctx: typer.Context,
    role: str = typer.Option(..., "--role", help=ROLES),
    description: str = typer.Option("", "--description"),
    lifetime: str | None = typer.Option(None, "--lifetime", help="e.g. 90d [default: none]"),
) -> None:
    """Create a token; it is printed once and only its hash is stored."""
    try:
        parsed = Role(role)
    except ValueError:
        raise RequestError(f"unknown role {role!r}; choose {ROLES}") from None
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


_LIST_COLUMNS = (
    Column("id", "id"),
    Column("description", "description", wrap=True),
    Column("role", "role"),
    Column("created", "created", short=(short_time, short_date)),
    Column("expires", "expires", short=(short_time, short_date)),
    Column("revoked", "revoked"),
)


@app.command("list")
def list_(ctx: typer.Context, wide: bool = WIDE_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Every token: id, description, role, created, expiry and whether it is revoked."""
    inst = installation(ctx)
    rows = [
        {
            "id": record.token_id,
            "description": record.description,
            "role": record.role,
            "created": record.created_at,
            "expires": record.expires_at,
            "revoked": record.revoked if as_json else ("yes" if record.revoked else "no"),
        }
        for record in list_tokens(inst.store)
    ]
    print_records(rows, _LIST_COLUMNS, wide=wide, as_json=as_json)


@app.command("revoke")
def revoke(ctx: typer.Context, token_id: str = typer.Argument(..., help="The token's id")) -> None:
    """Revoke a token at once, with the dashboard sessions opened with it."""
    inst = installation(ctx)
    record = revoke_token(inst.store, inst.authority.clock, token_id, actor="cli")
    console.print(f"token {record.token_id} ({record.role}) revoked")
