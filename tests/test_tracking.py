"""Experiment tracking: TensorBoard event files per trial (`--tensorboard` on `explorer
train` and `explorer run`) and `explorer export NAME --mlflow URI`, each read back with
the tool's own reader (tensorboard's EventAccumulator, MLflow's client) and checked
against the store, and a missing extra as one line, exit 2.

Skipped without the `tracking` extra (tensorboard, mlflow-skinny), except under CI.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import tiny_spec
from fixtures_store import make_fixture_store
from typer.testing import CliRunner

from explorer.cli import app
from explorer.metrics import EpochMetrics
from explorer.plan import plan_trials
from explorer.search import listed_candidates
from explorer.space import enumerate_spec
from explorer.spec import load_spec
from explorer.store import Reader, Writer
from explorer.tracking import SCALARS, TensorBoardLog

EXPERIMENT = "cifar10-width"


def _missing_extra() -> str | None:
    for module in ("tensorboard", "mlflow"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is missing (pip install 'explorer[tracking]')"
    return None


@pytest.fixture(autouse=True)
def tracking_extra() -> None:
    missing = _missing_extra()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"tracking tests under CI: {missing}")
        pytest.skip(missing)


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the event files in `folder`, read by tensorboard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)]
            for tag in events.Tags()["scalars"]}


def metrics(epoch: int, error: float) -> EpochMetrics:
    return EpochMetrics(epoch=epoch, train_loss=1.0 / (epoch + 1), train_error=error + 1.25,
                        test_error=error, test_top5_error=error / 7.0, lr=0.1 * 0.5 ** epoch,
                        seconds=2.5, train_images_per_sec=1234.5, peak_memory_bytes=None,
                        steps=10 * (epoch + 1))


# --- TensorBoard -----------------------------------------------------------------------


def test_event_files_per_trial_read_back(tmp_path: Path) -> None:
    reported = {"trial-a": [metrics(1, 40.123), metrics(2, 30.5)],
                "trial-b": [metrics(1, 55.0)]}
    with TensorBoardLog(tmp_path / "tb") as log:
        for key, epochs in reported.items():
            for m in epochs:
                log.epoch(key, m.to_dict())
        log.trial_ended("trial-b")
    assert sorted(p.name for p in (tmp_path / "tb").iterdir()) == ["trial-a", "trial-b"]
    for key, epochs in reported.items():
        read = scalars(tmp_path / "tb" / key)
        # peak_memory_bytes is None (CPU): not logged; everything else is, per epoch.
        assert set(read) == set(SCALARS) - {"peak_memory_bytes"}
        for name, values in read.items():
            expected = [(m.epoch, getattr(m, name)) for m in epochs]
            assert [s for s, _ in values] == [s for s, _ in expected]
            # Event files hold float32.
            assert [v for _, v in values] == pytest.approx([v for _, v in expected], rel=1e-6)


def test_a_trial_that_trains_again_shows_each_epoch_once(tmp_path: Path) -> None:
    with TensorBoardLog(tmp_path) as first:
        for epoch in (1, 2, 3):
            first.epoch("t", metrics(epoch, 50.0 - epoch).to_dict())
    with TensorBoardLog(tmp_path) as resumed:  # resumed after epoch 1, different numbers
        for epoch in (2, 3, 4):
            resumed.epoch("t", metrics(epoch, 20.0 - epoch).to_dict())
    shown = scalars(tmp_path / "t")["test_error"]
    assert [step for step, _ in shown] == [1, 2, 3, 4]
    # approx of flat values: pytest 9.2 refuses nested sequences
    assert [value for _, value in shown] == pytest.approx([49.0, 18.0, 17.0, 16.0])


def test_train_tensorboard_logs_every_epoch_under_the_trial_key(tmp_path: Path) -> None:
    spec_path = tiny_spec(tmp_path, train={"epochs": 2})
    spec = load_spec(spec_path)
    candidate = enumerate_spec(spec).candidates[0]
    runs = tmp_path / "runs"
    result = invoke("train", str(spec_path), "--key", candidate.key, "--device", "cpu",
                    "--seed", "1", "--json", "--tensorboard", "--runs-dir", str(runs))
    assert result.exit_code == 0, result.output
    final = json.loads(result.stdout.strip().splitlines()[-1])
    trial_key = next(p.trial_key for p in plan_trials(spec, [candidate]) if p.seed == 1)
    folder = runs / "tiny" / "tensorboard" / trial_key
    assert folder.is_dir(), list((runs / "tiny" / "tensorboard").iterdir())
    read = scalars(folder)
    assert [step for step, _ in read["test_error"]] == [1, 2]
    assert read["test_error"][-1][1] == pytest.approx(final["test_error"], rel=1e-6)
    assert read["train_loss"][-1][1] == pytest.approx(final["train_loss"], rel=1e-6)
    assert read["lr"][0][1] > 0


def test_a_missing_tensorboard_is_one_line_exit_2(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    spec_path = tiny_spec(tmp_path)
    key = enumerate_spec(load_spec(spec_path)).candidates[0].key
    for args in (["train", str(spec_path), "--key", key, "--tensorboard"],
                 ["run", str(spec_path), "--dry-run", "--tensorboard",
                  "--runs-dir", str(tmp_path / "runs")]):
        result = invoke(*args)
        assert result.exit_code == 2, result.output
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "pip install 'explorer[tracking]'" in lines[0], lines
        assert "tensorboard" in lines[0]


@pytest.mark.ray
@pytest.mark.slow
def test_run_tensorboard_writes_each_trials_epochs(ray_local: None, tmp_path: Path) -> None:
    import explorer.sweep  # noqa: F401  (Ray before CliRunner swaps stderr: see test_run_cli)

    spec_path = tiny_spec(tmp_path, name="tb-run", train={"seeds": [0]})
    runs = tmp_path / "runs"
    result = invoke("run", str(spec_path), "--runs-dir", str(runs), "--tensorboard")
    assert result.exit_code == 0, result.output
    with Reader.open(runs) as store:
        epochs = store.epochs_frame(experiment_names=["tb-run"])
    spec = load_spec(spec_path)
    keys = {p.trial_key for p in plan_trials(spec, listed_candidates(spec) or [])}
    root = runs / "tb-run" / "tensorboard"
    assert {p.name for p in root.iterdir()} == keys
    for key, stored in epochs.groupby("trial_key"):
        read = scalars(root / str(key))
        assert [s for s, _ in read["test_error"]] == stored["epoch"].tolist()
        assert [v for _, v in read["test_error"]] == pytest.approx(
            stored["test_error"].tolist(), rel=1e-6)


# --- MLflow ----------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> str:
    path = tmp_path / "explorer.db"
    make_fixture_store(path, seeds=2, failed=1, running=1)
    return f"sqlite:///{path}"


def mlflow_runs(uri: str) -> dict[str, Any]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(EXPERIMENT)
    assert found is not None
    runs = client.search_runs([found.experiment_id], max_results=1000)
    keys = [run.data.tags["trial_key"] for run in runs]
    assert len(keys) == len(set(keys)), "a trial exported twice"
    return {run.data.tags["trial_key"]: run for run in runs}


def history(uri: str, run_id: str, metric: str) -> list[tuple[int, float]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, metric))


def export(store: str, uri: str) -> Any:
    return invoke("export", EXPERIMENT, "--store", store, "--mlflow", uri)


def test_mlflow_export_reads_back_with_mlflows_client(store: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)  # the CLI opts in itself
    uri = (tmp_path / "mlruns").as_uri()
    result = export(store, uri)
    assert result.exit_code == 0, result.output
    with Reader.open(store) as reader:
        trials = reader.trials_frame([EXPERIMENT])
        epochs = reader.epochs_frame(experiment_names=[EXPERIMENT])
    per_trial = trials.drop_duplicates("trial_id").set_index("trial_key")
    assert f"{len(per_trial)} runs added, 0 updated" in result.stdout
    runs = mlflow_runs(uri)
    assert set(runs) == set(per_trial.index)
    statuses = {"finished": "FINISHED", "failed": "FAILED", "running": "RUNNING"}
    for key, run in runs.items():
        trial = per_trial.loc[key]
        tags, params = run.data.tags, run.data.params
        assert tags["status"] == trial["status"] and tags["key"] == trial["key"]
        spaces = sorted(set(trials.loc[trials["trial_key"] == key, "space"].astype(str)))
        assert tags["space"] == ", ".join(spaces)
        assert run.info.status == statuses[trial["status"]]
        assert params["seed"] == str(trial["seed"])
        assert params["cardinality"] == str(trial["cardinality"])
        assert params["flops"] == str(trial["flops"])
        assert params["train.epochs"] and params["data.dataset"] == "cifar10"
        stored = epochs[epochs["trial_key"] == key]
        for metric in ("test_error", "train_loss", "lr"):
            assert history(uri, run.info.run_id, metric) == list(
                zip(stored["epoch"].astype(int), stored[metric].astype(float), strict=True))


def test_mlflow_export_again_updates_the_same_runs(store: str, tmp_path: Path) -> None:
    uri = (tmp_path / "mlruns").as_uri()
    assert export(store, uri).exit_code == 0
    before = mlflow_runs(uri)
    with Writer.open(store) as writer:
        trials = writer.trials_frame([EXPERIMENT])
        running = trials[trials["status"] == "running"].iloc[0]
        key = str(running["trial_key"])
        last = int(writer.epochs_frame(experiment_names=[EXPERIMENT])
                   .query("trial_key == @key")["epoch"].max())
        new_epoch = {"epoch": last + 1, "train_loss": 0.5, "train_error": 9.0,
                     "test_error": 7.25, "test_top5_error": 1.0, "lr": 0.01, "seconds": 1.0,
                     "train_images_per_sec": 100.0, "peak_memory_bytes": None}
        writer.record_epoch(int(running["experiment_id"]), key, new_epoch)
        writer.finish_trial(int(running["experiment_id"]), key, "finished",
                            {"test_error": 7.25})
    again = export(store, uri)
    assert again.exit_code == 0, again.output
    assert f"0 runs added, {len(before)} updated" in again.stdout
    after = mlflow_runs(uri)
    assert {k: r.info.run_id for k, r in after.items()} == {
        k: r.info.run_id for k, r in before.items()}
    assert after[key].data.tags["status"] == "finished"
    assert after[key].info.status == "FINISHED"
    steps = history(uri, after[key].info.run_id, "test_error")
    assert steps[-1] == (last + 1, 7.25)
    assert len(steps) == len({s for s, _ in steps})  # no epoch logged twice
    other = next(k for k in after if k != key)
    assert len(history(uri, after[other].info.run_id, "test_error")) == len(
        history(uri, before[other].info.run_id, "test_error"))


def test_mlflow_missing_is_one_line_exit_2(store: str, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "mlflow" or m.startswith("mlflow.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "mlflow", None)
    result = export(store, (tmp_path / "mlruns").as_uri())
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "pip install 'explorer[tracking]'" in lines[0], lines
    assert not (tmp_path / "mlruns").exists()


def test_export_needs_a_file_or_mlflow(store: str) -> None:
    result = invoke("export", EXPERIMENT, "--store", store)
    assert result.exit_code == 2
    assert "--output FILE or --mlflow URI" in result.stderr
    unknown = invoke("export", "nothing-here", "--store", store, "--mlflow", "file:///tmp/x")
    assert unknown.exit_code == 2 and "no experiment 'nothing-here'" in unknown.stderr


def test_mlflow_params_match_the_stored_recipe(store: str, tmp_path: Path) -> None:
    uri = (tmp_path / "mlruns").as_uri()
    assert export(store, uri).exit_code == 0
    with Reader.open(store) as reader:
        versions = reader.experiments()
    text = versions[(versions["experiment"] == EXPERIMENT) & versions["latest"]]["spec_text"]
    written = yaml.safe_load(str(text.iloc[0]))["train"]
    params = next(iter(mlflow_runs(uri).values())).data.params
    assert {f"train.{name}" for name in written} - {"train.seeds"} <= set(params)
    for name, value in written.items():
        if name != "seeds":
            assert yaml.safe_load(params[f"train.{name}"]) == value, name
