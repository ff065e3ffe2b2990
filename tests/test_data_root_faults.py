"""A data root that cannot hold the data: one line naming it and what to do, exit 2, and
nothing left behind (the data is checked before the store is opened, so no empty
experiment). Through the real `explorer` command; the read-only root is a real read-only
bind mount (in a user and mount namespace of its own, `unshare -rm`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_spec

pytestmark = pytest.mark.fault

EXPLORER = str(Path(sys.executable).with_name("explorer"))
FOLDER = "cifar-10-batches-py"


def run_dry(spec: Path, runs: Path, root: Path, *, wrap: list[str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    argv = [EXPLORER, "run", str(spec), "--runs-dir", str(runs), "--dry-run",
            "--set", "data.dataset=cifar10", "--set", f"data.root={root}",
            "--set", "data.download=true"]
    return subprocess.run([*(wrap or []), *argv], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "300"})


def test_a_data_root_that_is_a_file_exits_2_naming_it(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.write_text("not a folder")
    runs = tmp_path / "runs"

    done = run_dry(tiny_spec(tmp_path), runs, root)

    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"error: data.root {root} is a file, not a folder; point data.root at the folder that "
        f"holds (or is to hold) {FOLDER}/"]
    assert not runs.exists()  # no store, so no empty experiment


def test_a_data_root_below_a_file_exits_2_naming_it(tmp_path: Path) -> None:
    root = tmp_path / "data" / "cifar"
    root.parent.write_text("not a folder")

    done = run_dry(tiny_spec(tmp_path), tmp_path / "runs", root)

    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"error: cannot write {FOLDER}/ under data.root {root} (Not a directory); point "
        f"data.root at a writable folder, or put the extracted {FOLDER}/ there"]


def _can_bind_mount() -> str | None:
    if shutil.which("unshare") is None:
        return "no unshare command"
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True, text=True)
    return None if probe.returncode == 0 else f"unshare -rm refused: {probe.stderr.strip()}"


def test_a_read_only_data_root_exits_2_naming_it(tmp_path: Path) -> None:
    """A read-only bind mount where a user namespace may be made (root, as in the dev
    container, writes through a mode-555 folder); a mode-555 folder for anyone else."""
    source, root = tmp_path / "source", tmp_path / "readonly"
    source.mkdir()
    root.mkdir()
    runs = tmp_path / "runs"
    if os.geteuid() != 0:
        root.chmod(0o555)
        try:
            done = run_dry(tiny_spec(tmp_path), runs, root)
        finally:
            root.chmod(0o755)
        reason = "Permission denied"
    else:
        refused = _can_bind_mount()
        if refused is not None:
            if os.environ.get("CI"):
                pytest.fail(f"read-only bind mount under CI: {refused}", pytrace=False)
            pytest.skip(refused)
        mount = (f"mount --bind {source} {root} && mount -o remount,ro,bind {root} && "
                 'exec "$@"')
        done = run_dry(tiny_spec(tmp_path), runs, root,
                       wrap=["unshare", "-rm", "sh", "-c", mount, "sh"])
        reason = "Read-only file system"

    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"error: cannot write {FOLDER}/ under data.root {root} ({reason}); point "
        f"data.root at a writable folder, or put the extracted {FOLDER}/ there"]
    assert not runs.exists()
    assert list(source.iterdir()) == [] and list(root.iterdir()) == []
