"""`--set KEY.PATH=VALUE` on validate / enumerate / train / run, `--version`, shell completion."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import TINY_SPEC, tiny_spec
from typer.testing import CliRunner

from explorer.cli import app
from explorer.spec import SpecError, load_spec, parse_spec
from explorer.store import Reader

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "spaces" / "quickstart.yaml"


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False, prog_name="explorer")


def problem_lines(result: Any) -> list[str]:
    """The problem lines of a refused spec, without the closing count."""
    return [line for line in result.stderr.splitlines() if "nothing was run" not in line]


def test_overrides_equal_the_same_values_written_in_the_file(tmp_path: Path) -> None:
    written = {**TINY_SPEC, "train": {**TINY_SPEC["train"], "epochs": 3, "seeds": [4, 5]},
               "search": {"strategy": "random", "n_trials": 2}}
    by_hand = load_spec(tiny_spec(tmp_path, "by_hand.yaml", **written))
    base = tiny_spec(tmp_path)
    overridden = load_spec(base, ["train.epochs=3", "train.seeds=[4, 5]",
                                  "search.strategy=random", "search.n_trials=2"])
    assert overridden == by_hand
    assert overridden.hash == by_hand.hash != load_spec(base).hash
    assert overridden.train.seeds == (4, 5)  # a YAML flow list, not the text "[4, 5]"


def test_an_override_creates_a_section_the_file_leaves_out(tmp_path: Path) -> None:
    spec = {k: v for k, v in TINY_SPEC.items() if k != "resources"}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    assert load_spec(path, ["resources.max_concurrent=3"]).resources.max_concurrent == 3


def test_a_wrong_key_exits_2_with_did_you_mean() -> None:
    result = invoke("validate", str(QUICKSTART), "--set", "train.epoch=2")
    assert result.exit_code == 2
    assert problem_lines(result) == [
        "--set train.epoch: train.epoch: unknown key; did you mean 'epochs'? (got 2)"]


@pytest.mark.parametrize(("item", "expected"), [
    ("train.epochs=abc", "--set train.epochs: train.epochs: should be a valid integer"),
    ("train.epochs=0", "--set train.epochs: train.epochs: should be greater than 0"),
    ("tran.epochs=2", "--set tran.epochs: tran: unknown key; did you mean 'train'?"),
    ("name.x=1", "--set name.x: name: is not a mapping"),
    ("train.seeds.7=1", "--set train.seeds.7: train.seeds: is a list of 2"),
    ("train.seeds=[0,", "--set train.seeds: train.seeds: the value is not YAML"),
    ("train.epochs", "--set train.epochs: train.epochs: expected KEY.PATH=VALUE"),
])
def test_a_bad_override_is_one_line_at_its_set(item: str, expected: str) -> None:
    result = invoke("validate", str(QUICKSTART), "--set", item)
    assert result.exit_code == 2
    lines = problem_lines(result)
    assert len(lines) == 1 and lines[0].startswith(expected), lines
    assert "Traceback" not in result.output


def test_problems_of_the_file_and_of_overrides_are_reported_together(tmp_path: Path) -> None:
    path = tiny_spec(tmp_path, train={"lr": -1.0})
    with pytest.raises(SpecError) as caught:
        load_spec(path, ["train.epochs=none?", "train.batchsize=8"])
    shown = [str(p) for p in caught.value.problems]
    assert any(s.startswith(f"{path}:") and "train.lr" in s for s in shown), shown
    assert any(s.startswith("--set train.epochs:") for s in shown), shown
    assert any(s.startswith("--set train.batchsize:") and "batch_size" in s for s in shown)


def test_enumerate_and_train_take_overrides(tmp_path: Path) -> None:
    spec = tiny_spec(tmp_path)
    listed = invoke("enumerate", str(spec), "--set", "spaces.grid.axes.cardinality=[1, 2, 4]")
    assert listed.exit_code == 0, listed.output
    assert "3 candidates, 0 dropped" in listed.stdout
    refused = invoke("train", str(spec), "--key", "0", "--set", "train.epochs=-1")
    assert refused.exit_code == 2
    assert problem_lines(refused)[0].startswith("--set train.epochs: train.epochs:")


def test_run_records_the_overridden_spec_text_and_hash(tmp_path: Path) -> None:
    spec_path = tiny_spec(tmp_path)
    runs = tmp_path / "runs"
    result = invoke("run", str(spec_path), "--runs-dir", str(runs), "--dry-run",
                    "--set", "train.epochs=3", "--set", "name=tiny-3")
    assert result.exit_code == 0, result.output
    with Reader.open(runs) as store:
        row = store.experiments().set_index("experiment").loc["tiny-3"]
    # The stored text is a spec on its own: parsed again, it is the overridden spec.
    expected = load_spec(spec_path, ["train.epochs=3", "name=tiny-3"])
    assert parse_spec(row["spec_text"], "stored") == expected
    assert row["spec_hash"] == expected.hash != load_spec(spec_path).hash
    assert "--set train.epochs=3" in row["spec_text"]  # and it says where it came from


def test_version_is_the_installed_distributions() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"explorer {importlib.metadata.version('explorer')}"


def test_shell_completion_prints_a_script() -> None:
    result = invoke("--show-completion", "bash")
    assert result.exit_code == 0
    assert "_EXPLORER_COMPLETE=complete_bash" in result.stdout
    assert "complete -o default -F _explorer_completion explorer" in result.stdout


def _alias_bomb(levels: int) -> str:
    """A YAML flow list of `levels` nested anchors, each ten aliases of the one before:
    a few hundred bytes that expand to 10**levels values."""
    items = ['&l0 ["x","x","x","x","x","x","x","x","x","x"]']
    items += [f"&l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, levels)]
    return f"[{', '.join(items)}]"


def test_an_alias_bomb_in_an_override_is_refused_as_in_a_file(tmp_path: Path) -> None:
    bomb = _alias_bomb(7)  # 10 million values; unbounded, seconds and 150 MB
    in_file = tmp_path / "bomb.yaml"
    in_file.write_text(QUICKSTART.read_text(encoding="utf-8") + f"\ndescription: {bomb}\n",
                       encoding="utf-8")
    result = invoke("validate", str(QUICKSTART), "--set", f"description={bomb}")
    assert result.exit_code == 2
    assert problem_lines(result) == [
        "--set description: description: the spec expands to more than 10,000 values (YAML "
        "aliases); write it out or use fewer aliases"]
    with pytest.raises(SpecError, match="expands to more than 10,000 values"):
        load_spec(in_file)


def test_20000_seeds_are_refused_in_an_override_as_in_a_file(tmp_path: Path) -> None:
    seeds = list(range(20_000))
    in_file = tiny_spec(tmp_path, train={"seeds": seeds})
    with pytest.raises(SpecError, match="holds more than 10,000 values"):
        load_spec(in_file)
    result = invoke("validate", str(tiny_spec(tmp_path, "base.yaml")), "--set",
                    f"train.seeds={seeds}")
    assert result.exit_code == 2
    assert problem_lines(result) == [
        "--set train.seeds: train.seeds: the spec holds more than 10,000 values; a spec is a "
        "few kB"]


def test_the_file_and_its_overrides_share_one_bound(tmp_path: Path) -> None:
    """6,000 values in the file and 6,000 in --set: each within the bound, together not."""
    path = tiny_spec(tmp_path, description="", train={"seeds": list(range(6_000))})
    load_spec(path)
    load_spec(tiny_spec(tmp_path, "small.yaml"), [f"train.seeds={list(range(6_000))}"])
    with pytest.raises(SpecError, match="holds more than 10,000 values"):
        load_spec(path, [f"description={['x'] * 6_000}"])


def test_a_duplicate_key_in_an_override_is_refused() -> None:
    result = invoke("validate", str(QUICKSTART), "--set", "train={epochs: 1, epochs: 2}")
    assert result.exit_code == 2
    assert problem_lines(result) == [
        "--set train: train.epochs: duplicate key; each key may appear once"]
