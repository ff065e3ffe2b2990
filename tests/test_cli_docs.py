"""docs/CLI.md is what typer's own documentation command writes for the current CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMAND = "typer explorer.cli utils docs --name explorer --output docs/CLI.md"


def test_cli_md_is_typers_docs_of_the_current_cli(tmp_path: Path) -> None:
    written = tmp_path / "CLI.md"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    subprocess.run([sys.executable, "-m", "typer", "explorer.cli", "utils", "docs",
                    "--name", "explorer", "--output", str(written)],
                   cwd=REPO, env=env, check=True, capture_output=True, timeout=120)
    expected = written.read_text(encoding="utf-8")
    assert "## `explorer run`" in expected and "--set KEY.PATH=VALUE" in expected
    assert (REPO / "docs" / "CLI.md").read_text(encoding="utf-8") == expected, (
        f"docs/CLI.md is out of date: run `{COMMAND}` in the repository root")
