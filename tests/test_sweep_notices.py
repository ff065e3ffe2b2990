"""The driver's own notices during `explorer run` reach the terminal, not ray.log."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from explorer.console import SweepDisplay
from explorer.sweep.process import stdout_to


def test_a_notice_during_the_sweep_reaches_the_terminal_not_the_log(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "exp" / "ray.log"
    display = SweepDisplay(Console(width=200))  # follows sys.stdout, like the CLI's `out`
    with display.sweeping(), stdout_to(log):
        print("Ray's banner")
        display.notice("could not renew the experiment's lease (OperationalError); retrying")
    display.notice("after the sweep")
    shown = capsys.readouterr().out
    assert "could not renew the experiment's lease" in shown
    assert "after the sweep" in shown
    logged = log.read_text(encoding="utf-8")
    assert "Ray's banner" in logged and "Ray's banner" not in shown
    assert "lease" not in logged


def test_a_notice_before_the_sweep_reaches_the_terminal(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "ray.log"
    display = SweepDisplay(Console(width=200))
    with stdout_to(log):
        display.notice("took over experiment 'x' v1")
    assert "took over experiment 'x' v1" in capsys.readouterr().out
    assert "took over" not in log.read_text(encoding="utf-8")
