"""The fault suite for checkpoints and signals: each test injects a real fault into the real
`explorer` command (a subprocess) and checks the exit code, what stderr says (a line or
three, never a traceback) and the store afterwards (every trial finished once after a
rerun, one row per trial and epoch, no result from a damaged checkpoint).

- a checkpoint damaged in place, its size intact (4 KB zeroed inside its largest tensor),
  before `explorer train --checkpoint-dir` and before a sweep resumes it;
- SIGTERM to the driver's whole process group mid-sweep (what `timeout`, systemd and
  Slurm send);
- a full disk (a tmpfs, mounted here: root only) under the checkpoints, and under an
  `--output` file.

Run them with `pytest -m fault`; figures (how long each took to answer) are printed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import tiny_spec, wait_for_no_processes_with_env
from test_run_cli import Reader, checkpoint, error_lines, stop_mid_sweep, trials
from test_train_cli import first_key

from explorer.store import Reader as StoreReader

pytestmark = pytest.mark.fault

CLI = [sys.executable, "-m", "explorer.cli"]
DAMAGED = 4096  # bytes zeroed, as in the report that found it
SMALL = {"dataset": "digits", "resolution": 8, "train_subset": 256, "test_subset": 128}
STEPS_PER_EPOCH = 4  # 256 images, batches of 64
SWEEP_DATA = {"dataset": "digits", "resolution": 8, "train_subset": 512, "test_subset": 128}


def damage(path: Path) -> str:
    """Zero DAMAGED bytes in the middle of the largest tensor in the torch file at `path`,
    in place (the size unchanged); returns that zip member's name."""
    with zipfile.ZipFile(path) as archive:
        tensors = [i for i in archive.infolist() if "/data/" in i.filename]
        largest = max(tensors, key=lambda info: info.file_size)
    with path.open("r+b") as stream:
        # The member's bytes follow its local header: 30 bytes, then its name and extra field.
        stream.seek(largest.header_offset + 26)
        name_length, extra_length = (int.from_bytes(stream.read(2), "little") for _ in "ne")
        start = largest.header_offset + 30 + name_length + extra_length
        length = min(DAMAGED, largest.file_size)
        stream.seek(start + (largest.file_size - length) // 2)
        before = stream.read(length)
        assert before.count(0) < length, "that part of the tensor was zeros already"
        stream.seek(start + (largest.file_size - length) // 2)
        stream.write(bytes(length))
    return largest.filename


def torch_loads_it(path: Path) -> bool:
    """What happened before the fix: torch.load checks no CRC and loads the damaged file."""
    import torch

    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return False
    return True


def explorer(*args: str, env: dict[str, str] | None = None,
             timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def train_json(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def epoch_line(line: str) -> bool:
    """`explorer train`'s progress: one line per finished epoch on stderr."""
    return line.lstrip().startswith("epoch ")


# --- (a) a damaged checkpoint is never resumed ---------------------------------------------


def test_train_sets_a_damaged_checkpoint_aside_and_starts_over(tmp_path: Path) -> None:
    spec = tiny_spec(tmp_path, train={"epochs": 2}, data=SMALL)
    key = first_key(spec)
    train = ["train", str(spec), "--key", key, "--device", "cpu", "--json"]
    folder = tmp_path / "ckpt"
    # One epoch checkpointed, the second cut short: a run to resume.
    cut = explorer(*train, "--checkpoint-dir", str(folder), "--max-steps",
                   str(STEPS_PER_EPOCH + 1))
    assert cut.returncode == 0, cut.stderr
    assert checkpoint_epoch(folder / "last.pt") == 1
    clean = train_json(explorer(*train, "--checkpoint-dir", str(tmp_path / "clean")))
    member = damage(folder / "last.pt")
    damaged_bytes = (folder / "last.pt").read_bytes()
    assert torch_loads_it(folder / "last.pt")  # the damage torch.load does not see

    started = time.monotonic()
    done = explorer(*train, "--checkpoint-dir", str(folder))
    seconds = time.monotonic() - started

    result = train_json(done)
    said = [line for line in error_lines(done.stderr) if not epoch_line(line)]
    print(f"damaged checkpoint, explorer train: exit {done.returncode} in {seconds:.1f} s; "
          f"stderr besides epoch lines: {said}")
    assert said == [f"note: checkpoint {folder / 'last.pt'} is damaged (Bad CRC-32 for file "
                    f"'{member}'); set aside as {aside(folder).name}, the trial starts over "
                    "from epoch 0"], done.stderr
    assert "resumed from epoch" not in done.stderr and "Traceback" not in done.stderr
    # Trained from scratch: exactly the clean run's result (bitwise on CPU), both epochs run.
    assert (result["test_error"], result["train_loss"], result["epochs_completed"]) == \
        (clean["test_error"], clean["train_loss"], 2)
    assert aside(folder).read_bytes() == damaged_bytes  # kept for inspection, untouched
    assert checkpoint_epoch(folder / "last.pt") == 2  # the new one, whole


def checkpoint_epoch(path: Path) -> int:
    """The epoch of the whole checkpoint at `path`."""
    import torch

    from explorer.train import checkpoint_damage

    assert checkpoint_damage(path) is None
    return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])


def aside(folder: Path) -> Path:
    kept = sorted(folder.glob("last.pt.damaged-*"))
    assert len(kept) == 1, list(folder.iterdir())
    return kept[0]


# --- (a) and (b): a sweep stopped mid-way, damaged, resumed --------------------------------


def sweep(tmp_path: Path, name: str, epochs: int) -> tuple[Path, list[str]]:
    """A tiny digits spec of 4 trials and the `explorer run` command for it: its runs
    folder, its argv."""
    spec = tiny_spec(tmp_path, name=name, train={"epochs": epochs}, data=SWEEP_DATA)
    runs = tmp_path / "runs"
    return runs, [*CLI, "run", str(spec), "--runs-dir", str(runs), "--num-cpus", "2"]


def check_every_trial_finished_once(runs: Path, name: str, epochs: int) -> Any:
    """After the rerun: every trial finished, once; one row per trial and epoch."""
    after = trials(runs, name)
    assert set(after["status"]) == {"finished"} and after["error"].isna().all()
    with StoreReader.open(runs) as store:
        rows = store.epochs_frame(experiment_names=[name])
    assert not rows.duplicated(["trial_key", "epoch"]).any()
    for key, group in rows.groupby("trial_key"):
        assert sorted(group["epoch"]) == list(range(1, epochs + 1)), key
        assert after.loc[key, "epochs_completed"] == epochs
    assert set(rows["trial_key"]) == set(after.index)
    return after


@pytest.mark.ray
@pytest.mark.slow
def test_sigterm_to_the_process_group_mid_sweep_exits_143_and_the_rerun_resumes(
        tmp_path: Path, ray_env: dict[str, str]) -> None:
    # Before: exit 134 (Ray's C++ handler: six lines of "SIGTERM received" dump, the lease
    # left to the dead pid), or, with Ray's GCS and raylet killed by the same signal, 60 s
    # of waiting for the GCS and exit 1.
    epochs = 4
    runs, command = sweep(tmp_path, "sigterm", epochs)
    reader = Reader(str(runs), "sigterm")

    driver, stdout, stderr, seconds = stop_mid_sweep(command, ray_env, reader, epochs,
                                                     signal.SIGTERM)

    print(f"SIGTERM to the group mid-sweep: exit {driver.returncode} {seconds:.1f} s after "
          f"the signal; stderr: {error_lines(stderr)}")
    assert driver.returncode == 143, (stdout, stderr)
    assert error_lines(stderr) == [
        "terminated (SIGTERM): experiment 'sigterm' stopped; the same command again resumes "
        "it (running trials from their last checkpoint)"], stderr
    assert "finished, 0 failed this run" not in stdout
    assert not wait_for_no_processes_with_env("RAY_TMPDIR", ray_env["RAY_TMPDIR"]), \
        "the terminated sweep left Ray processes behind"
    # The lease was given back; the trials it left running show as interrupted.
    shown = explorer("status", "sigterm", "--runs-dir", str(runs), env=ray_env)
    assert shown.returncode == 0, shown.stderr
    assert f"pid {driver.pid}" not in shown.stdout
    seen = reader.poll()
    assert seen is not None
    before = seen[0].set_index("trial_key")
    left_running = sorted(before.index[before["status"] == "running"])
    assert left_running, "the signal stopped no running trial"
    assert (before["status"] != "failed").all(), "a trial stored as failed by the signal"
    saved = {key: checkpoint(runs, key) for key in left_running}

    again = subprocess.run(command, env=ray_env, capture_output=True, text=True, timeout=300,
                           check=False)
    reader.close()

    assert again.returncode == 0, again.stdout + again.stderr
    assert error_lines(again.stderr) == []
    assert "took over" not in again.stdout  # the lease was free
    after = check_every_trial_finished_once(runs, "sigterm", epochs)
    for key, ckpt in saved.items():
        assert after.loc[key, "attempts"] == 2, key
        final = checkpoint(runs, key)
        assert final is not None and final["epoch"] == epochs
        if ckpt is not None:  # resumed from its checkpoint: those epochs were not retrained
            assert after.loc[key, "resumed_from_epoch"] == ckpt["epoch"], key
            assert final["history"][: ckpt["epoch"]] == ckpt["history"], key


@pytest.mark.ray
@pytest.mark.slow
def test_a_sweep_never_resumes_a_damaged_checkpoint(
        tmp_path: Path, ray_env: dict[str, str]) -> None:
    # Before: the trial resumed from the damaged weights, "finished", exit 0: a wrong result
    # stored as finished. Eight short epochs, not four: the sweep is stopped with one to six
    # stored, and a trial must still be part-way when the stop lands (with four, a fast one
    # could write its last checkpoint first and leave none to damage).
    epochs = 8
    runs, command = sweep(tmp_path, "damaged", epochs)
    reader = Reader(str(runs), "damaged")
    driver, _, stderr, _ = stop_mid_sweep(command, ray_env, reader, epochs, signal.SIGTERM)
    assert driver.returncode == 143, stderr
    seen = reader.poll()
    assert seen is not None
    before, rows_before = seen
    before = before.set_index("trial_key")
    saved = {key: checkpoint(runs, key) for key in before.index[before["status"] == "running"]}
    resumable = sorted(key for key, ckpt in saved.items() if ckpt and ckpt["epoch"] < epochs)
    assert resumable, "no interrupted trial had a checkpoint to resume"
    victim = resumable[0]
    path = runs / "checkpoints" / victim / "last.pt"
    member = damage(path)
    assert torch_loads_it(path)

    started = time.monotonic()
    again = subprocess.run(command, env=ray_env, capture_output=True, text=True, timeout=300,
                           check=False)
    seconds = time.monotonic() - started
    reader.close()

    notes = [line for line in again.stdout.splitlines() if "is damaged" in line]
    print(f"damaged checkpoint, explorer run: exit {again.returncode} in {seconds:.1f} s; "
          f"stderr {error_lines(again.stderr)}; notes {notes}")
    assert again.returncode == 0, again.stdout + again.stderr
    assert error_lines(again.stderr) == []
    kept = aside(path.parent)
    assert notes == [f"note: trial {victim}: checkpoint {path.resolve()} is damaged (Bad "
                     f"CRC-32 for file '{member}'); set aside as {kept.name}, the trial starts "
                     "over from epoch 0"], again.stdout
    after = check_every_trial_finished_once(runs, "damaged", epochs)
    # Never resumed: trained again from epoch 0, so its early epochs are the ones it trained
    # before the damage (bitwise on CPU), and no epoch came from the damaged weights.
    assert after.loc[victim, "resumed_from_epoch"] in (0, None)
    final = checkpoint(runs, victim)
    assert final is not None and final["epoch"] == epochs
    ckpt = saved[victim]
    assert ckpt is not None
    stored = [{k: v for k, v in m.items() if k != "seconds" and "per_sec" not in k}
              for m in final["history"][: ckpt["epoch"]]]
    trained = [{k: v for k, v in m.items() if k != "seconds" and "per_sec" not in k}
               for m in ckpt["history"]]
    assert stored == trained
    for other in resumable[1:]:  # the intact ones resumed
        other_ckpt = saved[other]
        assert other_ckpt is not None
        assert after.loc[other, "resumed_from_epoch"] == other_ckpt["epoch"], other
    assert len(rows_before) <= sum(after["epochs_completed"])


# --- (c) a full disk -------------------------------------------------------------------------


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted at tmp_path/tmpfs for the test (needs root, or CAP_SYS_ADMIN);
    unmounted after. Skipped where mounting is not permitted, failed instead under CI."""
    where = tmp_path / "tmpfs"
    where.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)],
                              capture_output=True, text=True, timeout=30, check=False)
        problem = done.stderr.strip() if done.returncode else ""
    except FileNotFoundError:
        problem = "no mount command"
    if problem:
        reason = f"cannot mount a tmpfs for a full disk ({problem}): needs root"
        if os.environ.get("CI"):
            pytest.fail(f"fault test under CI: {reason}", pytrace=False)
        pytest.skip(reason)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=30,
                       check=False)


def fill(folder: Path) -> Path:
    """Fill the disk under `folder` to the last byte; returns the filler file."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 4096, 1):  # unbuffered: a write that does not fit says so
            with contextlib.suppress(OSError):
                while os.write(fd, bytes(size)):
                    pass
    finally:
        os.close(fd)
    return filler


@pytest.mark.ray
@pytest.mark.slow
def test_a_full_disk_under_the_checkpoints_stops_the_sweep_in_one_line(
        tmp_path: Path, ray_env: dict[str, str], tmpfs: Path) -> None:
    # Before: every remaining trial failed with torch's "unexpected pos 118912 vs 118808",
    # stored as failed, not a word of disk space.
    epochs = 2
    runs, command = sweep(tmp_path, "full", epochs)
    runs.mkdir()
    (runs / "checkpoints").symlink_to(tmpfs)  # the checkpoints, and only they, on the tmpfs
    filler = fill(tmpfs)

    started = time.monotonic()
    done = subprocess.run(command, env=ray_env, capture_output=True, text=True, timeout=300,
                          check=False)
    seconds = time.monotonic() - started

    lines = error_lines(done.stderr)
    print(f"full disk under the checkpoints: exit {done.returncode} after {seconds:.1f} s; "
          f"stderr: {lines}")
    assert done.returncode == 2, done.stdout + done.stderr
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"error: cannot write the checkpoint {tmpfs.resolve()}/") \
        or lines[0].startswith(f"error: cannot write the checkpoint {runs.resolve()}/"), lines
    assert "/last.pt after epoch 1: No space left on device; make room there" in lines[0]
    assert "unexpected pos" not in done.stderr
    assert not wait_for_no_processes_with_env("RAY_TMPDIR", ray_env["RAY_TMPDIR"])
    # Nothing wrong stored: no trial failed, no epoch whose checkpoint was not written.
    stopped = trials(runs, "full")
    assert not (stopped["status"] == "failed").any(), stopped["status"]
    assert stopped["error"].isna().all()
    with StoreReader.open(runs) as store:
        assert store.epochs_frame(experiment_names=["full"]).empty
    assert not list(tmpfs.glob("*/.last.pt.*")), "a scratch file left on the full disk"

    filler.unlink()  # room made: the same command finishes every trial
    again = subprocess.run(command, env=ray_env, capture_output=True, text=True, timeout=300,
                           check=False)
    assert again.returncode == 0, again.stdout + again.stderr
    assert error_lines(again.stderr) == []
    check_every_trial_finished_once(runs, "full", epochs)


def test_train_on_a_full_disk_names_the_checkpoint_in_one_line(
        tmp_path: Path, tmpfs: Path) -> None:
    spec = tiny_spec(tmp_path, train={"epochs": 1}, data=SMALL)
    key = first_key(spec)
    fill(tmpfs)

    done = explorer("train", str(spec), "--key", key, "--device", "cpu",
                    "--checkpoint-dir", str(tmpfs / "ckpt"))

    said = [line for line in error_lines(done.stderr) if not epoch_line(line)]
    assert done.returncode == 2, done.stderr
    assert said == [f"error: trial {key}: cannot write the checkpoint {tmpfs / 'ckpt'}/"
                    "last.pt after epoch 1: No space left on device; make room there and run "
                    "the same command again (it resumes from the last checkpoint written)"]
    assert list((tmpfs / "ckpt").iterdir()) == []  # no scratch file left behind


def test_an_output_file_on_a_full_disk_is_one_line_naming_it(
        tmp_path: Path, tmpfs: Path) -> None:
    spec = tiny_spec(tmp_path)
    fill(tmpfs)
    target = tmpfs / "candidates.csv"

    done = explorer("enumerate", str(spec), "-o", str(target))

    assert done.returncode == 2, done.stderr
    assert error_lines(done.stderr) == [f"error: cannot write {target}: No space left on device"]
    assert sorted(p.name for p in tmpfs.iterdir()) == ["filler"]


def test_checkpoint_damage_names_the_member_and_passes_whole_files(tmp_path: Path) -> None:
    import torch

    from explorer.train import checkpoint_damage

    path = tmp_path / "last.pt"
    torch.save({"w": torch.arange(4096, dtype=torch.float32), "b": torch.ones(3)}, path)
    assert checkpoint_damage(path) is None
    whole = path.read_bytes()
    member = damage(path)
    assert checkpoint_damage(path) == f"Bad CRC-32 for file '{member}'"
    path.write_bytes(whole[: len(whole) // 2])  # cut short
    assert checkpoint_damage(path) is not None
    path.write_bytes(os.urandom(len(whole)))  # random bytes, the size intact
    assert checkpoint_damage(path) is not None
