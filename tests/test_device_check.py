"""benchmarks/device_check.py --smoke runs end to end without ray, optuna, fvcore or
streamlit (the GPU machine has none of them), and reports every part it measures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Run the script with those packages made unimportable, as on the GPU machine.
BLOCKED = ("ray", "optuna", "fvcore", "streamlit")
LAUNCH = """
import runpy, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by this test)")
        return None
sys.meta_path.insert(0, Block())
sys.argv = [{script!r}, "--smoke", "--out", {out!r}]
runpy.run_path({script!r}, run_name="__main__")
"""


@pytest.mark.slow
def test_device_check_smoke_runs_without_the_optional_packages(tmp_path: Path) -> None:
    out = tmp_path / "device_check.json"
    code = LAUNCH.format(blocked=set(BLOCKED), script=str(REPO / "benchmarks" / "device_check.py"),
                         out=str(out))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["smoke"] is True and report["device"]["device"] == "cpu"
    rows = report["rows"]
    assert not [r for r in rows if "error" in r]
    parts = {r["part"] for r in rows}
    assert {"trainer", "plain", "blocks", "slice"} <= parts
    assert {r["name"] for r in rows if r["part"] == "blocks"} == {"grouped", "concat", "split"}
    assert len([r for r in rows if r["part"] == "slice"]) == 4  # C = 1 and 8, two seeds each
    assert all(r["images_per_sec"] > 0 for r in rows if r["part"] != "tv-test")
    assert any("ray" in note and "skipped" in note for note in report["notes"])
