"""The dashboard and the API read monitoring through the monitor, never through its store."""

from __future__ import annotations

import ast
from pathlib import Path

import iotpki

_PACKAGE = Path(iotpki.__file__).parent


def _reaches_past_monitor(tree: ast.AST) -> list[str]:
    """Every ``<x>.monitor.store`` / ``<x>.monitor.inventory`` in a module, with its line."""
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr in {"store", "inventory"}
            and isinstance(node.value, ast.Attribute)
            and node.value.attr == "monitor"
        ):
            found.append(f"line {node.lineno}: monitor.{node.attr}")
    return found


def test_web_and_api_call_the_monitor_not_its_store() -> None:
    offending = {}
    for folder in ("web", "api"):
        for path in sorted((_PACKAGE / folder).glob("*.py")):
            hits = _reaches_past_monitor(ast.parse(path.read_text()))
            if hits:
                offending[f"{folder}/{path.name}"] = hits
    assert offending == {}
