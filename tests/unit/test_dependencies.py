"""Every third-party module imported under src/ belongs to a declared runtime dependency.

The test environment must be the user's environment: a module that only a test extra installs
works in CI and fails for everyone who runs ``pip install .``. The optional ``tpm`` extra may
cover modules that only ``iotpki.keys.tpm`` imports, and every other module must import
``iotpki.keys.tpm`` lazily (in a function, under TYPE_CHECKING, or guarded by ImportError).
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import packages_distributions
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "iotpki"
EXTRA_MODULES = {"tpm": "iotpki.keys.tpm"}  # optional extra -> the one module allowed to need it


@dataclass(frozen=True)
class Import:
    """One import statement: who imports what, and whether it runs when the importer loads."""

    importer: str
    module: str
    eager: bool
    line: int


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_names(requirements: Sequence[str]) -> set[str]:
    names = set()
    for requirement in requirements:
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
        assert match, f"unreadable requirement {requirement!r}"
        names.add(_normalise(match.group(1)))
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _guards_import_error(node: ast.Try) -> bool:
    for handler in node.handlers:
        caught = handler.type
        names = caught.elts if isinstance(caught, ast.Tuple) else [caught]
        if any(
            isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError")
            for n in names
        ):
            return True
    return False


def _imports(tree: ast.Module, importer: str) -> Iterator[Import]:
    """Runtime imports of ``tree``; eager ones run at module level without an ImportError guard."""

    def visit(node: ast.AST, eager: bool) -> Iterator[Import]:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from (i for child in node.orelse for i in visit(child, eager))
            return
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            eager = False
        if isinstance(node, ast.Try) and _guards_import_error(node):
            yield from (i for child in node.body for i in visit(child, False))
            rest = [*node.handlers, *node.orelse, *node.finalbody]
            yield from (i for child in rest for i in visit(child, eager))
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(importer, alias.name, eager, node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield Import(importer, node.module, eager, node.lineno)
        for child in ast.iter_child_nodes(node):
            yield from visit(child, eager)

    yield from visit(tree, True)


def _module_name(src: Path, path: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def dependency_problems(
    src: Path, project: Mapping[str, Any], distributions: Mapping[str, Sequence[str]]
) -> list[str]:
    """What is wrong with the imports under ``src`` against ``project`` ([project] of pyproject)."""
    declared = _requirement_names(project.get("dependencies", []))
    extras = {
        extra: _requirement_names(project.get("optional-dependencies", {}).get(extra, []))
        for extra in EXTRA_MODULES
    }
    imports = [
        found
        for path in sorted(src.rglob("*.py"))
        for found in _imports(ast.parse(path.read_text(), str(path)), _module_name(src, path))
    ]
    problems = []
    for found in imports:
        top = found.module.split(".")[0]
        where = f"{found.importer}:{found.line}"
        if top == PACKAGE:
            for extra, module in EXTRA_MODULES.items():
                lazy_required = found.importer != module and found.eager
                if lazy_required and (found.module + ".").startswith(module + "."):
                    problems.append(f"{where} imports {module} eagerly; it needs the {extra} extra")
            continue
        if top in sys.stdlib_module_names or top == "__future__":
            continue
        owners = {_normalise(d) for d in distributions.get(top, [])}
        if not owners:
            problems.append(f"{where} imports {top}, which no installed distribution provides")
        elif not owners & declared:
            extra_ok = any(
                found.importer == module and owners & extras[extra]
                for extra, module in EXTRA_MODULES.items()
            )
            if not extra_ok:
                problems.append(
                    f"{where} imports {top} from {', '.join(sorted(owners))}, "
                    "which [project].dependencies does not declare"
                )
    return problems


def _pyproject(text: str) -> dict[str, Any]:
    project: dict[str, Any] = tomllib.loads(text)["project"]
    return project


def _tree(base: Path, files: Mapping[str, str]) -> Path:
    for name, text in files.items():
        path = base / PACKAGE / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return base


FAKE_DISTRIBUTIONS = {"httpx": ["httpx"], "tpm2_pytss": ["tpm2-pytss"], "yaml": ["PyYAML"]}
FAKE_PROJECT = """
[project]
dependencies = ["httpx>=0.27", "uvicorn[standard]>=0.30"]
[project.optional-dependencies]
test = ["PyYAML"]
tpm = ["tpm2-pytss>=2.3"]
"""


def test_every_import_under_src_is_a_declared_dependency() -> None:
    project = _pyproject((ROOT / "pyproject.toml").read_text())
    assert dependency_problems(ROOT / "src", project, packages_distributions()) == []


def test_an_import_only_a_test_extra_installs_is_reported(tmp_path: Path) -> None:
    src = _tree(tmp_path, {"__init__.py": "", "alerts.py": "import httpx\nimport yaml\n"})
    problems = dependency_problems(src, _pyproject(FAKE_PROJECT), FAKE_DISTRIBUTIONS)
    assert problems == [
        "iotpki.alerts:2 imports yaml from pyyaml, which [project].dependencies does not declare"
    ]


def test_an_import_no_distribution_provides_is_reported(tmp_path: Path) -> None:
    src = _tree(tmp_path, {"__init__.py": "from nowhere.at_all import thing\n"})
    problems = dependency_problems(src, _pyproject(FAKE_PROJECT), FAKE_DISTRIBUTIONS)
    assert problems == ["iotpki:1 imports nowhere, which no installed distribution provides"]


def test_lazy_imports_count_and_type_only_imports_do_not(tmp_path: Path) -> None:
    body = "def f():\n    import yaml\ntry:\n    import yaml\nexcept ImportError:\n    pass\n"
    src = _tree(tmp_path, {"lazy.py": body})
    problems = dependency_problems(src, _pyproject(FAKE_PROJECT), FAKE_DISTRIBUTIONS)
    assert len(problems) == 2  # undeclared even when imported lazily: it is still runtime code
    typed = _tree(
        tmp_path / "typed",
        {"t.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import yaml\n"},
    )
    assert dependency_problems(typed, _pyproject(FAKE_PROJECT), FAKE_DISTRIBUTIONS) == []


def test_the_tpm_extra_covers_only_the_tpm_module_imported_lazily(tmp_path: Path) -> None:
    lazy = "def backend():\n    from iotpki.keys.tpm import TpmBackend\n    return TpmBackend\n"
    files = {"keys/tpm.py": "from tpm2_pytss import ESAPI\n", "agent.py": lazy}
    src = _tree(tmp_path, files)
    assert dependency_problems(src, _pyproject(FAKE_PROJECT), FAKE_DISTRIBUTIONS) == []

    eager = {
        **files,
        "agent.py": "from iotpki.keys.tpm import TpmBackend\n",
        "other.py": "import tpm2_pytss\n",
    }
    src = _tree(tmp_path / "eager", eager)
    assert dependency_problems(src, _pyproject(FAKE_PROJECT), FAKE_DISTRIBUTIONS) == [
        "iotpki.agent:1 imports iotpki.keys.tpm eagerly; it needs the tpm extra",
        "iotpki.other:1 imports tpm2_pytss from tpm2-pytss, "
        "which [project].dependencies does not declare",
    ]
