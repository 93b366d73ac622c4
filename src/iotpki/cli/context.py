"""What every command shares: the selected home, its settings, and one rich console."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import typer
from rich.console import Console

from iotpki.errors import ConfigError
from iotpki.services.installation import Installation, open_installation
from iotpki.settings import Settings, load_settings

__all__ = ["Context", "console", "err_console", "installation", "one_of", "read_file"]

console = Console()
err_console = Console(stderr=True)


@dataclass
class Context:
    """The home chosen with ``--home`` (or IOTPKI_HOME) and what was opened from it."""

    home: Path | None
    opened: Installation | None = field(default=None)

    def settings(self) -> Settings:
        """Settings of the chosen home."""
        return load_settings(self.home)

    def installation(self, *, create: bool = False, lint: bool = True) -> Installation:
        """The installation, opened once per command."""
        if self.opened is None:
            self.opened = open_installation(self.settings(), create=create, lint=lint)
        return self.opened


def installation(ctx: typer.Context, *, create: bool = False) -> Installation:
    """The installation of the command's context."""
    obj: Context = ctx.obj
    return obj.installation(create=create)


def read_file(path: Path) -> bytes:
    """The bytes of an input file named on the command line; one clear line if unreadable."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc


def one_of(names: Iterable[object]) -> str:
    """Choices as help text reads them: ``a, b or c``."""
    items = [str(n) for n in names]
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"
