"""``iotpki audit verify``: prove the audit log's hash chain intact."""

from __future__ import annotations

import typer

from iotpki.cli.context import console, installation
from iotpki.core.audit import verify_chain
from iotpki.errors import AuditChainBroken

__all__ = ["app"]

app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)


@app.command("verify")
def verify(ctx: typer.Context) -> None:
    """Walk the chain; exits non-zero naming the first bad entry."""
    store = installation(ctx).store
    with console.status("verifying the audit chain..."):
        report = verify_chain(store.audit_events(), store.audit_head())
    if not report.ok:
        raise AuditChainBroken(
            f"audit chain broken at entry {report.first_bad_seq}: {report.problem}",
            seq=report.first_bad_seq,
        )
    console.print(f"audit chain intact: {report.events} entries")
