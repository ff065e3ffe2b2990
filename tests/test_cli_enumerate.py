"""`explorer enumerate` through the real command line: tables on disk, errors as one line."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
TABLE2 = REPO / "spaces" / "resnext50_table2.yaml"

# The paper's Table 2 (C -> d), and torchvision's published counts at 224x224, 1000 classes
# (docs/CONVENTIONS.md).
TABLE2_D = {1: 64, 2: 40, 4: 24, 8: 14, 32: 4}
RESNET50 = (25_557_032, 4_089_184_256)
RESNEXT50_32X4D = (25_028_904, 4_230_479_872)
REQUIRED = ["space", "key", "cardinality", "bottleneck_width", "params", "flops", "acts"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "FORCE_COLOR")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_cli(*args: str, code: str | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m explorer.cli ARGS`, or `python -c CODE ARGS` for a patched run."""
    head = ["-c", code, "enumerate"] if code else ["-m", "explorer.cli", "enumerate"]
    return subprocess.run([sys.executable, *head, *args], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The Table 2 spec enumerated to .csv, .parquet and .json (concurrently, once)."""
    folder = tmp_path_factory.mktemp("tables")
    paths = {s: folder / "sub" / f"table2{s}" for s in (".csv", ".parquet", ".json")}
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = dict(zip(paths, pool.map(
            lambda p: run_cli(str(TABLE2), "--output", str(p)), paths.values()), strict=True))
    for suffix, result in results.items():
        assert result.returncode == 0, (suffix, result.stderr)
        assert "Traceback" not in result.stdout + result.stderr
        assert f"wrote {paths[suffix]}" in result.stdout
        assert "10 candidates, 0 dropped" in result.stdout
    return paths


def check_table2(frame: pd.DataFrame) -> None:
    assert set(REQUIRED) <= set(frame.columns)
    assert len(frame) == 10  # one row per candidate: 5 cardinalities in each of 2 spaces
    assert sorted(frame["space"].unique()) == ["preserved", "preserved-flops"]
    for _, rows in frame.groupby("space"):
        assert rows["key"].is_unique
        assert sorted(rows["cardinality"]) == sorted(TABLE2_D)
    preserved = frame[frame["space"] == "preserved"]
    solved = dict(zip(preserved["cardinality"], preserved["bottleneck_width"], strict=True))
    assert {int(c): int(d) for c, d in solved.items()} == TABLE2_D
    row = preserved.set_index("cardinality")
    assert (row.loc[1, "params"], row.loc[1, "flops"]) == RESNET50
    assert (row.loc[32, "params"], row.loc[32, "flops"]) == RESNEXT50_32X4D
    assert (frame["acts"] > 0).all()
    assert all(abs(p - RESNET50[0]) / RESNET50[0] <= 0.05 for p in preserved["params"])


def test_csv_has_one_row_per_candidate_with_table2_values(tables: dict[str, Path]) -> None:
    frame = pd.read_csv(tables[".csv"])
    check_table2(frame)
    assert frame["depths"].iloc[0] == "[3,4,6,3]"  # lists are written as JSON-like text


def test_parquet_and_json_are_readable_by_pandas(tables: dict[str, Path]) -> None:
    csv = pd.read_csv(tables[".csv"])
    for frame in (pd.read_parquet(tables[".parquet"]), pd.read_json(tables[".json"])):
        check_table2(frame)
        assert list(frame["key"]) == list(csv["key"])
        assert list(frame["params"]) == list(csv["params"])
        assert list(frame["depths"].iloc[0]) == [3, 4, 6, 3]  # lists stay lists
    records = json.loads(tables[".json"].read_text())
    assert isinstance(records, list) and len(records) == 10
    leftovers = [p.name for p in tables[".csv"].parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []  # no temporary files left beside the tables


def test_unknown_output_suffix_is_one_clear_line(tmp_path: Path) -> None:
    out = tmp_path / "table.xlsx"
    result = run_cli(str(TABLE2), "--output", str(out))
    assert result.returncode == 2
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, result.stderr
    assert ".xlsx" in lines[0] and ".csv" in lines[0] and ".parquet" in lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []
    assert "candidates" not in result.stdout  # refused before enumerating


def test_space_option_selects_spaces_and_rejects_unknown_ones(tmp_path: Path) -> None:
    out = tmp_path / "one.csv"
    good = run_cli(str(TABLE2), "--space", "preserved-flops", "--output", str(out))
    assert good.returncode == 0, good.stderr
    frame = pd.read_csv(out)
    assert set(frame["space"]) == {"preserved-flops"} and len(frame) == 5

    bad = run_cli(str(TABLE2), "--space", "nope", "--output", str(tmp_path / "no.csv"))
    assert bad.returncode == 2
    lines = [x for x in bad.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "nope" in lines[0] and "preserved" in lines[0]
    assert not (tmp_path / "no.csv").exists()


TINY = """\
name: tiny
model:
  template: cifar
  depths: [1, 1]
  stem_width: 8
  widths: [16, 32]
  cardinality: 1
  bottleneck_width: 4
spaces:
  preserved:
    axes:
      cardinality: [1, 2, 4]
    solve:
      field: bottleneck_width
      preserve: params
      tolerance: 0.5
data:
  dataset: cifar10
  resolution: 16
"""


@pytest.fixture
def tiny_spec(tmp_path: Path) -> Path:
    # Whether explorer.models.build_model and .measure exist, without importing torch here
    # (the CLI subprocess imports them; importing them in this process too costs seconds).
    models = REPO / "explorer" / "models"
    resnext = models / "resnext.py"
    if importlib.util.find_spec("explorer.models") is None or not (
            (models / "measure.py").exists() and resnext.exists()
            and "def build_model" in resnext.read_text()):
        pytest.skip("explorer.models.build_model / measure are not written yet")
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


def test_verify_fvcore_agrees_on_a_tiny_space(tiny_spec: Path) -> None:
    result = run_cli(str(tiny_spec), "--verify-fvcore")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "fvcore agrees on all 3 candidates" in result.stdout
    assert "Traceback" not in result.stderr


PATCHED = """\
import sys
import explorer.space.stream as space
from explorer.complexity import count_stages

def off_by_one(**columns):
    params, flops, acts = count_stages(**columns)
    return params + 1, flops, acts

space.count_stages = off_by_one
from explorer.cli import main
main(sys.argv[1:])
"""


@pytest.mark.slow
def test_verify_fvcore_reports_a_formula_that_disagrees(tiny_spec: Path) -> None:
    """The check can fail: with the formula's params off by one, every candidate differs."""
    result = run_cli(str(tiny_spec), "--verify-fvcore", code=PATCHED)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "3 of 3 candidates differ from fvcore" in result.stderr
    assert result.stderr.count("mismatch") == 3


def test_a_space_with_every_point_dropped_enumerates_to_nothing(tmp_path: Path) -> None:
    spec = tmp_path / "none.yaml"
    spec.write_text(TINY + "constraints:\n  params: [null, 1000]\n")
    out = tmp_path / "none.csv"
    result = run_cli(str(spec), "--output", str(out))
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    assert result.returncode == 0, result.stderr
    assert "0 candidates, 3 dropped" in result.stdout


GRID = """\
name: grid
model:
  template: cifar
  depths: [1, 1]
  stem_width: 8
  widths: [16, 32]
  cardinality: 1
  bottleneck_width: 4
spaces:
  grid:
    axes:
      cardinality: [1, 2, 3, 4, 5, 6]
      bottleneck_width: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
      stem_width: [4, 8]
data:
  dataset: cifar10
  resolution: 16
"""


@pytest.fixture
def grid_spec(tmp_path: Path) -> tuple[Path, list[str]]:
    """A 120-point grid, and its candidates' keys in the order the file lists them."""
    path = tmp_path / "grid.yaml"
    path.write_text(GRID)
    table = tmp_path / "all.csv"
    result = run_cli(str(path), "--output", str(table))
    assert result.returncode == 0, result.stderr
    return path, list(pd.read_csv(table)["key"])


def shown_keys(stdout: str, keys: list[str]) -> list[str]:
    return [k for k in keys if k in stdout]


def test_the_grid_size_is_the_first_line(grid_spec: tuple[Path, list[str]]) -> None:
    result = run_cli(str(grid_spec[0]), "--limit", "0")
    assert result.stdout.splitlines()[0] == "grid: 120 grid points (grid 120)"  # 6 x 10 x 2


def test_the_terminal_shows_the_first_50_rows_then_limit_then_all(
        grid_spec: tuple[Path, list[str]]) -> None:
    path, keys = grid_spec
    assert len(keys) == 120
    default = run_cli(str(path))
    assert default.returncode == 0, default.stderr
    assert shown_keys(default.stdout, keys) == keys[:50]
    assert "showed 50 of 120 candidates, as enumerated" in default.stdout
    three = run_cli(str(path), "--limit", "3")
    assert shown_keys(three.stdout, keys) == keys[:3]
    every = run_cli(str(path), "--all")
    assert shown_keys(every.stdout, keys) == keys
    assert "showed" not in every.stdout


def test_output_writes_the_file_and_a_summary_without_a_table(
        grid_spec: tuple[Path, list[str]], tmp_path: Path) -> None:
    path, keys = grid_spec
    out = tmp_path / "again.parquet"
    result = run_cli(str(path), "--output", str(out))
    assert result.returncode == 0, result.stderr
    assert shown_keys(result.stdout, keys) == []
    assert "120 candidates, 0 dropped" in result.stdout
    assert "grid: 120 of 120 points; params " in result.stdout
    assert f"wrote {out}" in result.stdout
    assert list(pd.read_parquet(out)["key"]) == keys
    with_rows = run_cli(str(path), "--output", str(out), "--limit", "2")
    assert shown_keys(with_rows.stdout, keys) == keys[:2]


def test_many_drops_are_counted_by_reason_few_get_a_line_each(tmp_path: Path) -> None:
    many = tmp_path / "many.yaml"
    many.write_text(GRID + "constraints:\n  params: [null, 2000]\n  flops: [200000, null]\n")
    result = run_cli(str(many), "--limit", "0")
    assert result.returncode == 0, result.stderr
    counts = {line.split(" points: ")[1]: int(line.split()[1].replace(",", ""))
              for line in result.stdout.splitlines() if line.startswith("dropped ")}
    kept = int(result.stdout.split(" candidates, ")[0].split()[-1])
    assert sum(counts.values()) + kept == 120 and len(counts) == 2, result.stdout
    assert set(counts) == {"params above the constraint's 2000",
                           "flops below the constraint's 2e+05"}

    few = tmp_path / "few.yaml"
    few.write_text(TINY + "constraints:\n  params: [null, 1000]\n")
    lines = [x for x in run_cli(str(few)).stdout.splitlines() if x.startswith("dropped")]
    assert len(lines) == 3 and all("params" in x and "above the constraint" in x for x in lines)


DEEP = REPO / "benchmarks" / "enumerate_deep.yaml"


def test_ctrl_c_leaves_no_file_and_exits_130(tmp_path: Path) -> None:
    """SIGINT mid-way through a million points: exit 130, nothing in the folder."""
    out = tmp_path / "deep.csv"
    proc = subprocess.Popen(
        [sys.executable, "-m", "explorer.cli", "enumerate", str(DEEP), "--output", str(out)],
        cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    first = proc.stdout.readline()  # printed before any work
    assert "1,049,760 grid points" in first, first
    time.sleep(1.0)  # well into the stream: the scratch file exists by now
    assert proc.poll() is None, ("the enumeration ended before it could be interrupted",
                                 proc.communicate())
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, (stdout, stderr)
    assert "interrupted" in stderr and "Traceback" not in stderr, stderr
    assert list(tmp_path.iterdir()) == [], (list(tmp_path.iterdir()), stdout, stderr)


def test_a_network_past_int64_is_refused_in_one_line(tmp_path: Path) -> None:
    """The issue's network: its flops wrapped to a negative number that passed a
    `flops: [null, 6e9]` band (exit 0); now one line naming the space, exit 2."""
    spec = tmp_path / "huge.yaml"
    spec.write_text(
        "name: huge\n"
        "model: {template: cifar, depths: [1, 1], stem_width: 64, widths: [64, 128],\n"
        "        cardinality: 64, bottleneck_width: 64}\n"
        "spaces:\n  wide: {axes: {widths: [[64, 128], [64, 2097152]]}}\n"
        "data: {dataset: imagenet, num_classes: 1000, resolution: 224}\n"
        "constraints: {flops: [null, 6.0e+9]}\n", encoding="utf-8")
    # Longhand multiply-adds. Stem: 3x3 conv 3 -> 64 at 224. Stage 1 (224, stride 1,
    # g = C.d = 4096): 1x1 64 -> g, 3x3 g -> g in 64 groups, 1x1 g -> 64, no projection
    # (64 in, 64 out). Stage 2 (stride 2 to 112; d scaled 64 * 2097152 / 64, so
    # g = 64 * 2097152): 1x1 64 -> g at 224, 3x3 grouped at 112, 1x1 g -> w, projection
    # 64 -> w at 112. Head: w -> 1000.
    w, g1, g2 = 2097152, 64 * 64, 64 * 2097152
    flops = (64 * 3 * 9 * 224**2
             + (64 * g1 + g1 * (g1 // 64) * 9 + g1 * 64) * 224**2
             + 64 * g2 * 224**2 + (g2 * (g2 // 64) * 9 + g2 * w + 64 * w) * 112**2
             + w * 1000)

    done = run_cli(str(spec))

    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"error: {spec}: space wide: the network of depths [1, 1], widths [64, 2097152], "
        f"C [64, 64], d [64, 2097152] has flops {flops:,}, more than the "
        f"{2**63 - 1:,} a count holds (int64); use smaller widths, depths, "
        "cardinality or bottleneck width, or a lower resolution"], done.stderr
