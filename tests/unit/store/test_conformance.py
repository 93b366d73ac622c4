"""The store is seen through small per-concern ports that together make the transaction."""

from __future__ import annotations

import inspect
import subprocess
import sys

from iotpki.core.ports import StoreTransaction
from iotpki.store.conformance import ACME_PORTS, TRANSACTION_PORTS


def _methods(cls: type[object]) -> set[str]:
    """The public methods a class declares itself (inherited ones excluded)."""
    return {n for n, v in vars(cls).items() if inspect.isfunction(v) and not n.startswith("_")}


def test_transaction_is_exactly_the_union_of_disjoint_small_ports() -> None:
    ports = [port for port, _ in TRANSACTION_PORTS if port is not StoreTransaction]
    concerns = [p for p in ports if _methods(p)]
    seen: dict[str, str] = {}
    for port in concerns:
        for name in _methods(port):
            assert name not in seen, f"{name} is in {seen.get(name)} and {port.__name__}"
            seen[name] = port.__name__
        assert len(_methods(port)) <= 11, f"{port.__name__} is not small"
    assert _methods(StoreTransaction) == set()
    declared = {n for n in dir(StoreTransaction) if not n.startswith("_")}
    assert declared == set(seen)


def test_every_port_is_implemented_by_the_sql_store() -> None:
    for port, impl in (*TRANSACTION_PORTS, *ACME_PORTS):
        wanted = {n for n in dir(port) if not n.startswith("_")}
        missing = {n for n in wanted if not hasattr(impl, n)}
        assert not missing, f"{impl.__name__} lacks {sorted(missing)} of {port.__name__}"


def test_the_store_imports_no_monitoring() -> None:
    code = (
        "import sys, importlib, pkgutil, iotpki.store as s\n"
        "for m in pkgutil.iter_modules(s.__path__):\n"
        "    importlib.import_module(f'iotpki.store.{m.name}')\n"
        "print(sorted(n for n in sys.modules if n.startswith('iotpki.monitoring')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"
