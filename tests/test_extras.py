"""Optional extras: each command names the extra it needs when a module of it is missing,
and the core commands (validate, enumerate, export, status) load none of the extras.

A missing module is simulated with ``sys.modules[name] = None``: importing it then fails
and importlib.util.find_spec reports it absent, as in an install without it. The real
core-only install into a fresh venv is measured, not tested (it downloads).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from typer.testing import CliRunner

from explorer.cli import app
from explorer.errors import EXTRAS

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "spaces" / "quickstart.yaml"
TABLE2 = REPO / "spaces" / "resnext50_table2.yaml"
# Every module some extra installs: none of them may load on the core commands' path.
EXTRA_MODULES = sorted({m for modules in EXTRAS.values() for m in modules})


CASES = [
    (["run", str(QUICKSTART)], "ray", "sweep"),
    (["run", str(QUICKSTART)], "optuna", "sweep"),
    (["run", str(QUICKSTART), "--dry-run"], "torch", "sweep"),
    (["train", str(QUICKSTART), "--key", "0"], "torch", "train"),
    (["train", str(QUICKSTART), "--key", "0"], "sklearn", "train"),
    (["cost", str(QUICKSTART)], "torch", "train"),
    (["dashboard"], "streamlit", "dashboard"),
    (["report", "quickstart", "-o", "r.html"], "plotly", "dashboard"),
    (["compare", "quickstart"], "scipy", "dashboard"),
    (["enumerate", str(TABLE2), "--verify-fvcore"], "fvcore", "fvcore"),
    (["status", "--store", "postgresql+psycopg://u@127.0.0.1:1/db"], "psycopg", "postgres"),
]


@pytest.mark.parametrize(("argv", "module", "extra"), CASES,
                         ids=[f"{c[0][0]}-{c[1]}" for c in CASES])
def test_a_command_names_the_extra_it_misses(
        argv: list[str], module: str, extra: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # whatever a command would write lands here
    monkeypatch.setitem(sys.modules, module, None)
    result = CliRunner().invoke(app, argv, catch_exceptions=False)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert f"pip install 'explorer[{extra}]'" in lines[0]
    assert module in lines[0]
    assert not list(tmp_path.iterdir()), "nothing is written before the check"


def test_report_does_not_need_streamlit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "streamlit", None)
    result = CliRunner().invoke(app, ["report", "x", "-o", str(tmp_path / "r.html"),
                                      "--runs-dir", str(tmp_path)], catch_exceptions=False)
    assert result.exit_code == 2
    assert "explorer[" not in result.stderr  # it got as far as the (missing) store


def test_the_extras_table_matches_pyproject() -> None:
    """Every extra the commands name exists in pyproject.toml, and `all` (and `dev`) has them."""
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert set(EXTRAS) <= set(extras)
    assert extras["all"] == [f"explorer[{','.join(n for n in extras if n not in ('all', 'dev'))}]"]
    assert "explorer[all]" in extras["dev"]


# The core commands, run with every extra's modules made unimportable.
_CORE = """
import sys
for name in {blocked!r}:
    sys.modules[name] = None
from explorer.cli import main
main(sys.argv[1:])
"""


def _core(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "FORCE_COLOR")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    code = _CORE.format(blocked=EXTRA_MODULES)
    return subprocess.run([sys.executable, "-c", code, *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_core_commands_run_without_any_extra(tmp_path: Path) -> None:
    from fixtures_store import make_fixture_store

    validated = _core("validate", str(TABLE2), cwd=tmp_path)
    assert validated.returncode == 0, validated.stderr
    table = _core("enumerate", str(TABLE2), "-o", "t.parquet", cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    assert "10 candidates, 0 dropped" in table.stdout
    assert (tmp_path / "t.parquet").stat().st_size > 0
    make_fixture_store(tmp_path / "runs", experiments=["core"], trials_per_space=1)
    for argv in (["status"], ["export", "core", "-o", "trials.csv"]):
        done = _core(*argv, cwd=tmp_path)
        assert done.returncode == 0, (argv, done.stderr)
    assert (tmp_path / "trials.csv").read_text().count("\n") > 1


def test_the_core_path_imports_no_extra(tmp_path: Path) -> None:
    """Not blocked this time: enumerate and export simply never import an extra's module."""
    code = (
        "import sys\n"
        "from explorer.cli import main\n"
        "try:\n"
        f"    main(['enumerate', {str(TABLE2)!r}, '-o', 't.csv'])\n"
        "except SystemExit as done:\n"
        "    assert not done.code, done.code\n"
        f"print(sorted(m for m in {EXTRA_MODULES!r} if m in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"
