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


def test_a_checkpoint_that_is_not_one_is_set_aside_and_training_starts_over(
        tmp_path: Path) -> None:
    # Before checkpoints were verified this exited 2 ("not a readable checkpoint; delete
    # it"); a file that is no zip archive is now treated as damaged, like one whose CRCs
    # fail: kept aside, never read again, the trial trained from epoch 0.
    spec = tiny_spec(tmp_path, train={"epochs": 1},
                     data={"train_subset": 128, "test_subset": 64})
    key = first_key(spec)
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "last.pt").write_bytes(b"not a checkpoint")

    result = invoke("train", str(spec), "--key", key, "--device", "cpu",
                    "--checkpoint-dir", str(folder))

    assert result.exit_code == 0, result.output
    kept = sorted(folder.glob("last.pt.damaged-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == b"not a checkpoint"
    notes = [line for line in error_lines(result.stderr) if line.startswith("note:")]
    assert notes == [f"note: checkpoint {folder / 'last.pt'} is damaged (File is not a zip "
                     f"file); set aside as {kept[0].name}, the trial starts over from epoch 0"]
    assert "internal error" not in result.output and "resumed from" not in result.output
    assert (folder / "last.pt").is_file()


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


def test_epochs_with_tensorboard_on_the_table2_recipe_gives_its_own_line(tmp_path: Path) -> None:
    """resnext50_table2.yaml's step schedule drops at 30, 60 and 90: `--epochs 40` keeps the
    drop at 30 and leaves the others out, on every path (the TensorBoard log's trial key
    and the trainer's recipe), so the run goes on to the data, whose own problem (an empty
    image folder) is the one line, exit 2 - not a recipe ValidationError."""
    spec = Path(__file__).resolve().parent.parent / "spaces" / "resnext50_table2.yaml"
    root = tmp_path / "imagenet"
    (root / "train" / "n01").mkdir(parents=True)
    (root / "val" / "n01").mkdir(parents=True)

    result = invoke("train", str(spec), "--key", first_key(spec), "--epochs", "40",
                    "--tensorboard", "--runs-dir", str(tmp_path / "runs"),
                    "--set", f"data.root={root}")

    assert result.exit_code == 2, result.output
    lines = error_lines(result.stderr)
    assert lines[0].startswith("TensorBoard: "), lines  # the revised recipe was planned
    assert lines[1:] == [f"error: {root / 'train'} has no images (.jpg, .jpeg, .png, .bmp, "
                         ".webp, .ppm)"], lines


def test_epochs_revise_the_recipe_the_same_way_for_the_log_and_the_trainer(
        tmp_path: Path) -> None:
    """A short run of a step schedule: the TensorBoard folder is named by the trial key of
    the recipe that trained (drops past the new last epoch left out)."""
    from explorer.plan import plan_trial

    spec_path = tiny_spec(tmp_path, train={"epochs": 4, "schedule": "step",
                                           "lr_milestones": [1, 3], "seeds": [0]})
    spec = load_spec(spec_path)
    candidate = listed_candidates(spec)[0]

    result = invoke("train", str(spec_path), "--key", candidate.key, "--device", "cpu",
                    "--epochs", "2", "--tensorboard", "--runs-dir", str(tmp_path / "runs"),
                    "--json")

    assert result.exit_code == 0, result.output
    revised = spec.model_copy(update={"train": spec.train.model_copy(
        update={"epochs": 2, "lr_milestones": (1,)})})
    key = plan_trial(revised, candidate, 0).trial_key
    assert [p.name for p in (tmp_path / "runs" / spec.name / "tensorboard").iterdir()] == [key]
