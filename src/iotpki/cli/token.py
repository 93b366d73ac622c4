"""``iotpki token create``: API tokens for the admin API and dashboard."""

from __future__ import annotations

import typer

from iotpki.cli.context import console, installation, one_of
from iotpki.core.access import PERMISSIONS, create_token
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
