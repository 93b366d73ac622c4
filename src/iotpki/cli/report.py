"""``iotpki report``: the compliance report (inventory, keys, lifetimes, lint, findings, audit)."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path

import typer

from iotpki.cli.context import err_console, installation
from iotpki.monitoring.report import build_report, render_html
from iotpki.monitoring.service import Monitor

__all__ = ["ReportFormat", "report"]


class ReportFormat(StrEnum):
    """What the report is written as."""

    HTML = "html"
    JSON = "json"


def report(
    ctx: typer.Context,
    output_format: ReportFormat = typer.Option(
        ReportFormat.HTML, "--format", help="html (self-contained page) or json"
    ),
    out: Path | None = typer.Option(None, "--out", help="Write to this file [default: stdout]"),
) -> None:
    """Write the compliance report, as the dashboard's Report page shows it."""
    inst = installation(ctx)
    data = build_report(Monitor(inst))
    if output_format is ReportFormat.JSON:
        text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    else:
        text = render_html(data)
    inst.authority.record_event(
        "cli", "report.generated", str(out or "-")[:256], {"format": str(output_format)}
    )
    if out is None:
        sys.stdout.write(text)
        return
    out.write_text(text, encoding="utf-8")
    err_console.print(f"report written to {out}", highlight=False)
