"""Files of an installation: atomic writes with their mode, private files, generated secrets.

A reader sees a file's old content or its new content, never a part: data goes to a temporary
file beside the target (created exclusively, owner-only), is flushed to disk, gets its mode and
replaces the target in one rename.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["generated_secret", "write_atomically", "write_private"]


def write_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write a file so that readers see the old or the new content, never a part."""
    _make_directories(path.parent, 0o700 if mode & 0o077 == 0 else 0o777)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _make_directories(directory: Path, mode: int) -> None:
    """Create ``directory`` and each missing parent with ``mode`` (``mkdir(parents=True)``
    would give the parents the umask's default instead)."""
    missing = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for each in reversed(missing):
        each.mkdir(mode=mode, exist_ok=True)


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, readable by the owner only (0600)."""
    write_atomically(path, data, mode=0o600)


def generated_secret(path: Path, generate: Callable[[], bytes]) -> bytes:
    """The bytes of ``path``, first written once (0600) from ``generate()`` if it is absent."""
    if not path.is_file():
        write_private(path, generate())
    return path.read_bytes()
