"""Real Ray Tune sweeps of tiny digits trials, recorded in the store.

In-process tests share the session's local Ray (`ray_local`); the two-node
cluster runs in a subprocess with a Ray of its own.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import tiny_spec, wait_for_no_processes_with_env
from rich.console import Console

from explorer.console import SweepDisplay
from explorer.experiment import RunRequest, RunSummary, run_experiment
from explorer.spec import load_spec
from explorer.store import Reader

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def run(spec_path: Path, runs: Path, **request: Any) -> RunSummary:
    spec = load_spec(spec_path)
    return run_experiment(
        RunRequest(spec=spec, spec_text=spec_path.read_text(encoding="utf-8"), runs_dir=runs,
                   **request),
        SweepDisplay(Console(file=io.StringIO(), width=200)),
    )


def trials(runs_or_url: Path | str, experiment: str) -> Any:
    with Reader.open(runs_or_url) as store:
        return store.trials_frame([experiment]).drop_duplicates("trial_key") \
            .set_index("trial_key").sort_index()


def epochs(runs_or_url: Path | str, experiment: str) -> Any:
    with Reader.open(runs_or_url) as store:
        return store.epochs_frame(experiment_names=[experiment])


def export_csv(runs: Path, experiment: str, path: Path) -> Any:
    """`explorer export EXPERIMENT -o PATH` through the real CLI, read back."""
    import pandas as pd
    from typer.testing import CliRunner

    from explorer.cli import app

    done = CliRunner().invoke(app, ["export", experiment, "-o", str(path), "--runs-dir",
                                    str(runs)])
    assert done.exit_code == 0, done.output
    return pd.read_csv(path)


def test_grid_sweep_records_every_trial_and_a_rerun_trains_nothing(
        ray_local: None, tmp_path: Path, store_url: str) -> None:
    """On SQLite (the runs directory's own store) and on PostgreSQL (`--store URL`)."""
    spec = tiny_spec(tmp_path, name="grid4")
    runs = tmp_path / "runs"

    first = run(spec, runs, store_url=store_url)

    assert (first.planned, first.skipped, first.finished, first.failed) == (4, 0, 4, ())
    done = trials(store_url, "grid4")
    assert len(done) == 4
    assert set(done["status"]) == {"finished"}
    assert done["error"].isna().all()
    assert (done["attempts"] == 1).all()
    assert (done["epochs_completed"] == 2).all()
    assert done["device"].str.fullmatch(r"cpu@[0-9a-f]{8}").all()
    assert done["test_error"].between(0, 100).all()
    per_epoch = epochs(store_url, "grid4")
    assert {key: list(group) for key, group in per_epoch.groupby("trial_key")["epoch"]} == \
        {key: [1, 2] for key in done.index}
    # The trial's seconds are its whole training time: every epoch's, not the last one's.
    total = per_epoch.groupby("trial_key")["seconds"].sum().sort_index()
    assert done["seconds"].to_numpy() == pytest.approx(total.to_numpy())
    tune_runs = sorted((runs / "ray").iterdir())

    started = time.monotonic()
    again = run(spec, runs, store_url=store_url)
    seconds = time.monotonic() - started

    print(f"rerun of a finished 4-trial sweep: {seconds:.2f} s")
    assert (again.planned, again.skipped, again.finished, again.failed) == (4, 4, 4, ())
    after = trials(store_url, "grid4")
    for column in ("status", "attempts", "started_at", "finished_at", "device", "test_error"):
        assert after[column].equals(done[column]), column
    assert epochs(store_url, "grid4").equals(per_epoch)
    assert sorted((runs / "ray").iterdir()) == tune_runs  # Tune was not even started


def test_asha_stops_trials_early_as_stopped_and_a_full_run_retrains_them(
        ray_local: None, tmp_path: Path) -> None:
    # One trial at a time, in grid order, on CPU (bitwise reproducible): ASHA decides the
    # same way every run, and with six trials of three epochs it stops some early.
    axes = {"grid": {"axes": {"cardinality": [1, 2, 4]}}}
    asha = tiny_spec(tmp_path, "asha.yaml", name="asha", spaces=axes, train={"epochs": 3},
                     search={"early_stopping": "asha"}, resources={"max_concurrent": 1})
    runs = tmp_path / "runs"

    summary = run(asha, runs)

    done = trials(runs, "asha")
    assert len(done) == 6 and summary.failed == () and done["error"].isna().all()
    assert set(done["status"]) == {"finished", "stopped"}, done["status"]
    stopped = done[done["status"] == "stopped"]
    finished = done[done["status"] == "finished"]
    assert (stopped["epochs_completed"] < 3).all() and (stopped["epochs_completed"] >= 1).all()
    assert (finished["epochs_completed"] == 3).all()
    assert summary.finished == len(finished)
    per_epoch = epochs(runs, "asha")
    assert per_epoch.groupby("trial_key").size().sort_index().eq(
        done["epochs_completed"]).all()
    total = per_epoch.groupby("trial_key")["seconds"].sum().sort_index()
    assert done["seconds"].to_numpy() == pytest.approx(total.to_numpy())
    print(f"asha: epochs per trial {sorted(int(n) for n in done['epochs_completed'])}")
    exported = export_csv(runs, "asha", tmp_path / "asha.csv").set_index("trial_key")
    assert (exported.loc[stopped.index, "status"] == "stopped").all()
    assert (exported.loc[stopped.index, "epochs_completed"]
            == stopped["epochs_completed"]).all()

    # The same candidates without early stopping: the finished trials are reused, the
    # stopped ones trained to the end (resuming their checkpoints), never reused.
    full = tiny_spec(tmp_path, "full.yaml", name="full", spaces=axes, train={"epochs": 3},
                     resources={"max_concurrent": 1})
    again = run(full, runs)

    assert (again.reused, again.finished, again.failed) == (len(finished), 6, ())
    after = trials(runs, "full")
    assert set(after["status"]) == {"finished"} and (after["epochs_completed"] == 3).all()
    assert after.loc[stopped.index, "reused_from_trial_id"].isna().all()
    assert after.loc[stopped.index, "attempts"].eq(1).all()
    assert after.loc[finished.index, "reused_from_trial_id"].notna().all()
    # Resumed where each stopped (its checkpoint may be an epoch ahead of its last report).
    resumed = after.loc[stopped.index, "resumed_from_epoch"]
    assert (resumed >= stopped["epochs_completed"]).all()
    assert (resumed <= stopped["epochs_completed"] + 1).all()


def test_optuna_never_starts_a_trial_outside_the_flops_bound(
        ray_local: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import explorer.experiment as experiment

    bound = 300_000  # bottleneck width up to 13 (C=1) or 9 (C=2) of 1..64: most are over
    spec = tiny_spec(
        tmp_path, name="optuna-flops",
        spaces={"grid": {"axes": {"cardinality": [1, 2],
                                  "bottleneck_width": {"low": 1, "high": 64, "int": True}}}},
        constraints={"flops": [None, bound]},
        search={"strategy": "optuna", "n_trials": 5, "seed": 3},
        train={"seeds": [0]},
    )
    runs = tmp_path / "runs"
    searchers: list[Any] = []
    make = experiment.OptunaStrategy

    def spy(*args: Any, **kwargs: Any) -> Any:
        searchers.append(make(*args, **kwargs))
        return searchers[-1]

    monkeypatch.setattr(experiment, "OptunaStrategy", spy)

    summary = run(spec, runs)

    assert summary.failed == ()
    done = trials(runs, "optuna-flops")
    assert len(done) == 5
    assert set(done["status"]) == {"finished"}
    assert done["flops"].notna().all(), "every trial's candidate is in the store"
    assert (done["flops"] <= bound).all()
    assert done.index.is_unique and done["key"].is_unique  # no network trained twice
    searcher = searchers[0]
    print(f"optuna: {searcher.infeasible} infeasible suggestions skipped; trained flops "
          f"{sorted(int(f) for f in done['flops'])} (bound {bound})")
    assert searcher.infeasible > 0

    # The study is Optuna's own, in the runs directory, named after the experiment.
    import optuna

    storage = f"sqlite:///{runs / 'optuna.db'}"
    study = optuna.load_study(study_name="optuna-flops", storage=storage)
    trained = [t for t in study.trials if "trial_key" in t.user_attrs]
    assert sorted(t.user_attrs["trial_key"] for t in trained) == sorted(done.index)
    assert [t.values[0] for t in sorted(trained, key=lambda t: t.user_attrs["trial_key"])] == \
        pytest.approx(list(done["test_error"]))
    # A rerun has nothing left to train and tells the study nothing twice.
    again = run(spec, runs)
    assert again.finished == 5 and again.failed == ()
    assert len(optuna.load_study(study_name="optuna-flops", storage=storage).trials) == \
        len(study.trials)


CLUSTER_SCRIPT = textwrap.dedent("""
    import io, json, sys
    from pathlib import Path
    from ray.cluster_utils import Cluster
    from rich.console import Console
    from explorer.console import SweepDisplay
    from explorer.experiment import RunRequest, run_experiment
    from explorer.spec import load_spec

    spec_path, runs = Path(sys.argv[1]), Path(sys.argv[2])
    # Not connected: the runner joins it through the address, as `--address` would.
    cluster = Cluster(initialize_head=True, connect=False, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        nodes = [cluster.head_node.node_id] + [n.node_id for n in cluster.worker_nodes]
        summary = run_experiment(
            RunRequest(spec=load_spec(spec_path), spec_text=spec_path.read_text(),
                       runs_dir=runs, address=cluster.address),
            SweepDisplay(Console(file=io.StringIO())))
        print(json.dumps({"nodes": nodes, "finished": summary.finished,
                          "failed": summary.failed}))
    finally:
        cluster.shutdown()
""")


def test_a_two_node_cluster_runs_trials_on_both_nodes(
        tmp_path: Path, ray_env: dict[str, str]) -> None:
    spec = tiny_spec(tmp_path, name="two-nodes")
    runs = tmp_path / "runs"
    script = tmp_path / "cluster.py"
    script.write_text(CLUSTER_SCRIPT)

    done = subprocess.run([sys.executable, str(script), str(spec), str(runs)], env=ray_env,
                          capture_output=True, text=True, timeout=300, check=False)

    assert done.returncode == 0, done.stderr[-3000:]
    assert not wait_for_no_processes_with_env("RAY_TMPDIR", ray_env["RAY_TMPDIR"])
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert (report["finished"], report["failed"]) == (4, [])
    placed = trials(runs, "two-nodes")
    assert set(placed["status"]) == {"finished"}
    print(f"two nodes {[node[:8] for node in report['nodes']]}: trials on "
          f"{sorted(placed['device'])}")
    used = {device.split("@")[1] for device in placed["device"]}
    assert used <= {node[:8] for node in report["nodes"]}
    assert len(used) == 2, f"trials ran on {sorted(placed['device'])}"


def test_a_driver_whose_lease_is_taken_over_stops_its_sweep_naming_the_new_holder(
        ray_local: None, tmp_path: Path) -> None:
    import json
    import threading

    from explorer.lease import LeaseLost
    from explorer.store import Writer, environment_info

    spec_path = tiny_spec(tmp_path, name="stolen", train={"epochs": 6})
    spec = load_spec(spec_path)
    runs = tmp_path / "runs"
    stolen_at: list[float] = []

    def steal_once_a_trial_runs() -> None:  # another driver, as if this one had gone silent
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with Reader.open(runs) as reader:
                    frame = reader.trials_frame(["stolen"])
            except Exception:  # the store is still being created
                frame = None
            if frame is not None and (frame["status"] == "running").any():
                with Writer.open(runs) as thief:
                    record = thief.create_or_get_experiment(
                        spec.name, spec_path.read_text(encoding="utf-8"), spec.hash,
                        json.dumps(spec.model_dump(mode="json")), environment=environment_info())
                    thief.take_lease(record, "thief", "other-host", 4321, gone=lambda h: True)
                stolen_at.append(time.monotonic())
                return
            time.sleep(0.1)

    thief = threading.Thread(target=steal_once_a_trial_runs, daemon=True)
    thief.start()
    with pytest.raises(LeaseLost) as lost:
        run(spec_path, runs, heartbeat_seconds=0.5)
    stopped_in = time.monotonic() - stolen_at[0]
    thief.join()

    print(f"the sweep ended {stopped_in:.1f} s after its lease was taken over")
    assert str(lost.value).startswith("experiment 'stolen' v1 was taken over by pid 4321 on "
                                      "other-host since ")
    done = trials(runs, "stolen")
    assert (done["status"] == "finished").sum() < 4, "the sweep went on to the end"
    with Reader.open(runs) as reader:
        assert reader.leases()[int(done["experiment_id"].iloc[0])].token == "thief"


def test_the_driver_loads_the_dataset_once(
        ray_local: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The availability check's load is the one the sweep shares with its trials (it was
    decoded for the check, thrown away, and loaded again for the sweep)."""
    import explorer.data.load as data  # where check_available and load_data look it up

    loads: list[str] = []
    load = data.load_dataset

    def counted(cfg: Any, **kwargs: Any) -> Any:
        loads.append(cfg.dataset)
        return load(cfg, **kwargs)

    monkeypatch.setattr(data, "load_dataset", counted)
    spec = tiny_spec(tmp_path, name="loads-once", train={"seeds": [0]})

    summary = run(spec, tmp_path / "runs")

    assert summary.failed == () and summary.finished == 2
    assert loads == ["digits"]  # in this process, the driver; trials read the shared copy
