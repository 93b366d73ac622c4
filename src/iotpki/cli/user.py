"""``iotpki user create|disable``: dashboard users who sign in with a password and hold one role.

Replacing a user (a new password or role) or disabling one ends its sessions at once.
"""

from __future__ import annotations

import re
import sys

import typer

from iotpki.cli.context import console, installation, one_of
from iotpki.core.access import disable_user, put_user
from iotpki.core.models import Role
from iotpki.errors import RequestError
from iotpki.web.session import hash_password

__all__ = ["app"]

app = typer.Typer(help="Manage dashboard users.", no_args_is_help=True)

_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_MIN_PASSWORD = 12
_MAX_PASSWORD = 1024
_ROLES = (Role.ADMIN, Role.OPERATOR, Role.AUDITOR, Role.PROVISIONER)


def _role(value: str) -> Role:
    try:
        role = Role(value)
    except ValueError:
        role = None
    if role not in _ROLES:
        raise RequestError(f"a dashboard user's role is {one_of(_ROLES)}, not {value!r}")
    return role


def _password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    if not _MIN_PASSWORD <= len(password) <= _MAX_PASSWORD:
        raise RequestError(
            f"a password has {_MIN_PASSWORD} to {_MAX_PASSWORD} characters", field="password"
        )
    return password


@app.command("create")
def create(
    ctx: typer.Context,
    username: str = typer.Argument(..., help="Sign-in name (letters, digits, . _ @ -)"),
    role: str = typer.Option(..., "--role", help=one_of(_ROLES)),
    password_stdin: bool = typer.Option(
        False, "--password-stdin", help="Read the password from the first line of stdin"
    ),
) -> None:
    """Create a dashboard user, or replace one's role and password; the password is prompted."""
    if not _USERNAME.match(username):
        raise RequestError(f"not a usable user name: {username[:64]!r}", field="username")
    parsed = _role(role)
    password = _password(password_stdin)
    inst = installation(ctx)
    replaced = put_user(
        inst.store, inst.authority.clock, username, parsed, hash_password(password), actor="cli"
    )
    console.print(f"user {username} ({parsed}) {'replaced' if replaced else 'created'}")


@app.command("disable")
def disable(ctx: typer.Context, username: str = typer.Argument(..., help="Sign-in name")) -> None:
    """Refuse a user's sign-ins from now on and end its sessions."""
    inst = installation(ctx)
    disable_user(inst.store, inst.authority.clock, username, actor="cli")
    console.print(f"user {username} disabled")
