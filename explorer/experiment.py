"""`explorer run`: plan an experiment's trials, skip or reuse the finished ones,
sweep the rest on Ray, and record everything in the store as it happens.

This is where the stages meet: the sweep reports events to a `Sink`, and the
`StoreSink` here writes them to the database and tells a `RunObserver` (the
CLI's live status display, explorer/console.py; nothing draws here).
Only the driver writes; it does so idempotently, so the same command run
again after a crash continues where the last one stopped.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from explorer.lease import driver_lease
from explorer.plan import TrialPlan
from explorer.search import (
    Listed,
    OptunaStrategy,
    Strategy,
    StudyPlace,
    listed_trials,
    listed_with_draws,
)
from explorer.space import Candidate
from explorer.spec import Spec
from explorer.store import ExperimentRecord, Writer, environment_info, store_url
from explorer.tracking import TensorBoardLog, tensorboard_dir

# Optuna's study of an experiment lives in Optuna's own storage, always this SQLite file of
# the runs directory (also with a PostgreSQL results store: Optuna's tables stay out of the
# store's schema, and only the driver, on this machine, asks and tells), so
# `optuna-dashboard sqlite:///RUNS_DIR/optuna.db` opens it.
OPTUNA_DB = "optuna.db"


def study_place(runs_dir: Path, experiment: str, version: int) -> StudyPlace:
    """Where an experiment's Optuna study is: named after the experiment (a later version,
    with its own spec and maybe other axes, as NAME@vN)."""
    name = experiment if version == 1 else f"{experiment}@v{version}"
    return StudyPlace(f"sqlite:///{(runs_dir / OPTUNA_DB).resolve()}", name)


@dataclass(frozen=True)
class RunRequest:
    spec: Spec
    spec_text: str
    runs_dir: Path
    store_url: str | None = None
    address: str | None = None
    new_version: bool = False
    dry_run: bool = False
    max_steps: int | None = None
    num_cpus: int | None = None
    fail_trial: str | None = None
    heartbeat_seconds: float = 10.0  # the driver's lease (explorer/lease.py)
    tensorboard: bool = False  # event files per trial (explorer/tracking.py)


@dataclass(frozen=True)
class RunSummary:
    experiment: str
    version: int
    planned: int
    skipped: int
    reused: int
    finished: int
    failed: tuple[tuple[str, str], ...]
    seconds: float


@dataclass(frozen=True)
class PlanSummary:
    """What a run is about to do, for the person watching it."""

    experiment: str
    version: int
    planned: int  # trials the spec asks for (an Optuna search's n_trials)
    skipped: int
    reused: int
    to_run: int
    concurrency: int
    sampling: tuple[str, ...] = ()  # per sampled space: its draws and acceptance rate


class RunObserver(Protocol):
    """What `explorer run` shows while it works; explorer/console.py draws it."""

    def planned(self, plan: PlanSummary) -> None: ...

    def notice(self, message: str) -> None:
        """One line worth telling (e.g. a lease taken over); may come from another thread."""
        ...

    def sweeping(self) -> contextlib.AbstractContextManager[None]:
        """Entered while trials train."""
        ...

    def trial_started(self, trial_key: str) -> None: ...

    def trial_ended(self, trial_key: str, status: str, test_error: float | None) -> None:
        """`status`: finished, stopped or failed; `test_error`: the last epoch's, if any."""
        ...

    def tick(self) -> None: ...


class Unobserved:
    """A run nobody watches (library callers, tests of the results only)."""

    def planned(self, plan: PlanSummary) -> None:
        pass

    def notice(self, message: str) -> None:
        pass

    def sweeping(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def trial_started(self, trial_key: str) -> None:
        pass

    def trial_ended(self, trial_key: str, status: str, test_error: float | None) -> None:
        pass

    def tick(self) -> None:
        pass


class EpochTracker(Protocol):
    """Hears each trial's epochs as they are recorded (tracking.TensorBoardLog)."""

    def epoch(self, trial_key: str, metrics: Mapping[str, Any]) -> None: ...

    def trial_ended(self, trial_key: str) -> None: ...


class StoreSink:
    """Writes a sweep's events to the store and tells the observer (and a tracker).

    The writes are batched: an event that comes FLUSH_SECONDS or more after the last
    write is written at once (with whatever waits), one that comes sooner waits in
    memory for the sweep's next tick, the next such event, or FLUSH_EVENTS waiting;
    each write is one transaction (`Writer.batch`). So a reader sees an event within
    about FLUSH_SECONDS (an epoch as it ends), and a burst of events (trials planned
    or ending together) costs a few statements per trial, not a transaction per event. A
    flush writes the planned trials first (one statement for them all), then each
    trial's events in the order they came, a run of its epochs as one
    `record_epochs`: the same rows as the calls one by one (events of different trials
    touch different rows). `flush()` writes what waits; the sweep's caller flushes at
    its end, interrupted or not.
    """

    FLUSH_EVENTS = 512
    FLUSH_SECONDS = 0.25

    def __init__(self, store: Writer, experiment_id: int, observer: RunObserver,
                 tracker: EpochTracker | None = None) -> None:
        self.store = store
        self.experiment_id = experiment_id
        self.observer = observer
        self.tracker = tracker
        self.failed: dict[str, str] = {}
        self._candidates: dict[tuple[str, str], Candidate] = {}
        self._trials: dict[str, tuple[str, str, int]] = {}
        self._events: dict[str, list[tuple[str, Any]]] = {}  # per trial, in order
        self._waiting = 0
        self._flushed = time.monotonic()

    def _wait(self, trial_key: str, kind: str, payload: Any) -> None:
        self._events.setdefault(trial_key, []).append((kind, payload))
        self._count()

    def _count(self) -> None:
        self._waiting += 1
        if (self._waiting >= self.FLUSH_EVENTS
                or time.monotonic() - self._flushed >= self.FLUSH_SECONDS):
            self.flush()

    def flush(self) -> None:
        """Write the events that wait, in one transaction."""
        self._flushed = time.monotonic()
        if not self._waiting:
            return
        candidates, trials, events = self._candidates, self._trials, self._events
        self._candidates, self._trials, self._events, self._waiting = {}, {}, {}, 0
        store, experiment = self.store, self.experiment_id
        with store.batch():
            if candidates:
                store.add_candidates(experiment, candidates.values())
            if trials:
                store.add_trials(experiment, trials.values())
            for trial_key, happened in events.items():
                for kind, payload in _runs_of_epochs(happened):
                    if kind == "started":
                        store.mark_running(experiment, trial_key, payload)
                    elif kind == "provenance":
                        store.record_provenance(experiment, trial_key, payload)
                    elif kind == "epochs":
                        store.record_epochs(experiment, trial_key, payload)
                    else:
                        status, final, error = payload
                        store.finish_trial(experiment, trial_key, status, final, error)

    def trial_planned(self, plan: TrialPlan, candidate: Candidate | None) -> None:
        if candidate is not None:
            self._candidates[(candidate.space, candidate.key)] = candidate
        self._trials[plan.trial_key] = (plan.trial_key, plan.candidate_key, plan.seed)
        self._count()

    def trial_started(self, trial_key: str, node: str, device: str) -> None:
        self._wait(trial_key, "started", f"{device}@{node[:8]}")
        self.observer.trial_started(trial_key)

    def trial_provenance(self, trial_key: str, provenance: Mapping[str, Any]) -> None:
        self._wait(trial_key, "provenance", dict(provenance))

    def epoch(self, trial_key: str, metrics: Mapping[str, Any]) -> None:
        self._wait(trial_key, "epochs", [dict(metrics)])
        if self.tracker is not None:
            self.tracker.epoch(trial_key, metrics)
        self.observer.tick()

    def trial_ended(self, trial_key: str, status: str, metrics: Mapping[str, Any],
                    error: str | None, history: Sequence[Mapping[str, Any]]) -> None:
        # The whole history again: epochs reported before a crash of the
        # driver were lost with it; recording is idempotent per epoch.
        if history:
            self._wait(trial_key, "epochs", [dict(h) for h in history])
        self._wait(trial_key, "ended", (status, dict(metrics), error))
        if self.tracker is not None:
            self.tracker.trial_ended(trial_key)
        if status == "failed":
            self.failed[trial_key] = error or "failed"
        error_figure = metrics.get("test_error")
        self.observer.trial_ended(trial_key, status,
                                  None if error_figure is None else float(error_figure))

    def tick(self) -> None:
        self.flush()
        self.observer.tick()


def _runs_of_epochs(events: Sequence[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """One trial's events in order, consecutive epoch reports joined into one (the
    writer applies them in order, so the latest report of an epoch still wins)."""
    out: list[tuple[str, Any]] = []
    for kind, payload in events:
        if kind == "epochs" and out and out[-1][0] == "epochs":
            out[-1] = ("epochs", [*out[-1][1], *payload])
        else:
            out.append((kind, payload))
    return out


@dataclass(frozen=True)
class Planned:
    """What a run will do: the strategy handing out the trials left, and the counts."""

    strategy: Strategy
    planned: int
    skipped: int
    reused: int
    sampling: tuple[str, ...] = ()  # per sampled space: its draws and acceptance rate


def plan_run(store: Writer, experiment_id: int, spec: Spec,
             study: StudyPlace | None = None) -> Planned:
    """Record the trials a listed search needs, then skip the finished ones and reuse those
    finished in other experiments; a search that picks as it goes is told what is known
    (its study kept at `study`, in memory without one)."""
    listed = listed_with_draws(spec)
    if listed is None:
        assert spec.search.n_trials is not None  # the spec requires it
        known = store.finished_results(experiment_id)
        left = max(spec.search.n_trials - len(known), 0)
        return Planned(OptunaStrategy(spec, known, left, study), left, len(known), 0)
    candidates, draws = listed
    store.add_candidates(experiment_id, candidates)
    trials = listed_trials(spec, candidates)
    store.add_trials(experiment_id, [(t.plan.trial_key, t.plan.candidate_key, t.plan.seed)
                                     for t in trials])
    finished = store.finished_trial_keys(experiment_id)
    sources = store.find_finished_many(
        (t.plan.trial_key for t in trials if t.plan.trial_key not in finished),
        exclude_experiment_id=experiment_id)
    todo, reused = [], 0
    for trial in trials:
        key = trial.plan.trial_key
        if key in finished:
            continue
        source = sources.get(key)
        if source is not None:
            store.copy_finished(experiment_id, key, source)
            reused += 1
        else:
            todo.append(trial)
    return Planned(Listed(todo), len(trials), len(trials) - len(todo) - reused, reused,
                   tuple(report.summary() for report in draws))


def run_experiment(request: RunRequest, observer: RunObserver | None = None) -> RunSummary:
    """Run (or continue) an experiment, telling `observer` as it goes; returns what happened."""
    watch = observer or Unobserved()
    spec = request.spec
    started = time.monotonic()
    store = Writer.open(store_url(request.runs_dir, request.store_url))
    record = store.create_or_get_experiment(
        spec.name, request.spec_text, spec.hash, json.dumps(spec.record()),
        new_version=request.new_version, environment=environment_info(),
    )
    with driver_lease(store, record, interval=request.heartbeat_seconds,
                      notice=watch.notice) as lease:
        store.requeue_running(record.id)  # left 'running' by a driver that is gone
        planned, failed = _plan_and_sweep(request, store, record, watch, lease.lost)
        lease.check()  # taken over meanwhile: the sweep stopped; say so, exit 2
    counts = store.status_counts(record.id)
    return RunSummary(
        experiment=spec.name, version=record.version, planned=planned.planned,
        skipped=planned.skipped, reused=planned.reused, finished=counts.get("finished", 0),
        failed=tuple(failed.items()), seconds=time.monotonic() - started,
    )


def _plan_and_sweep(request: RunRequest, store: Writer, record: ExperimentRecord,
                    watch: RunObserver, lease_lost: threading.Event,
                    ) -> tuple[Planned, dict[str, str]]:
    """With the lease held: plan, tell the observer, sweep what is left (until the lease is
    lost); returns the plan and the trials that failed, with their reasons."""
    from explorer.data import check_available  # torch: only once the lease is held

    spec = request.spec
    check_available(spec.data)  # a missing dataset is found before Ray starts
    request.runs_dir.mkdir(parents=True, exist_ok=True)
    planned = plan_run(store, record.id, spec,
                       study_place(request.runs_dir, spec.name, record.version))
    total = planned.strategy.budget
    resources = spec.resources
    shown = planned.planned if isinstance(planned.strategy, Listed) else spec.search.n_trials
    watch.planned(PlanSummary(spec.name, record.version, shown or 0, planned.skipped,
                              planned.reused, total, resources.max_concurrent or 1,
                              planned.sampling))
    failed: dict[str, str] = {}
    if total and not request.dry_run:
        from explorer.sweep import SweepOptions, run_sweep  # ray loads only when there is work

        options = SweepOptions(
            runs_dir=request.runs_dir, experiment=spec.name, address=request.address
            or resources.address, cpus_per_trial=resources.cpus_per_trial,
            gpus_per_trial=resources.gpus_per_trial, max_concurrent=resources.max_concurrent,
            max_failures=resources.max_failures, early_stopping=spec.search.early_stopping,
            max_steps=request.max_steps, num_cpus=request.num_cpus, fail_trial=request.fail_trial,
            log_file=request.runs_dir / spec.name / "ray.log", data=spec.data,
        )
        with contextlib.ExitStack() as stack:
            tracker = (stack.enter_context(TensorBoardLog(tensorboard_dir(request.runs_dir,
                                                                          spec.name)))
                       if request.tensorboard else None)
            sink = StoreSink(store, record.id, watch, tracker)
            stack.enter_context(watch.sweeping())
            stack.callback(sink.flush)  # what waits is written, interrupted or not
            run_sweep(planned.strategy, sink, options, max_epochs=spec.train.epochs,
                      stop=lease_lost)
        failed = sink.failed
    return planned, failed
