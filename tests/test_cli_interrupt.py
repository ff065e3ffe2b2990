"""Ctrl-C inside any command: one line saying what it left behind, exit 130 (typer alone
exits 130 silently)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NoReturn

import pytest
from typer.testing import CliRunner

from explorer import cli

runner = CliRunner()
# The documented exit code of an interrupted command (docs/ARCHITECTURE.md; 128 + SIGINT, the
# shell's convention), written here rather than read from the code under test.
INTERRUPTED = 130
TERMINATED = 143  # 128 + SIGTERM, what a shell reports
SPEC = str(Path(__file__).parent / "specs" / "good" / "minimal.yaml")


def interrupt(*args: Any, **kwargs: Any) -> NoReturn:
    raise KeyboardInterrupt


@pytest.mark.parametrize(("argv", "patched", "expected"), [
    (["validate", SPEC], "read_spec", "interrupted; nothing was written"),
    (["schema"], "json_schema", "interrupted; nothing was written"),
    (["enumerate", SPEC, "-o", "x.csv"], "read_spec", "interrupted; nothing was written"),
    (["cost", SPEC, "-o", "x.csv"], "read_spec", "interrupted; nothing was written"),
    (["train", SPEC, "--key", "a"], "read_spec",
     "interrupted; with --checkpoint-dir the same command again resumes from the last "
     "finished epoch's checkpoint (without it, training starts over)"),
    (["run", SPEC], "read_spec_source",
     "interrupted; the same command again resumes the experiment"),
    (["status"], "open_reader", "interrupted; nothing was written"),
    (["report", "exp", "-o", "r.html"], "open_reader", "interrupted; nothing was written"),
    (["compare", "exp"], "open_reader", "interrupted; nothing was written"),
    (["export", "exp", "-o", "x.csv"], "open_reader",
     "interrupted; no file was written (with --mlflow, the runs logged so far stay and the "
     "same command again updates them)"),
])
def test_ctrl_c_in_a_command_prints_one_line_and_exits_130(
        argv: list[str], patched: str, expected: str, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    monkeypatch.setattr(cli, patched, interrupt)
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(cli.app, argv)
    assert result.exit_code == INTERRUPTED, result.output
    assert result.output.replace("\n", " ").strip() == expected
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_enumerate_keeps_its_own_line(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(cli, "_run_stream", interrupt)
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(cli.app, ["enumerate", SPEC, "-o", "x.csv"])
    assert result.exit_code == INTERRUPTED
    assert result.output.splitlines()[-1] == "interrupted: nothing written"
    assert "interrupted; nothing was written" not in result.output


def terminate(*args: Any, **kwargs: Any) -> NoReturn:
    """What `timeout`, systemd or Slurm do to a command: a real SIGTERM to this process."""
    import os
    import signal
    import time

    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)  # the handler raises in the main thread before this ends
    raise AssertionError("SIGTERM was not handled")


@pytest.mark.parametrize(("argv", "patched", "expected"), [
    (["validate", SPEC], "read_spec", "terminated (SIGTERM); nothing was written"),
    (["train", SPEC, "--key", "a"], "read_spec",
     "terminated (SIGTERM); with --checkpoint-dir the same command again resumes from the last "
     "finished epoch's checkpoint (without it, training starts over)"),
    (["run", SPEC], "read_spec_source",
     "terminated (SIGTERM); the same command again resumes the experiment"),
    (["enumerate", SPEC, "-o", "x.csv"], "_run_stream", "terminated (SIGTERM): nothing written"),
])
def test_sigterm_in_a_command_is_handled_like_ctrl_c_and_exits_143(
        argv: list[str], patched: str, expected: str, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    import signal

    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(cli, patched, terminate)
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(cli.app, argv)
    assert result.exit_code == TERMINATED, result.output
    assert result.output.replace("\n", " ").strip().endswith(expected)
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) is before  # the caller's handler is back
