"""Entry point: the ``iotpki`` command and its error handling (one line, never a traceback)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import typer

from iotpki.cli import audit, ca, cert, serve, token
from iotpki.cli.context import Context, err_console
from iotpki.errors import IotpkiError

__all__ = ["app", "run"]

app = typer.Typer(
    name="iotpki",
    help="Public-key infrastructure for fleets of IoT devices.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def main(
    ctx: typer.Context,
    home: Path | None = typer.Option(
        None, "--home", envvar="IOTPKI_HOME", help="Data directory [default: ~/.iotpki]"
    ),
) -> None:
    """Select the installation every command works on."""
    ctx.obj = Context(home)


app.command("init")(ca.init)
app.command("issue")(cert.issue)
app.command("revoke")(cert.revoke)
app.command("serve")(serve.serve)
app.add_typer(ca.app, name="ca")
app.add_typer(cert.app, name="cert")
app.add_typer(token.app, name="token")
app.add_typer(audit.app, name="audit")


def run() -> None:
    """Run the CLI, turning iotpki errors into one line on stderr and exit status 2."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        app()
    except IotpkiError as exc:
        err_console.print(f"[red]error:[/red] {exc.message}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
