"""Entry point: the ``iotpki`` command and its error handling (one line, never a traceback)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import typer

from iotpki.cli import acme as acme_cli
from iotpki.cli import agent as agent_cli
from iotpki.cli import akca as akca_cli
from iotpki.cli import audit, ca, cert, serve, token
from iotpki.cli import broker as broker_cli
from iotpki.cli import campaign as campaign_cli
from iotpki.cli import crl as crl_cli
from iotpki.cli import demo as demo_cli
from iotpki.cli import est as est_cli
from iotpki.cli import mqtt as mqtt_cli
from iotpki.cli import report as report_cli
from iotpki.cli import rollover as rollover_cli
from iotpki.cli import scep as scep_cli
from iotpki.cli import user as user_cli
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
app.command("worker")(serve.worker)
app.command("mqtt-provisioner")(mqtt_cli.provisioner)
app.command("demo")(demo_cli.demo)
app.command("report")(report_cli.report)
ca.app.command("rollover")(rollover_cli.rollover)
ca.app.command("retire")(rollover_cli.retire)
ca.app.command("renew-issuing")(rollover_cli.renew_issuing_command)
app.add_typer(ca.app, name="ca")
app.add_typer(cert.app, name="cert")
app.add_typer(token.app, name="token")
app.add_typer(audit.app, name="audit")
app.add_typer(scep_cli.app, name="scep")
app.add_typer(crl_cli.app, name="crl")
app.add_typer(est_cli.app, name="est")
app.add_typer(agent_cli.app, name="agent")
app.add_typer(acme_cli.app, name="acme")
app.add_typer(broker_cli.app, name="broker")
app.add_typer(mqtt_cli.app, name="mqtt")
app.add_typer(campaign_cli.app, name="campaign")
app.add_typer(user_cli.app, name="user")
app.add_typer(akca_cli.app, name="akca")


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
