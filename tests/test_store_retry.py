"""A store that fails for a while: writes retried within a bound (explorer/store/retry.py)
and the sweep's events held, in order, by the StoreSink (explorer/experiment.py).

The fault is real: another connection holds SQLite's write lock (BEGIN EXCLUSIVE), so
the writer's statements fail with "database is locked" until it lets go. The writer's
busy wait is shortened so that this takes a fraction of a second, not 30 s.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from explorer.experiment import StoreSink, Unobserved
from explorer.store import Reader, Writer, engine
from explorer.store.errors import StoreError
from explorer.store.retry import (
    RetryPolicy,
    StoreUnavailable,
    call_with_retry,
    disk_full,
    read_only,
    transient,
)

EPOCH = {"epoch": 1, "train_loss": 1.0, "test_error": 50.0}


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Writer]:
    monkeypatch.setattr(engine, "BUSY_TIMEOUT_MS", 50)
    with Writer.open(tmp_path / "explorer.db") as writer:
        experiment = writer.create_or_get_experiment("e", "x", "h", {})
        writer.add_trials(experiment.id, [("t1", "c1", 0), ("t2", "c2", 0)])
        yield writer


@contextmanager
def locked(path: str) -> Iterator[threading.Event]:
    """Another process's write lock on the database until the yielded event is set."""
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN EXCLUSIVE")
    release = threading.Event()

    def hold() -> None:
        release.wait()
        other.execute("COMMIT")
        other.close()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        yield release
    finally:
        release.set()
        holder.join()


class Notices(Unobserved):
    def __init__(self) -> None:
        self.lines: list[str] = []

    def notice(self, message: str) -> None:
        self.lines.append(message)


def test_a_locked_database_is_transient_and_nothing_else_here_is(store: Writer) -> None:
    with locked(store.where), pytest.raises(OperationalError) as caught:
        store.mark_running(1, "t1", "cpu")
    assert transient(caught.value)
    assert not disk_full(caught.value, store.where) and not read_only(caught.value)
    with pytest.raises(StoreError) as missing:  # a bug, not an outage
        store.mark_running(1, "no-such-trial", "cpu")
    assert not transient(missing.value)


def test_a_write_is_retried_until_the_lock_goes(store: Writer) -> None:
    heard: list[str] = []
    with locked(store.where) as release:
        threading.Timer(0.5, release.set).start()
        started = time.monotonic()
        call_with_retry(lambda: store.mark_running(1, "t1", "cpu"), RetryPolicy(10.0),
                        store.where, "t1's start", on_outage=heard.append)
    assert time.monotonic() - started >= 0.4
    assert store.get_trial(1, "t1").status == "running"  # type: ignore[union-attr]
    assert len(heard) == 1 and store.where in heard[0] and "database is locked" in heard[0]


def test_past_the_bound_the_store_is_unavailable_in_one_line(store: Writer) -> None:
    with locked(store.where), pytest.raises(StoreUnavailable) as caught:
        call_with_retry(lambda: store.mark_running(1, "t1", "cpu"), RetryPolicy(0.3),
                        store.where, "t1's start")
    message = str(caught.value)
    assert "\n" not in message and store.where in message
    assert "has not answered for 0 s" in message and "the same command resumes" in message


def test_the_sink_holds_events_through_an_outage_and_writes_them_in_order(
        store: Writer) -> None:
    observer = Notices()
    sink = StoreSink(store, 1, observer, retry=RetryPolicy(30.0, first_wait=0.05))
    with locked(store.where) as release:
        sink.trial_started("t1", "node", "cpu")
        started = time.monotonic()
        sink.epoch("t1", EPOCH)
        sink.trial_ended("t1", "finished", {"test_error": 50.0}, None, [EPOCH])
        assert time.monotonic() - started < 1.0  # Tune's loop is never held up
        with Reader.open(store.where) as reader:  # WAL: a reader reads past the lock
            assert reader.get_trial(1, "t1").status == "pending"  # type: ignore[union-attr]
        assert len(observer.lines) == 1 and "not answering" in observer.lines[0]
        release.set()
    time.sleep(0.1)
    sink.tick()
    sink.close()
    trial = store.get_trial(1, "t1")
    assert trial is not None and trial.status == "finished" and trial.attempts == 1
    assert store.epochs_frame(experiment_names=["e"])["epoch"].tolist() == [1]
    assert "answers again" in observer.lines[-1] and not sink.lost.is_set()


def test_the_sink_gives_up_past_the_bound_and_stops_the_sweep(store: Writer) -> None:
    sink = StoreSink(store, 1, Notices(), retry=RetryPolicy(0.2, first_wait=0.05))
    with locked(store.where):
        sink.trial_started("t1", "node", "cpu")
        deadline = time.monotonic() + 5
        while not sink.lost.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
            sink.tick()
        assert sink.lost.is_set()  # what stops the sweep, as a lost lease does
        with pytest.raises(StoreUnavailable):
            sink.close()
