"""`explorer train --init PATH`: a trial starts from a saved state_dict (explorer's own, of
any block form, or an explorer trial checkpoint; torchvision's layout is checked in
tests/test_torchvision_weights.py), and weights that do not fit the trial's architecture
are one line, exit 2, naming the first key that differs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import tiny_spec
from typer.testing import CliRunner

from explorer.arch import BlockForm
from explorer.cli import app
from explorer.models import build_model, fuse_state_dict
from explorer.space import Candidate, enumerate_spec
from explorer.spec import load_spec
from explorer.train import TrialError, read_initial_weights, starting_from


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


@pytest.fixture
def spec_path(tmp_path: Path) -> Path:
    return tiny_spec(tmp_path, train={"epochs": 1})


def candidates(spec_path: Path) -> tuple[Candidate, ...]:
    return enumerate_spec(load_spec(spec_path)).candidates


def saved(model: torch.nn.Module, path: Path) -> Path:
    torch.save(model.state_dict(), path)
    return path


def error_lines(result: Any) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


@pytest.mark.parametrize("form", ["grouped", "concat", "split"])
def test_weights_of_any_form_start_the_trials_model(spec_path: Path, tmp_path: Path,
                                                    form: BlockForm) -> None:
    arch = candidates(spec_path)[1].arch  # C = 2: the forms differ
    torch.manual_seed(7)
    source = build_model(dataclasses.replace(arch, block=form), 10)
    weights = read_initial_weights(saved(source, tmp_path / "w.pt"), arch, 10)
    model = starting_from(weights)(arch, 10)
    want = fuse_state_dict(source.state_dict())
    got = fuse_state_dict(model.state_dict())
    assert list(got) == list(want)
    for key in want:
        assert torch.equal(got[key], want[key]), key


def test_an_explorer_checkpoint_is_read_as_its_model(spec_path: Path, tmp_path: Path) -> None:
    first = candidates(spec_path)[0]
    done = invoke("train", str(spec_path), "--key", first.key, "--device", "cpu",
                  "--checkpoint-dir", str(tmp_path / "ckpt"))
    assert done.exit_code == 0, done.output
    checkpoint = tmp_path / "ckpt" / "last.pt"
    payload = torch.load(checkpoint, weights_only=True)
    weights = read_initial_weights(checkpoint, first.arch, 10)
    assert weights.keys() == payload["model"].keys()
    assert all(torch.equal(weights[k], payload["model"][k]) for k in weights)


def test_train_from_trained_weights_starts_ahead(spec_path: Path, tmp_path: Path) -> None:
    """Through the command: one epoch from weights trained for four has a lower training
    loss than one epoch from the seeded initialisation."""
    first = candidates(spec_path)[0]
    trained = invoke("train", str(spec_path), "--key", first.key, "--device", "cpu",
                     "--epochs", "4", "--checkpoint-dir", str(tmp_path / "ckpt"))
    assert trained.exit_code == 0, trained.output
    scratch = invoke("train", str(spec_path), "--key", first.key, "--device", "cpu", "--json")
    started = invoke("train", str(spec_path), "--key", first.key, "--device", "cpu", "--json",
                     "--init", str(tmp_path / "ckpt" / "last.pt"))
    assert scratch.exit_code == 0 and started.exit_code == 0, started.output
    loss = {name: json.loads(r.stdout.strip().splitlines()[-1])["train_loss"]
            for name, r in (("scratch", scratch), ("init", started))}
    assert loss["init"] < 0.7 * loss["scratch"], loss


def test_weights_of_another_architecture_name_the_first_differing_key(
        spec_path: Path, tmp_path: Path) -> None:
    one, two = candidates(spec_path)[:2]
    assert one.arch.key != two.arch.key
    other = build_model(two.arch, 10)
    mine = fuse_state_dict(build_model(one.arch, 10).state_dict())
    theirs = fuse_state_dict(other.state_dict())
    first = next(k for k in mine if theirs[k].shape != mine[k].shape)  # same names here
    path = saved(other, tmp_path / "other.pt")
    result = invoke("train", str(spec_path), "--key", one.key, "--device", "cpu",
                    "--init", str(path))
    assert result.exit_code == 2
    lines = error_lines(result)
    assert len(lines) == 1, lines
    assert f"{first}: shape {tuple(theirs[first].shape)} in the weights" in lines[0]
    assert str(path) in lines[0]


def test_missing_and_extra_keys_are_named(spec_path: Path, tmp_path: Path) -> None:
    arch = candidates(spec_path)[0].arch
    state = build_model(arch, 10).state_dict()
    missing = {k: v for k, v in state.items() if k != "fc.bias"}
    torch.save(missing, tmp_path / "missing.pt")
    with pytest.raises(TrialError, match=r"fc\.bias: missing from the weights"):
        read_initial_weights(tmp_path / "missing.pt", arch, 10)
    torch.save({**state, "head.weight": torch.zeros(3)}, tmp_path / "extra.pt")
    with pytest.raises(TrialError, match=r"head\.weight: in the weights but not in the model"):
        read_initial_weights(tmp_path / "extra.pt", arch, 10)
    # The dataset's class count is part of the architecture: a 1000-class head does not fit.
    with pytest.raises(TrialError, match=r"fc\.weight: shape \(1000, "):
        read_initial_weights(saved(build_model(arch, 1000), tmp_path / "big.pt"), arch, 10)


def test_files_that_are_not_weights_are_one_line(spec_path: Path, tmp_path: Path) -> None:
    key = candidates(spec_path)[0].key
    garbage = tmp_path / "notes.txt"
    garbage.write_text("not a torch file")
    torch.save({"lr": 0.1}, tmp_path / "dict.pt")
    for path, words in ((garbage, "is not a readable torch file"),
                        (tmp_path / "dict.pt", "neither a state_dict nor an explorer checkpoint"),
                        (tmp_path / "absent.pt", "is not a readable torch file")):
        result = invoke("train", str(spec_path), "--key", key, "--init", str(path))
        assert result.exit_code == 2, result.output
        lines = error_lines(result)
        assert len(lines) == 1 and words in lines[0] and "--init" in lines[0], lines
