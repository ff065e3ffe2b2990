"""`explorer train` ends with a documented exit code: 2 for a trial that cannot start as
asked (the trainer's TrialError), 3 for one that fails while training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import tiny_spec
from typer.testing import CliRunner

from explorer.cli import app
from explorer.search import listed_candidates
from explorer.spec import load_spec


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def first_key(spec: Path) -> str:
    candidates = listed_candidates(load_spec(spec))
    assert candidates
    return candidates[0].key


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def test_a_checkpoint_that_is_not_one_exits_2_in_one_line(tmp_path: Path) -> None:
    spec = tiny_spec(tmp_path, train={"epochs": 1})
    key = first_key(spec)
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "last.pt").write_bytes(b"not a checkpoint")

    result = invoke("train", str(spec), "--key", key, "--device", "cpu",
                    "--checkpoint-dir", str(folder))

    assert result.exit_code == 2, result.output
    assert error_lines(result.stderr) == [
        f"error: trial {key}: {folder / 'last.pt'} is not a readable checkpoint "
        "(UnpicklingError); delete it to start over"], result.stderr
    assert "internal error" not in result.output


def test_device_cuda_without_a_gpu_exits_2_in_one_line(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    spec = tiny_spec(tmp_path, train={"epochs": 1})
    key = first_key(spec)

    result = invoke("train", str(spec), "--key", key, "--device", "cuda")

    assert result.exit_code == 2, result.output
    assert error_lines(result.stderr) == [
        f"error: trial {key}: device cuda was asked for but torch sees no CUDA GPU; use "
        "--device cpu"], result.stderr


@pytest.mark.slow
def test_a_diverging_trial_exits_3_naming_the_reason(tmp_path: Path) -> None:
    spec = tiny_spec(tmp_path, train={"epochs": 1, "lr": 1e12})  # the loss turns NaN

    result = invoke("train", str(spec), "--key", first_key(spec), "--device", "cpu", "--json")

    assert result.exit_code == 3, result.output
    assert "trial failed: non-finite training loss" in result.stderr
    assert '"status": "failed"' in result.stdout.splitlines()[-1]
