"""``iotpki agent enroll|renew|status|run``: the device agent (same as ``iotpki-agent``)."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

__all__ = ["app"]

app = typer.Typer(help="The device agent: enroll, renew, status, run.", no_args_is_help=True)

_CONFIG = typer.Option(None, "--config", help="agent.toml")
_STATE = typer.Option(None, "--state-dir", help="state directory")


def _execute(
    command: str, config: Path | None, state_dir: Path | None, force: bool = False
) -> None:
    from iotpki.agent.agent import Agent
    from iotpki.agent.cli import execute
    from iotpki.agent.config import load_config

    logging.getLogger("iotpki.agent").setLevel(logging.INFO)
    agent = Agent(load_config(config, state_dir=state_dir))
    raise typer.Exit(int(execute(command, agent, force=force)))


@app.command("enroll")
def enroll(
    config: Path | None = _CONFIG,
    state_dir: Path | None = _STATE,
    force: bool = typer.Option(False, "--force", help="enroll again even if enrolled"),
) -> None:
    """First contact: bootstrap trust and enroll with the IDevID or enrollment secret."""
    _execute("enroll", config, state_dir, force)


@app.command("renew")
def renew(config: Path | None = _CONFIG, state_dir: Path | None = _STATE) -> None:
    """Renew now with a new key, then refresh the trust anchors."""
    _execute("renew", config, state_dir)


@app.command("status")
def status(config: Path | None = _CONFIG, state_dir: Path | None = _STATE) -> None:
    """Show the current identity (exit 3: not enrolled, 4: expired)."""
    _execute("status", config, state_dir)


@app.command("run")
def run(config: Path | None = _CONFIG, state_dir: Path | None = _STATE) -> None:
    """Run as a daemon: enroll if needed, renew before expiry, until SIGTERM."""
    _execute("run", config, state_dir)
