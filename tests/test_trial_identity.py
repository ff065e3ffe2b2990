"""A trial's key says what the data is, not where it lives (issue 19, item 7).

`data.root` and `data.download` left the key (version 2), so two machines or users whose
data sit in different folders share their trials; an image folder is keyed by the list of
its files (relative paths and sizes), so two different folders are never the same trial.
Keys stored before (version 1, with the root) stay valid: a stored experiment keeps them,
and a new one reuses what they finished (tests/data/store_v1.db).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from explorer.experiment import plan_run
from explorer.plan import plan_trials
from explorer.space import enumerate_spec
from explorer.spec import Spec, parse_spec
from explorer.store import Writer

FIXTURE = Path(__file__).resolve().parent / "data" / "store_v1.db"
EXPLORER = str(Path(sys.executable).with_name("explorer"))

SPEC = """\
name: identity
model: {template: cifar, depths: [1, 1, 1], stem_width: 8, widths: [8, 16, 32],
        cardinality: 1, bottleneck_width: 8}
spaces:
  one: {axes: {cardinality: [1, 2]}}
data: {dataset: DATASET, num_classes: 2, root: ROOT, download: false, resolution: 8}
train: {epochs: 1, batch_size: 4, precision: fp32, channels_last: false, seeds: [0]}
"""


def spec_for(root: Path | str, dataset: str = "imagefolder", *overrides: str) -> Spec:
    text = SPEC.replace("DATASET", dataset).replace("ROOT", str(root))
    return parse_spec(text, "identity.yaml", overrides)


def keys(spec: Spec) -> list[str]:
    return [p.trial_key for p in plan_trials(spec, enumerate_spec(spec).candidates)]


def write_folder(root: Path) -> Path:
    """A tiny image folder: two classes, PNGs of a few sizes, train/ and val/."""
    from PIL import Image

    for split, n in (("train", 4), ("val", 2)):
        for c, colour in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.new("RGB", (8 + i, 8), colour).save(root / split / c / f"{i}.png")
    return root


def test_where_the_data_lives_leaves_the_key_what_it_is_stays(tmp_path: Path) -> None:
    base = keys(spec_for(tmp_path / "a", "digits"))
    assert keys(spec_for(tmp_path / "b", "digits")) == base
    assert keys(spec_for(tmp_path / "b", "digits", "data.download=true")) == base
    for change in ("data.resolution=16", "data.train_subset=100", "data.test_subset=50",
                   "data.dataset=synthetic", "data.num_classes=3"):
        other = keys(spec_for(tmp_path / "a", "digits", change))
        assert not set(other) & set(base), change


def test_an_image_folder_is_keyed_by_its_file_list(tmp_path: Path) -> None:
    a = write_folder(tmp_path / "a")
    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(a, copy)
    assert keys(spec_for(copy)) == keys(spec_for(a))

    one_more = tmp_path / "one_more"
    shutil.copytree(a, one_more)
    shutil.copy(a / "val" / "cat" / "0.png", one_more / "val" / "cat" / "9.png")
    renamed = tmp_path / "renamed"
    shutil.copytree(a, renamed)
    (renamed / "train" / "dog" / "3.png").rename(renamed / "train" / "dog" / "x.png")
    resized = tmp_path / "resized"
    shutil.copytree(a, resized)
    with (resized / "train" / "cat" / "0.png").open("ab") as grown:
        grown.write(b"\0")
    seen = {tuple(keys(spec_for(a)))}
    for other in (one_more, renamed, resized):
        other_keys = tuple(keys(spec_for(other)))
        assert other_keys not in seen, other.name
        seen.add(other_keys)


def test_store_v1_keys_stay_valid_and_are_reused(tmp_path: Path) -> None:
    """The first release's store: each experiment, planned again, keeps the keys it stored
    (no second row for a stored trial, its finished one skipped); a new experiment of the
    same spec reuses those finished trials through their version-1 keys."""
    db = tmp_path / "store.db"
    shutil.copy(FIXTURE, db)
    with sqlite3.connect(FIXTURE) as conn:
        stored = conn.execute("SELECT id, name, spec_text FROM experiments").fetchall()
        before = {eid: set(conn.execute(
            "SELECT trial_key, candidate_key, seed, status FROM trials WHERE experiment_id = ?",
            (eid,)).fetchall()) for eid, _, _ in stored}
    with Writer.open(db) as store:
        for eid, name, text in stored:
            spec = parse_spec(text, "stored.yaml")
            planned = plan_run(store, eid, spec)
            finished = {k for k, _, _, status in before[eid] if status == "finished"}
            assert planned.skipped == len(finished) == 1
            rows = store.trial_keys(eid)
            assert len(rows) == planned.planned  # one row per candidate and seed
            for key, candidate, seed, _ in before[eid]:
                assert rows[(candidate, seed)] == key  # the stored key, not a new one

            copy = store.create_or_get_experiment(f"{name}-again-{eid}", text, spec.hash,
                                                  spec.record())
            again = plan_run(store, copy.id, spec)
            assert again.reused == 1
            (v1_key,) = finished
            source = store.find_finished(v1_key)
            plan = next(p for p in plan_trials(spec, enumerate_spec(spec).candidates)
                        if v1_key in p.aliases)
            row = store.get_trial(copy.id, plan.trial_key)  # the new experiment's own key
            assert source is not None and source.trial_key == v1_key
            assert row is not None and row.status == "finished"
            assert row.reused_from_trial_id is not None and row.final == source.final


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EXPLORER, "run", *args], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "COLUMNS": "300"})


@pytest.mark.slow
@pytest.mark.ray
def test_the_same_trial_on_two_data_roots_has_one_key_and_is_reused(tmp_path: Path) -> None:
    """Through `explorer run` with real Ray: one tiny trial trained on folder A; a copy of
    A elsewhere finds it finished (the same experiment) or reuses it (another one); a
    folder with one more file is other data, so its trial is new."""
    a = write_folder(tmp_path / "a")
    b = tmp_path / "machine-b" / "images"
    shutil.copytree(a, b)
    c = tmp_path / "c"
    shutil.copytree(a, c)
    shutil.copy(a / "train" / "dog" / "0.png", c / "train" / "dog" / "7.png")
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.replace("DATASET", "imagefolder").replace(
        "cardinality: [1, 2]", "cardinality: [1]"), encoding="utf-8")
    runs = str(tmp_path / "runs")

    first = _run(str(spec), "--runs-dir", runs, "--num-cpus", "2", "--set", f"data.root={a}")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "identity v1: 1 trials planned, 0 already finished, 0 reused" in first.stdout

    same = _run(str(spec), "--runs-dir", runs, "--set", f"data.root={b}")
    assert same.returncode == 0, same.stdout + same.stderr
    assert "identity v1: 1 trials planned, 1 already finished, 0 reused from other " \
           "experiments, 0 to run" in same.stdout

    other = _run(str(spec), "--runs-dir", runs, "--set", f"data.root={b}",
                 "--set", "name=identity-b")
    assert other.returncode == 0, other.stdout + other.stderr
    assert "identity-b v1: 1 trials planned, 0 already finished, 1 reused from other " \
           "experiments, 0 to run" in other.stdout

    changed = _run(str(spec), "--runs-dir", runs, "--dry-run", "--set", f"data.root={c}",
                   "--set", "name=identity-c")
    assert changed.returncode == 0, changed.stdout + changed.stderr
    assert "identity-c v1: 1 trials planned, 0 already finished, 0 reused from other " \
           "experiments, 1 to run" in changed.stdout
