"""One driver per experiment: the store's lease, and two `explorer run`s on one store.

The store tests run on SQLite and on PostgreSQL (the `store_url` fixture). The
two-driver test runs the real CLI twice as subprocesses, each with a Ray of its
own, on both backends.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import tiny_spec

from explorer.lease import STALE_INTERVALS, LeaseLost, driver_lease, holder_gone, pid_alive
from explorer.search import Strategy, Suggestion
from explorer.store import Reader, Writer
from explorer.store.errors import LeaseHeld
from explorer.store.records import ExperimentRecord, Holder

HOST = socket.gethostname()


def experiment(store: Writer, name: str = "leased") -> ExperimentRecord:
    return store.create_or_get_experiment(name, "text", "hash", {"name": name},
                                          environment={})


def dead_pid() -> int:
    """The pid of a process that has just exited (so, on this host, surely not alive)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def holder(pid: int, *, host: str = HOST, heard: float = 0.0) -> Holder:
    at = datetime.now(UTC) - timedelta(seconds=heard)
    return Holder(token="t", host=host, pid=pid, started_at=at, heartbeat_at=at)


def test_the_rule_for_a_gone_holder() -> None:
    interval = 10.0
    assert pid_alive(os.getpid()) and not pid_alive(dead_pid())
    # This host: a dead pid is gone at once, a live one only once silent too long.
    assert holder_gone(holder(dead_pid()), interval, HOST)
    assert not holder_gone(holder(os.getpid()), interval, HOST)
    assert holder_gone(holder(os.getpid(), heard=STALE_INTERVALS * interval + 1), interval, HOST)
    # Elsewhere the pid says nothing: only the heartbeat counts.
    assert not holder_gone(holder(dead_pid(), host="elsewhere", heard=interval), interval, HOST)
    assert holder_gone(holder(1, host="elsewhere", heard=STALE_INTERVALS * interval + 1),
                       interval, HOST)


def test_a_live_holder_is_refused_naming_it(store_url: str) -> None:
    with Writer.open(store_url) as store:
        exp = experiment(store)
        assert store.take_lease(exp, "first", HOST, os.getpid(), gone=lambda h: False) is None
        with pytest.raises(LeaseHeld) as refused:
            store.take_lease(exp, "second", "other-host", 4321, gone=lambda h: False)
        message = str(refused.value)
        assert f"pid {os.getpid()} on {HOST} since " in message and "\n" not in message
        assert refused.value.holder.token == "first"
        # The same holder taking it again (a retry) is not a conflict.
        assert store.take_lease(exp, "first", HOST, os.getpid(), gone=lambda h: False) is None
        with Reader.open(store_url) as reader:
            assert reader.leases()[exp.id].pid == os.getpid()


def test_a_gone_holder_is_taken_over_and_loses_its_heartbeat(store_url: str) -> None:
    with Writer.open(store_url) as store:
        exp = experiment(store)
        store.take_lease(exp, "old", HOST, 1234, gone=lambda h: False)
        previous = store.take_lease(exp, "new", HOST, os.getpid(), gone=lambda h: h.pid == 1234)
        assert previous is not None and (previous.token, previous.pid) == ("old", 1234)
        assert not store.heartbeat(exp.id, "old")  # the old driver learns it lost it
        assert store.heartbeat(exp.id, "new")
        store.release_lease(exp.id, "old")  # a late release of the old one changes nothing
        with Reader.open(store_url) as reader:
            assert reader.leases()[exp.id].token == "new"
        store.release_lease(exp.id, "new")
        with Reader.open(store_url) as reader:
            assert exp.id not in reader.leases()
        # Free again: the next driver takes it without taking over from anyone.
        assert store.take_lease(exp, "next", HOST, os.getpid(), gone=lambda h: False) is None


def test_driver_lease_is_held_while_the_block_runs_and_given_back(store_url: str) -> None:
    notices: list[str] = []
    with Writer.open(store_url) as store:
        exp = experiment(store)
        store.take_lease(exp, "killed", HOST, dead_pid(), gone=lambda h: False)
        with driver_lease(store, exp, interval=0.05, notice=notices.append):
            held = Reader.open(store_url)
            first = held.leases()[exp.id]
            assert first.pid == os.getpid()
            time.sleep(0.3)  # a few heartbeats
            assert held.leases()[exp.id].heartbeat_at > first.heartbeat_at
            # A second driver in this process is refused too.
            with pytest.raises(LeaseHeld), driver_lease(store, exp, interval=0.05,
                                                        notice=notices.append):
                pass
            held.close()
        with Reader.open(store_url) as reader:
            assert exp.id not in reader.leases()
    assert len(notices) == 1 and notices[0].startswith(
        "took over experiment 'leased' v1 from pid "), notices


@pytest.mark.ray
@pytest.mark.slow
def test_two_drivers_on_one_experiment_train_every_trial_once(
        tmp_path: Path, ray_env: dict[str, str], store_url: str) -> None:
    spec = tiny_spec(tmp_path, name="shared", train={"epochs": 3})
    runs = tmp_path / "runs"
    command = [sys.executable, "-m", "explorer.cli", "run", str(spec), "--runs-dir", str(runs),
               "--store", store_url, "--num-cpus", "2"]
    first = subprocess.Popen(command, env=ray_env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:  # the first driver holds the lease once it has opened the experiment
            assert first.poll() is None, first.communicate()[0]
            assert time.monotonic() < deadline, "the first driver never took the lease"
            try:
                with Reader.open(store_url) as reader:
                    if reader.leases():
                        break
            except Exception:  # the database is still being created
                pass
            time.sleep(0.2)
        started = time.monotonic()
        second = subprocess.run(command, env=ray_env, capture_output=True, text=True,
                                timeout=60)
        refused_in = time.monotonic() - started
        output, _ = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    print(f"second driver refused in {refused_in:.1f} s")
    assert second.returncode == 2, second.stdout + second.stderr
    lines = [line for line in second.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in second.stderr
    assert f"is being run by pid {first.pid} on {HOST} since " in lines[0]
    assert refused_in < 20
    assert first.returncode == 0, output
    with Reader.open(store_url) as reader:
        trials = reader.trials_frame(["shared"]).drop_duplicates("trial_key")
        assert not reader.leases()  # given back at the end
    assert len(trials) == 4
    assert set(trials["status"]) == {"finished"}
    assert (trials["attempts"] == 1).all(), "a trial trained twice"


def test_status_shows_the_driver_and_needs_no_lease(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from explorer.cli import app

    runs = tmp_path / "runs"
    with Writer.open(runs) as store:
        exp = experiment(store, "watched")
        store.add_trials(exp.id, [("trial", "candidate", 0)])
        store.take_lease(exp, "driver", HOST, os.getpid(), gone=lambda h: False)
        shown = CliRunner().invoke(app, ["status", "--runs-dir", str(runs)])
        assert shown.exit_code == 0, shown.output
        assert f"pid {os.getpid()} on {HOST}" in " ".join(shown.stdout.split())
        store.release_lease(exp.id, "driver")
    shown = CliRunner().invoke(app, ["status", "--runs-dir", str(runs)])
    assert shown.exit_code == 0 and f"pid {os.getpid()}" not in shown.stdout


def status_row(runs: Path, name: str) -> dict[str, str]:
    """`explorer status`'s row for one experiment, by column name (CliRunner, in process)."""
    from typer.testing import CliRunner

    from explorer.cli import app

    shown = CliRunner().invoke(app, ["status", name, "--runs-dir", str(runs)],
                               env={"COLUMNS": "400"})
    assert shown.exit_code == 0, shown.output
    lines = [line for line in shown.stdout.splitlines() if "┃" in line or "│" in line]
    header, row = ([cell.strip() for cell in line.strip("┃│ ").split(sep)]
                   for line, sep in ((lines[0], "┃"), (lines[-1], "│")))
    return dict(zip(header, row, strict=True))


def test_status_shows_a_same_host_holder_whose_pid_is_gone_as_stale(tmp_path: Path) -> None:
    # As after a SIGKILL of the driver's process group: the lease still names the dead pid
    # and its trials are still 'running' in the store, which status leaves as they are.
    runs = tmp_path / "runs"
    gone = dead_pid()
    with Writer.open(runs) as store:
        exp = experiment(store, "orphaned")
        store.add_trials(exp.id, [("a", "candidate", 0), ("b", "candidate", 1)])
        store.mark_running(exp.id, "a", "cpu@node")
        store.take_lease(exp, "driver", HOST, gone, gone=lambda h: False)

    row = status_row(runs, "orphaned")

    assert row["driver"].startswith(f"pid {gone} on {HOST} since ")
    assert row["driver"].endswith("(gone: stale)")
    assert (row["running"], row["interrupted"], row["pending"]) == ("0", "1", "1")
    with Reader.open(runs) as reader:  # a display-time judgement: the rows stay as they were
        assert reader.leases()[exp.id].pid == gone
        trials = reader.trials_frame(["orphaned"]).set_index("trial_key")
        assert trials.loc["a", "status"] == "running"


def test_status_counts_running_trials_of_a_live_driver_as_running(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    with Writer.open(runs) as store:
        exp = experiment(store, "live")
        store.add_trials(exp.id, [("a", "candidate", 0)])
        store.mark_running(exp.id, "a", "cpu@node")
        store.take_lease(exp, "driver", HOST, os.getpid(), gone=lambda h: False)
        row = status_row(runs, "live")
        assert (row["running"], row["interrupted"]) == ("1", "0")
        assert not row["driver"].endswith("(gone: stale)")
        store.release_lease(exp.id, "driver")  # stopped (Ctrl-C, SIGTERM): none runs them
    row = status_row(runs, "live")
    assert (row["running"], row["interrupted"], row["driver"]) == ("0", "1", "–")


# --- a driver taken over while it still runs stops its sweep ------------------------------


def wait_until(condition: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return bool(condition())


def steal(store_url: str, exp: ExperimentRecord, pid: int = 4321) -> None:
    """Another driver, elsewhere, takes the lease over as if this one had gone silent."""
    with Writer.open(store_url) as thief:
        thief.take_lease(exp, "thief", "other-host", pid, gone=lambda h: True)


def test_a_driver_taken_over_learns_it_lost_the_lease_naming_the_new_holder(
        store_url: str) -> None:
    notices: list[str] = []
    with Writer.open(store_url) as store:
        exp = experiment(store)
        with driver_lease(store, exp, interval=0.05, notice=notices.append) as lease:
            time.sleep(0.2)
            assert not lease.lost.is_set()
            lease.check()  # held: nothing to say
            steal(store_url, exp)
            assert wait_until(lease.lost.is_set, 5.0), "the heartbeat never noticed"
            with pytest.raises(LeaseLost) as lost:
                lease.check()
        with Reader.open(store_url) as reader:  # leaving the block gave nothing back
            assert reader.leases()[exp.id].token == "thief"
    message = str(lost.value)
    assert message.startswith("experiment 'leased' v1 was taken over by pid 4321 on "
                              "other-host since ") and "\n" not in message
    assert "stopped its sweep" in message
    assert notices == ["another driver took this experiment's lease over (this one was silent "
                       "too long): stopping this run's sweep"]


class Counting(Strategy):
    """Hands out nothing, counting how often it was asked."""

    def __init__(self) -> None:
        self.asked = 0

    def ask(self) -> Suggestion | None:
        self.asked += 1
        return None

    @property
    def budget(self) -> int:
        return 5


def test_a_lost_lease_stops_the_sweep_from_asking_for_trials(tmp_path: Path) -> None:
    """The mechanism without Ray: the searcher Tune asks and the stopper Tune polls."""
    import threading

    from ray.tune.search import Searcher

    from explorer.sweep import Stopping, StrategySearcher, SweepOptions
    from explorer.sweep.tuner import _StopAll

    lost = threading.Event()
    stopping = Stopping(lost)
    strategy = Counting()
    searcher = StrategySearcher(strategy, SweepOptions(runs_dir=tmp_path, experiment="x"),
                                stopping)
    stopper = _StopAll(stopping)
    assert searcher.suggest("a") is Searcher.FINISHED and strategy.asked == 1  # empty: done
    assert not stopper.stop_all()

    lost.set()

    assert searcher.suggest("b") is Searcher.FINISHED and strategy.asked == 1  # not asked
    assert stopper.stop_all()
    # Tune pickles both into its experiment state: the copies hold no lock, and never stop.
    import pickle

    assert not pickle.loads(pickle.dumps(stopper)).stop_all()
