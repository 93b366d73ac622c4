"""``iotpki demo``: the fleet on one machine: EST (or provisioning over MQTT with ``--via
mqtt``), mutual TLS, signed telemetry, revocation, root rollover, and a summary table."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import typer
from rich.table import Table

from iotpki.cli.context import console
from iotpki.cli.demo_session import DemoOptions, Summary, run_demo

__all__ = ["demo", "summary_table"]


def demo(
    devices: int = typer.Option(24, "--devices", "-n", help="How many simulated devices"),
    interval: float = typer.Option(0.25, help="Seconds between two messages of a device"),
    keep: Path | None = typer.Option(None, help="Copy the temporary data directory here"),
    via: str = typer.Option("est", help="How the agents enroll and renew: est or mqtt"),
) -> None:
    """Start a server, mosquitto and N agents in a temporary directory; show it all; clean up."""
    logging.getLogger("iotpki").setLevel(logging.ERROR)
    start = time.monotonic()

    def report(message: str) -> None:
        console.print(f"[dim]{time.monotonic() - start:6.1f}s[/dim]  {message}", highlight=False)

    if via not in ("est", "mqtt"):
        raise typer.BadParameter("est or mqtt", param_hint="--via")
    options = DemoOptions(devices=devices, interval=interval, keep=keep, via=via)
    summary = run_demo(options, report)
    console.print(summary_table(summary))
    if summary.failed_connections:
        raise typer.Exit(1)


def summary_table(summary: Summary) -> Table:
    """The closing table: what happened, and how often."""
    table = Table("what happened", "count", title="iotpki demo")
    for what, figure in summary.rows():
        table.add_row(what, figure)
    return table
