"""`explorer run` end to end: exit codes, a failing trial, a driver killed with SIGKILL in
mid-sweep and resumed, and a reader polling the store while a sweep writes it.

Tests marked `ray` either use the session's local Ray in this process (CliRunner)
or start `explorer run` as a subprocess with a Ray of its own (`ray_env`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import tiny_spec, wait_for_no_processes_with_env
from sqlalchemy.exc import OperationalError
from typer.testing import CliRunner

# Ray is imported here, not first inside CliRunner: its log handlers would keep the
# sys.stderr that CliRunner swaps in and closes.
import explorer.sweep  # noqa: F401
from explorer.cli import app
from explorer.plan import plan_trials
from explorer.search import listed_candidates
from explorer.spec import load_spec
from explorer.store import Reader as StoreReader
from explorer.store import StoreError


def invoke(*args: str) -> Any:
    """`explorer ARGS` in this process (a sweep uses the session's Ray, if started)."""
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def trial_keys(spec_path: Path) -> list[str]:
    spec = load_spec(spec_path)
    plans = plan_trials(spec, listed_candidates(spec) or [])
    return sorted(plan.trial_key for plan in plans)


def trials(runs: Path, experiment: str) -> Any:
    with StoreReader.open(runs) as store:
        return store.trials_frame([experiment]).drop_duplicates("trial_key") \
            .set_index("trial_key").sort_index()


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


# --- exit code 2: one clear line ------------------------------------------------------


def test_a_bad_spec_exits_2_and_runs_nothing(tmp_path: Path) -> None:
    spec = tiny_spec(tmp_path, train={"epochs": 0})
    runs = tmp_path / "runs"

    result = invoke("run", str(spec), "--runs-dir", str(runs))

    assert result.exit_code == 2, result.output
    lines = error_lines(result.stderr)
    assert len(lines) == 2, lines  # the problem, then the verdict
    assert f"{spec}:" in lines[0] and "train.epochs" in lines[0]
    assert lines[1] == f"{spec}: 1 problem; nothing was run"
    assert not runs.exists()


@pytest.mark.ray
def test_gpus_per_trial_without_gpus_exits_2(ray_local: None, tmp_path: Path) -> None:
    import ray

    if ray.cluster_resources().get("GPU", 0) > 0:
        pytest.skip("this machine has GPUs")
    spec = tiny_spec(tmp_path, resources={"gpus_per_trial": 0.5})

    result = invoke("run", str(spec), "--runs-dir", str(tmp_path / "runs"))

    assert result.exit_code == 2, result.output
    lines = error_lines(result.stderr)
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: resources.gpus_per_trial is 0.5 but the Ray cluster "
                               "has 0 GPUs")
    assert "Traceback" not in result.output


@pytest.mark.ray
def test_an_unreachable_ray_address_from_the_environment_exits_2_fast(
        tmp_path: Path, ray_env: dict[str, str]) -> None:
    # RAY_ADDRESS without --address is the cluster to join (ray.init alone would try to
    # join it as a machine of its own, with --num-cpus, and fail in Ray's words).
    spec = tiny_spec(tmp_path)
    address = "127.0.0.1:1"
    started = time.monotonic()

    done = subprocess.run(
        [sys.executable, "-m", "explorer.cli", "run", str(spec), "--runs-dir",
         str(tmp_path / "runs")],
        env={**ray_env, "RAY_ADDRESS": address}, capture_output=True, text=True, timeout=120,
        check=False)

    seconds = time.monotonic() - started
    print(f"RAY_ADDRESS={address}: exit {done.returncode} after {seconds:.1f} s")
    assert done.returncode == 2, done.stderr
    assert f"joining the Ray cluster at {address} (RAY_ADDRESS)" in done.stdout.splitlines()
    lines = error_lines(done.stderr)
    assert len(lines) == 1, lines
    assert lines[0] == (f"error: cannot reach Ray at {address}: Connection refused (start one "
                        "with `ray start --head`, or leave --address out)")
    assert seconds < 60  # imports and the digits on a busy 2-core machine; Ray waits minutes


def test_ray_client_mode_is_refused_before_anything_trains(tmp_path: Path) -> None:
    # Through Ray Client the Tune driver, and the callback that writes the store, would run
    # on the cluster: nothing would be recorded.
    spec = tiny_spec(tmp_path)
    address = "ray://127.0.0.1:1"

    result = invoke("run", str(spec), "--runs-dir", str(tmp_path / "runs"), "--address", address)

    assert result.exit_code == 2, result.output
    lines = error_lines(result.stderr)
    assert lines == [f"error: --address {address} is Ray Client mode, where the sweep's results "
                     "would not reach the store: run explorer on a node of the cluster with "
                     "--address auto (or --address HOST:PORT of the head)"]
    assert "Traceback" not in result.output


def test_a_gcs_address_nobody_listens_on_is_refused_before_ray_init() -> None:
    # ray.init(address="127.0.0.1:1") waits for minutes for a GCS that never answers.
    from explorer.errors import SetupError
    from explorer.sweep.cluster import _check_reachable

    started = time.monotonic()
    with pytest.raises(SetupError, match=r"^cannot reach Ray at 127\.0\.0\.1:1: "):
        _check_reachable("127.0.0.1:1")
    assert time.monotonic() - started < 10
    _check_reachable("auto")  # left to Ray's own lookup


@pytest.mark.ray
@pytest.mark.slow
def test_a_changed_spec_exits_2_naming_the_keys_and_new_version_runs(
        ray_local: None, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    first = tiny_spec(tmp_path, "v1.yaml", name="changing")
    changed = tiny_spec(tmp_path, "v2.yaml", name="changing", train={"lr": 0.05},
                        data={"resolution": 10})
    assert invoke("run", str(first), "--runs-dir", str(runs), "--dry-run").exit_code == 0

    result = invoke("run", str(changed), "--runs-dir", str(runs))

    assert result.exit_code == 2, result.output
    lines = error_lines(result.stderr)
    assert len(lines) == 1, lines
    assert "'changing' already exists in the store with a different spec" in lines[0]
    assert "data.resolution, train.lr" in lines[0] and "--new-version" in lines[0]

    again = invoke("run", str(changed), "--runs-dir", str(runs), "--new-version")

    assert again.exit_code == 0, again.output
    assert "changing v2: 4 finished, 0 failed this run" in again.stdout
    with StoreReader.open(runs) as store:
        versions = store.experiments().set_index("version")
    assert list(versions.index) == [1, 2]
    assert (versions.loc[1, "pending"], versions.loc[2, "finished"]) == (4, 4)


# --- exit code 3: a failing trial -------------------------------------------------------


@pytest.mark.ray
@pytest.mark.slow
def test_a_failing_trial_is_stored_with_its_error_and_exits_3(
        ray_local: None, tmp_path: Path) -> None:
    spec = tiny_spec(tmp_path, name="one-fails")
    runs = tmp_path / "runs"
    poisoned = trial_keys(spec)[0]

    result = invoke("run", str(spec), "--runs-dir", str(runs), "--fail-trial", poisoned[:6])

    assert result.exit_code == 3, result.output
    failed_lines = [line for line in error_lines(result.stderr) if line.startswith("failed")]
    assert len(failed_lines) == 1, result.stderr
    assert failed_lines[0].startswith(f"failed trial {poisoned}: non-finite training loss")
    assert "one-fails v1: 3 finished, 1 failed this run" in result.stdout
    stored = trials(runs, "one-fails")
    assert stored.loc[poisoned, "status"] == "failed"
    assert stored.loc[poisoned, "error"].startswith("non-finite training loss (nan) by step ")
    # It never completed an epoch: no error figures, never a stand-in value.
    assert stored.loc[poisoned, "epochs_completed"] == 0
    assert stored.loc[poisoned, ["test_error", "test_top5_error", "train_loss"]].isna().all()
    # What ran is recorded all the same (CPU: fp32, as the spec's precision resolves there).
    assert stored.loc[poisoned, "precision"] == "fp32"
    assert stored.loc[poisoned, "torch_version"].startswith("2.")
    assert stored.loc[poisoned, "node"] and stored.loc[poisoned, "attempts"] == 1
    others = stored.drop(index=poisoned)
    assert set(others["status"]) == {"finished"} and others["error"].isna().all()


# --- SIGKILL of the driver, resume, and a reader throughout -----------------------------


class Reader:
    """Polls the store read-only, as the dashboard does; keeps every error it meets."""

    # Opening before the writer has made the store, or while it makes it, is no error.
    NOT_YET = ("no results database at", "no schema_version table")

    def __init__(self, store_url: str, experiment: str) -> None:
        self.store_url = store_url
        self.experiment = experiment
        self.store: StoreReader | None = None
        self.errors: list[str] = []
        self.polls = 0
        self.finished_counts: list[int] = []

    def poll(self) -> tuple[Any, Any] | None:
        try:
            if self.store is None:
                self.store = StoreReader.open(self.store_url)
            trials = self.store.trials_frame([self.experiment]).drop_duplicates("trial_key")
            epochs = self.store.epochs_frame(experiment_names=[self.experiment])
        except (OperationalError, StoreError) as problem:
            if any(words in str(problem) for words in self.NOT_YET):
                self.store = None
                return None
            self.errors.append(str(problem).splitlines()[0])
            return None
        self.polls += 1
        self.finished_counts.append(int((trials["status"] == "finished").sum()))
        return trials, epochs

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


def part_way(trials: Any, epochs_stored: Any, epochs: int) -> set[str]:
    """Running trials with at least one epoch stored and at least two to go (the checkpoint,
    written just before an epoch is reported, may be one ahead)."""
    running = set(trials.loc[trials["status"] == "running", "trial_key"])
    stored = epochs_stored.groupby("trial_key").size()
    return {key for key in running if 1 <= stored.get(key, 0) <= epochs - 2}


def checkpoint(runs: Path, key: str) -> dict[str, Any] | None:
    import torch

    path = runs / "checkpoints" / key / "last.pt"
    if not path.is_file():
        return None
    payload: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    return payload


@pytest.mark.ray
@pytest.mark.slow
def test_sigkill_of_the_driver_then_the_same_command_resumes_every_trial_once(
        tmp_path: Path, ray_env: dict[str, str], store_url: str) -> None:
    """On SQLite (the runs directory's own store) and on PostgreSQL, with `--store URL`."""
    epochs = 6
    spec = tiny_spec(tmp_path, name="killed", train={"epochs": epochs})
    runs = tmp_path / "runs"
    command = [sys.executable, "-m", "explorer.cli", "run", str(spec), "--runs-dir", str(runs),
               "--store", store_url, "--num-cpus", "2"]
    folder = ray_env["RAY_TMPDIR"]
    reader = Reader(store_url, "killed")

    # 1. Run until one trial has finished and another is part-way (at least one epoch
    # stored, at least two to go: its checkpoint, written just before an epoch is
    # reported, may be one ahead), then SIGKILL the whole process group.
    log1 = (tmp_path / "run1.log").open("w")
    driver = subprocess.Popen(command, env=ray_env, start_new_session=True, stdout=log1,
                              stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    try:
        while True:
            assert driver.poll() is None, \
                f"the sweep ended before it could be killed:\n{(tmp_path / 'run1.log').read_text()}"
            assert time.monotonic() < deadline, "no trial finished in time"
            seen = reader.poll()
            if seen is not None and (seen[0]["status"] == "finished").any() \
                    and part_way(*seen, epochs):
                break
            time.sleep(0.1)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
        log1.close()
    assert driver.returncode == -signal.SIGKILL
    # Ray's workers run in process groups of their own: they must go when their raylet does.
    leaked = wait_for_no_processes_with_env("RAY_TMPDIR", folder)
    for pid in leaked:
        os.kill(pid, signal.SIGKILL)
    assert not leaked, f"processes of the killed sweep's Ray still alive: {leaked}"

    seen = reader.poll()
    assert seen is not None
    before, rows_before = (frame.copy() for frame in seen)
    before = before.set_index("trial_key")
    finished = sorted(before.index[before["status"] == "finished"])
    interrupted = sorted(before.index[before["status"] == "running"])
    saved = {key: checkpoint(runs, key) for key in interrupted}
    resumable = {key: ckpt for key, ckpt in saved.items()
                 if ckpt and 1 <= ckpt["epoch"] < epochs}
    assert resumable, "an interrupted trial had checkpointed some epochs, not all"
    print(f"killed with {len(finished)} finished, interrupted at checkpointed epochs "
          f"{ {k: (c['epoch'] if c else 0) for k, c in saved.items()} }")

    # 2. The same command again, polled by a reader every 0.2 s until it ends.
    reader.finished_counts.clear()
    polls_before = reader.polls
    log2 = (tmp_path / "run2.log").open("w")
    started = time.monotonic()
    driver = subprocess.Popen(command, env=ray_env, start_new_session=True, stdout=log2,
                              stderr=subprocess.STDOUT)
    try:
        while driver.poll() is None:
            assert time.monotonic() - started < 240, "the resumed sweep did not end"
            reader.poll()
            time.sleep(0.2)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
        log2.close()
    output = (tmp_path / "run2.log").read_text()
    print(f"resumed run: {time.monotonic() - started:.1f} s, reader polled "
          f"{reader.polls - polls_before} times, finished counts seen "
          f"{sorted(set(reader.finished_counts))}")
    assert driver.returncode == 0, output
    assert f"{len(finished)} already finished" in output
    # The killed driver's lease is taken over at once (its pid is dead), said in one line.
    assert output.count("took over experiment 'killed' v1 from pid ") == 1, output
    assert not wait_for_no_processes_with_env("RAY_TMPDIR", folder), \
        "the resumed sweep left Ray processes behind"

    seen = reader.poll()
    reader.close()
    assert seen is not None
    after, rows = seen
    after = after.set_index("trial_key")
    # The reader never met a locked database and saw the sweep progress.
    assert reader.errors == []
    assert reader.polls - polls_before >= 5
    assert min(reader.finished_counts) == len(finished) and max(reader.finished_counts) == 4

    # Every trial finished, exactly once; the ones finished before the kill were left alone.
    assert set(after["status"]) == {"finished"} and after["error"].isna().all()
    for key in finished:
        for column in ("attempts", "started_at", "finished_at", "test_error", "seconds"):
            assert after.loc[key, column] == before.loc[key, column], (key, column)
    for key in interrupted:
        assert after.loc[key, "attempts"] == 2, key
    # One row per epoch, as many as the trial completed.
    for key, group in rows.groupby("trial_key"):
        assert list(group["epoch"]) == list(range(1, epochs + 1)), key
        assert after.loc[key, "epochs_completed"] == epochs
    # Interrupted trials resumed after their checkpointed epoch: those epochs were not
    # trained again (their rows are the checkpoint's, to the bit: timings included), and
    # rows stored before the kill were not replaced.
    for key, ckpt in resumable.items():
        mine = rows[rows["trial_key"] == key].set_index("epoch")
        for past in ckpt["history"]:
            assert mine.loc[past["epoch"], "seconds"] == past["seconds"], (key, past["epoch"])
        old = rows_before[rows_before["trial_key"] == key].set_index("epoch")
        assert mine.loc[old.index, "seconds"].equals(old["seconds"])
        final = checkpoint(runs, key)
        assert final is not None and final["epoch"] == epochs
        assert final["history"][: ckpt["epoch"]] == ckpt["history"]


# --- Ctrl-C (SIGINT) of the driver: exit 130, the lease given back, the rerun resumes -----


def stop_mid_sweep(command: list[str], env: dict[str, str], reader: Reader, epochs: int,
                   signum: signal.Signals) -> tuple[subprocess.Popen[str], str, str, float]:
    """Start `explorer run`, send `signum` to its whole process group once a trial is
    part-way (an epoch stored, more to go); its exit, stdout, stderr and seconds to exit."""
    driver = subprocess.Popen(command, env=env, start_new_session=True, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    try:
        while True:
            assert driver.poll() is None, f"the sweep ended first: {driver.communicate()}"
            assert time.monotonic() < deadline, "no trial got going in time"
            seen = reader.poll()
            if seen is not None and part_way(*seen, epochs):
                break
            time.sleep(0.1)
        os.killpg(driver.pid, signum)
        sent = time.monotonic()
        stdout, stderr = driver.communicate(timeout=120)
        return driver, stdout, stderr, time.monotonic() - sent
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()


@pytest.mark.ray
@pytest.mark.slow
def test_ctrl_c_of_the_driver_exits_130_gives_the_lease_back_and_the_rerun_resumes(
        tmp_path: Path, ray_env: dict[str, str]) -> None:
    # Ray Tune's own SIGINT handler ended the sweep as if it had finished: exit 0.
    epochs = 4
    spec = tiny_spec(tmp_path, name="ctrl-c", train={"epochs": epochs})
    runs = tmp_path / "runs"
    command = [sys.executable, "-m", "explorer.cli", "run", str(spec), "--runs-dir", str(runs),
               "--num-cpus", "2"]
    reader = Reader(str(runs), "ctrl-c")
    # SIGINT to the group: what Ctrl-C in a terminal sends.
    driver, stdout, stderr, seconds = stop_mid_sweep(command, ray_env, reader, epochs,
                                                     signal.SIGINT)
    print(f"exited {seconds:.1f} s after SIGINT")

    assert driver.returncode == 130, (stdout, stderr)
    lines = error_lines(stderr)
    assert lines == ["interrupted: experiment 'ctrl-c' stopped; the same command again resumes "
                     "it (running trials from their last checkpoint)"], stderr
    assert "finished, 0 failed this run" not in stdout
    assert not wait_for_no_processes_with_env("RAY_TMPDIR", ray_env["RAY_TMPDIR"]), \
        "the interrupted sweep left Ray processes behind"
    status = invoke("status", "--runs-dir", str(runs))
    assert status.exit_code == 0, status.output
    assert f"pid {driver.pid}" not in status.stdout and "ctrl-c" in status.stdout
    seen = reader.poll()
    assert seen is not None
    before = seen[0].set_index("trial_key")
    left_running = sorted(before.index[before["status"] == "running"])
    assert left_running, "the interrupt stopped no running trial"
    saved = {key: checkpoint(runs, key) for key in left_running}

    again = subprocess.run(command, env=ray_env, capture_output=True, text=True, timeout=300)
    reader.close()

    assert again.returncode == 0, again.stdout + again.stderr
    assert "took over" not in again.stdout + again.stderr  # the lease was free
    after = trials(runs, "ctrl-c")
    assert set(after["status"]) == {"finished"}
    for key, ckpt in saved.items():
        assert after.loc[key, "attempts"] == 2, key
        final = checkpoint(runs, key)
        assert final is not None and final["epoch"] == epochs
        if ckpt is not None:  # resumed from its checkpoint: those epochs were not retrained
            assert final["history"][: ckpt["epoch"]] == ckpt["history"], key
