"""Stored and user text reaches the terminal as it is: rich markup must not eat a stored
error's brackets ("[enforce fail at inline_container.cc:672]", torch's own words)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, NoReturn

import pytest
from rich.console import Console
from typer.testing import CliRunner

from explorer import cli
from explorer.console import SweepDisplay

SPEC = str(Path(__file__).parent / "specs" / "good" / "minimal.yaml")
TORCH_ERROR = ("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed "
               "writing file data/3: file write failed [/red] [bold]")


def test_a_failed_trials_stored_error_is_printed_verbatim(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from explorer import experiment

    def failed_run(request: Any, observer: Any = None) -> experiment.RunSummary:
        return experiment.RunSummary("minimal", 1, 1, 0, 0, 0, (("abc123", TORCH_ERROR),), 0.1)

    monkeypatch.setattr(experiment, "run_experiment", failed_run)
    result = CliRunner().invoke(cli.app, ["run", SPEC, "--runs-dir", str(tmp_path)])

    assert result.exit_code == 3, result.output
    assert f"failed trial abc123: {TORCH_ERROR}" in result.stderr.splitlines(), result.stderr


def test_an_internal_errors_text_is_printed_verbatim(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def bug(*args: Any, **kwargs: Any) -> NoReturn:
        raise RuntimeError(TORCH_ERROR)

    monkeypatch.setattr(cli, "read_spec", bug)
    with pytest.raises(SystemExit) as exited:
        cli.main(["validate", SPEC])

    assert exited.value.code == 1
    assert f"internal error: RuntimeError: {TORCH_ERROR}" in capsys.readouterr().err


def test_a_run_notice_is_printed_verbatim() -> None:
    screen = io.StringIO()
    display = SweepDisplay(Console(file=screen, width=300))
    display.notice(f"lease of host [bold]x[/] taken over: {TORCH_ERROR}")
    assert screen.getvalue() == f"note: lease of host [bold]x[/] taken over: {TORCH_ERROR}\n"
