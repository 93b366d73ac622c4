"""The demo's child environment and closing table, without starting anything."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from rich.console import Console

from iotpki.cli.demo import summary_table
from iotpki.cli.demo_session import Summary, child_environment


def test_child_environment_drops_the_callers_iotpki_settings(tmp_path: Path) -> None:
    caller = {
        "PATH": "/usr/bin",
        "PYTHONPATH": "/src",
        "IOTPKI_PASSPHRASE": "the user's own",
        "IOTPKI_HOME": "/home/user/.iotpki",
        "IOTPKI_DATABASE_URL": "postgresql+psycopg://prod/pki",
    }
    env = child_environment(tmp_path, caller)
    assert env == {"PATH": "/usr/bin", "PYTHONPATH": "/src", "IOTPKI_HOME": str(tmp_path)}
    assert caller["IOTPKI_PASSPHRASE"] == "the user's own"  # the caller's mapping is untouched


def test_summary_table_has_a_header_row() -> None:
    summary = Summary(enrolled=3, revoked_device="device-000", rejected=Counter(revoked=2))
    console = Console(width=100, record=True, color_system=None)
    console.print(summary_table(summary))
    lines = [line for line in console.export_text().splitlines() if line.strip()]
    header = lines[2]  # title, top border, header
    assert "what happened" in header and "count" in header
    assert any("devices enrolled over EST" in line and "3" in line for line in lines)
