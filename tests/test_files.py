"""Atomic writes leave files with the permissions a plain write would give."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from explorer.files import atomic_write, atomic_write_text


def plain_mode(path: Path) -> int:
    path.write_text("x")
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_text_has_the_mode_of_a_plain_write(tmp_path: Path) -> None:
    expected = plain_mode(tmp_path / "plain.txt")
    atomic_write_text(tmp_path / "table.csv", "a,b\n")
    assert stat.S_IMODE((tmp_path / "table.csv").stat().st_mode) == expected
    assert (tmp_path / "table.csv").read_text() == "a,b\n"


def test_atomic_write_under_a_strict_umask(tmp_path: Path) -> None:
    from explorer import files

    old = os.umask(0o077)
    files._umask.cache_clear()
    try:
        expected = plain_mode(tmp_path / "plain.txt")
        atomic_write(tmp_path / "out.bin", lambda p: p.write_bytes(b"\0"))
        assert stat.S_IMODE((tmp_path / "out.bin").stat().st_mode) == expected == 0o600
    finally:
        os.umask(old)
        files._umask.cache_clear()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
