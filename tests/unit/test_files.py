"""The one file helper: atomic writes with their mode, private files, secrets generated once."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from iotpki.files import generated_secret, write_atomically, write_private


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_write_private_is_owner_only_in_an_owner_only_directory(tmp_path: Path) -> None:
    target = tmp_path / "secrets" / "key.pem"
    write_private(target, b"secret")
    assert target.read_bytes() == b"secret"
    assert _mode(target) == 0o600
    assert _mode(target.parent) == 0o700
    nested = tmp_path / "crl" / "issuing" / "p0001.crl"  # every new parent is private too
    write_private(nested, b"crl")
    assert _mode(tmp_path / "crl") == _mode(nested.parent) == 0o700


def test_write_atomically_sets_the_mode_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "ca.crl"
    write_atomically(target, b"old")
    write_atomically(target, b"new", mode=0o640)
    assert target.read_bytes() == b"new"
    assert _mode(target) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ca.crl"]


def test_a_failed_write_leaves_the_old_content_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "ca.crl"
    write_atomically(target, b"old")

    def refuse(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        write_atomically(target, b"new")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ca.crl"]


def test_the_temporary_is_never_readable_by_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []
    real_replace = os.replace

    def spy(src: str, dst: Path) -> None:
        seen.append(_mode(Path(src)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    write_private(tmp_path / "key.pem", b"secret")
    assert seen == [0o600]


def test_a_secret_is_generated_once(tmp_path: Path) -> None:
    calls: list[int] = []

    def generate() -> bytes:
        calls.append(1)
        return b"s3cret\n"

    path = tmp_path / "secrets" / "webhook"
    assert generated_secret(path, generate) == b"s3cret\n"
    assert generated_secret(path, generate) == b"s3cret\n"
    assert calls == [1]
    assert _mode(path) == 0o600
