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
import dataclasses
import json
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from explorer.errors import SetupError
from explorer.importers import is_imported
from explorer.lease import driver_lease
from explorer.metrics import Status
from explorer.plan import DATA_PLACE, TrialPlan
from explorer.search import (
    Listed,
    OptunaStrategy,
    Strategy,
    StudyPlace,
    Suggestion,
    listed_trials,
    listed_with_draws,
)
from explorer.space import Candidate
from explorer.spec import Spec
from explorer.store import ExperimentRecord, Writer, environment_info, store_url
from explorer.store.engine import describe
from explorer.store.retry import (
    DEFAULT_RETRY_SECONDS,
    RetryPolicy,
    call_with_retry,
    explain,
    outage_notice,
    transient,
    unavailable,
)
from explorer.tracking import TensorBoardLog, tensorboard_dir

if TYPE_CHECKING:  # annotations only: torch is imported when a run starts
    from explorer.data import Dataset

__all__ = [
    "EpochTracker",
    "PlanSummary",
    "Planned",
    "RunObserver",
    "RunRequest",
    "RunSummary",
    "StoreSink",
    "Unobserved",
    "plan_run",
    "run_experiment",
]

# Optuna's study of an experiment lives in Optuna's own storage, always this SQLite file of
# the runs directory (also with a PostgreSQL results store: Optuna's tables stay out of the
# store's schema, and only the driver, on this machine, asks and tells), so
# `optuna-dashboard sqlite:///RUNS_DIR/optuna.db` opens it.
_OPTUNA_DB = "optuna.db"
_Done = TypeVar("_Done")


def _study_place(runs_dir: Path, experiment: str, version: int) -> StudyPlace:
    """Where an experiment's Optuna study is: named after the experiment (a later version,
    with its own spec and maybe other axes, as NAME@vN)."""
    name = experiment if version == 1 else f"{experiment}@v{version}"
    return StudyPlace(f"sqlite:///{(runs_dir / _OPTUNA_DB).resolve()}", name)


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
    store_retry_seconds: float = DEFAULT_RETRY_SECONDS  # a store outage waited out
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

    def trial_ended(self, trial_key: str, status: Status, test_error: float | None) -> None:
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

    def trial_ended(self, trial_key: str, status: Status, test_error: float | None) -> None:
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
    flush is written at once (with whatever waits), one that comes sooner waits in
    memory for the sweep's next tick, the next such event, or FLUSH_EVENTS waiting;
    each flush is one transaction (`Writer.batch`). So a reader sees an event within
    about FLUSH_SECONDS (an epoch as it ends), and a burst of events (trials planned
    or ending together) costs a few statements per trial, not a transaction per event. A
    flush writes the planned trials first (one statement for them all), then each
    trial's events in the order they came, a run of its epochs as one
    `record_epochs`: the same rows as the calls one by one (events of different trials
    touch different rows).

    The writes never block Tune's loop nor raise into it. Each flush's transaction joins
    a queue, written in order; while the store fails transiently (a server restarting, a
    lock held) the queue holds them and is retried, with a doubling wait, at Tune's next
    steps, so no event is lost and the trials keep training (a transaction that failed
    was rolled back whole, so it is written again whole). Once the store has failed
    for longer than the retry policy allows, or fails in a way waiting cannot mend (a full
    disk, a bug), `lost` is set (the sweep stops, as on a lost lease) and `close()` raises
    the one-line problem. `close()` flushes what waits; the sweep's caller closes the sink
    at its end, interrupted or not.
    """

    FLUSH_EVENTS = 512
    FLUSH_SECONDS = 0.25

    def __init__(self, store: Writer, experiment_id: int, observer: RunObserver,
                 tracker: EpochTracker | None = None, retry: RetryPolicy | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.experiment_id = experiment_id
        self.observer = observer
        self.tracker = tracker
        self.retry = retry or RetryPolicy()
        self.clock = clock
        self.failed: dict[str, str] = {}
        self.lost = threading.Event()  # the store is gone for good: stop the sweep
        self.problem: BaseException | None = None
        # Events not yet flushed.
        self._candidates: dict[tuple[str, str], Candidate] = {}
        self._trials: dict[str, tuple[str, str, int]] = {}
        self._events: dict[str, list[tuple[str, Any]]] = {}  # per trial, in order
        self._waiting = 0
        self._flushed = -math.inf  # the first event is written at once
        # Flushed transactions the store has not taken yet (an outage), in order.
        self._held: deque[tuple[str, Callable[[], None]]] = deque()
        self._outage_since: float | None = None
        self._backoff: float | None = None
        self._next_try = 0.0

    def _hold(self, trial_key: str, kind: str, payload: Any) -> None:
        self._events.setdefault(trial_key, []).append((kind, payload))
        self._count()

    def _count(self) -> None:
        self._waiting += 1
        if (self._waiting >= self.FLUSH_EVENTS
                or self.clock() - self._flushed >= self.FLUSH_SECONDS):
            self.flush()

    def flush(self) -> None:
        """Queue the events that wait as one transaction, and write the queue if it can."""
        self._flushed = self.clock()
        if not self._waiting:
            return
        candidates, trials, events = self._candidates, self._trials, self._events
        waiting = self._waiting
        self._candidates, self._trials, self._events, self._waiting = {}, {}, {}, 0
        store, experiment = self.store, self.experiment_id

        def write() -> None:
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

        named = sorted({*trials, *events})
        self._write(f"{waiting} results of trial{'s' if len(named) > 1 else ''} "
                    f"{', '.join(named[:3])}{' ...' if len(named) > 3 else ''}", write)

    def trial_planned(self, plan: TrialPlan, candidate: Candidate | None) -> None:
        if candidate is not None:
            self._candidates[(candidate.space, candidate.key)] = candidate
        self._trials[plan.trial_key] = (plan.trial_key, plan.candidate_key, plan.seed)
        self._count()

    def trial_started(self, trial_key: str, node: str, device: str) -> None:
        self._hold(trial_key, "started", f"{device}@{node[:8]}")
        self.observer.trial_started(trial_key)

    def trial_provenance(self, trial_key: str, provenance: Mapping[str, Any]) -> None:
        self._hold(trial_key, "provenance", dict(provenance))

    def notice(self, trial_key: str, message: str) -> None:
        self.observer.notice(f"trial {trial_key}: {message}")

    def epoch(self, trial_key: str, metrics: Mapping[str, Any]) -> None:
        self._hold(trial_key, "epochs", [dict(metrics)])
        if self.tracker is not None:
            self.tracker.epoch(trial_key, metrics)
        self.observer.tick()

    def trial_ended(self, trial_key: str, status: Status, metrics: Mapping[str, Any],
                    error: str | None, history: Sequence[Mapping[str, Any]]) -> None:
        # The whole history again: epochs reported before a crash of the
        # driver were lost with it; recording is idempotent per epoch.
        if history:
            self._hold(trial_key, "epochs", [dict(h) for h in history])
        self._hold(trial_key, "ended", (status, dict(metrics), error))
        if self.tracker is not None:
            self.tracker.trial_ended(trial_key)
        if status == Status.FAILED:
            self.failed[trial_key] = error or "failed"
        error_figure = metrics.get("test_error")
        self.observer.trial_ended(trial_key, status,
                                  None if error_figure is None else float(error_figure))

    def tick(self) -> None:
        self.flush()
        if self._held and self.clock() >= self._next_try:
            self._drain()
        self.observer.tick()

    def close(self, wait: bool = True) -> None:
        """Flush, then write what is still held, waiting out an outage within the policy's
        bound (or trying once, without `wait`); raise the store's problem if there is one
        (StoreUnavailable past the bound)."""
        self.flush()
        if not wait:
            self._drain()
        while wait and self._held and self.problem is None:
            pause = self._next_try - self.clock()
            if pause > 0:
                time.sleep(pause)
            self._drain()
        if self.problem is not None:
            raise self.problem

    def _write(self, doing: str, write: Callable[[], None]) -> None:
        if self.problem is not None:  # the sweep is stopping; the next run redoes this
            return
        self._held.append((doing, write))
        if len(self._held) == 1 or self.clock() >= self._next_try:
            self._drain()

    def _drain(self) -> None:
        """Write the held transactions in order until one fails; decide what that means."""
        where = self.store.where
        while self._held and self.problem is None:
            doing, write = self._held[0]
            try:
                write()
            except Exception as err:
                if not transient(err):
                    self._give_up(explain(err, where, doing) or err)
                    return
                now = self.clock()
                if self._outage_since is None:
                    self._outage_since = now
                    self.observer.notice(outage_notice(where, err, self.retry.seconds))
                elif now - self._outage_since >= self.retry.seconds:
                    self._give_up(unavailable(where, err, self.retry.seconds))
                    return
                self._backoff = self.retry.wait_after(self._backoff)
                self._next_try = now + self._backoff
                return
            self._held.popleft()
        if self._outage_since is not None and not self._held:
            self.observer.notice(f"the results database at {where} answers again after "
                                 f"{self.clock() - self._outage_since:.1f} s; every held "
                                 "result is written")
            self._outage_since, self._backoff = None, None

    def _give_up(self, problem: BaseException) -> None:
        self.problem = problem
        self._held.clear()
        self.lost.set()


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
    trials = _keep_stored_keys(listed_trials(spec, candidates), store.trial_keys(experiment_id))
    store.add_trials(experiment_id, [(t.plan.trial_key, t.plan.candidate_key, t.plan.seed)
                                     for t in trials])
    finished = store.finished_trial_keys(experiment_id)
    sources = store.find_finished_many(
        (key for t in trials if t.plan.trial_key not in finished
         for key in (t.plan.trial_key, *t.plan.aliases)),
        exclude_experiment_id=experiment_id)
    todo, reused = [], 0
    for trial in trials:
        key = trial.plan.trial_key
        if key in finished:
            continue
        # Finished elsewhere under this key, or under its version-1 key (an older store).
        source = next((sources[k] for k in (key, *trial.plan.aliases) if k in sources), None)
        if source is not None:
            store.copy_finished(experiment_id, key, source)
            reused += 1
        else:
            todo.append(trial)
    return Planned(Listed(todo), len(trials), len(trials) - len(todo) - reused, reused,
                   tuple(report.summary() for report in draws))


def _keep_stored_keys(trials: Sequence[Suggestion],
                     stored: Mapping[tuple[str, int], str]) -> list[Suggestion]:
    """The trials, each under the key the experiment already stored it by (a version-1 key
    from before data.root left the key): its rows, checkpoints and logs stay its own."""
    kept = []
    for trial in trials:
        plan = trial.plan
        key = stored.get((plan.candidate_key, plan.seed), plan.trial_key)
        if key != plan.trial_key:
            aliases = tuple(k for k in (plan.trial_key, *plan.aliases) if k != key)
            trial = dataclasses.replace(
                trial, plan=dataclasses.replace(plan, trial_key=key, aliases=aliases))
        kept.append(trial)
    return kept


def run_experiment(request: RunRequest, observer: RunObserver | None = None) -> RunSummary:
    """Run (or continue) an experiment, telling `observer` as it goes; returns what happened.

    Every store call rides out a transient outage within `request.store_retry_seconds`
    (explorer/store/retry.py) and raises StoreUnavailable past it.
    """
    watch = observer or Unobserved()
    spec = request.spec
    started = time.monotonic()
    from explorer.data import check_available  # torch: only for a run

    # Before the store: a missing or unwritable dataset leaves no experiment behind. What the
    # check loads (all but an image folder) is what the sweep trains on: loaded once.
    loaded = check_available(spec.data)
    policy = RetryPolicy(request.store_retry_seconds)
    url = store_url(request.runs_dir, request.store_url)
    store = call_with_retry(lambda: Writer.open(url), policy, describe(url), "its schema",
                            on_outage=watch.notice)

    def retried(doing: str, write: Callable[[], _Done]) -> _Done:
        return call_with_retry(write, policy, store.where, doing, on_outage=watch.notice)

    latest = retried("the experiment", lambda: store.latest_experiment(spec.name))
    if is_imported(latest):
        raise SetupError(f"experiment {spec.name!r} was imported (explorer import) and is "
                         "read-only: run the spec under another name")
    record = retried("the experiment", lambda: store.create_or_get_experiment(
        spec.name, request.spec_text, spec.hash, json.dumps(spec.record()),
        new_version=request.new_version, environment=environment_info(),
        # Where the data lives is not what the experiment is: another machine's root
        # continues the same experiment (its trial keys hold no root either).
        ignored_keys=tuple(f"data.{key}" for key in DATA_PLACE),
    ))
    with driver_lease(store, record, interval=request.heartbeat_seconds,
                      notice=watch.notice, retry=policy) as lease:
        # left 'running' by a driver that is gone
        retried("the requeued trials", lambda: store.requeue_running(record.id))
        planned, failed = _plan_and_sweep(request, store, record, watch, lease.lost, policy,
                                          loaded)
        lease.check()  # taken over meanwhile: the sweep stopped; say so, exit 2
    counts = retried("nothing (reading the counts)", lambda: store.status_counts(record.id))
    return RunSummary(
        experiment=spec.name, version=record.version, planned=planned.planned,
        skipped=planned.skipped, reused=planned.reused, finished=counts.get(Status.FINISHED, 0),
        failed=tuple(failed.items()), seconds=time.monotonic() - started,
    )


def _plan_and_sweep(request: RunRequest, store: Writer, record: ExperimentRecord,
                    watch: RunObserver, lease_lost: threading.Event, policy: RetryPolicy,
                    loaded: Dataset | None,
                    ) -> tuple[Planned, dict[str, str]]:
    """With the lease held: plan, tell the observer, sweep what is left (until the lease is
    lost) on the data `loaded` (None: the sweep loads it); returns the plan and the trials
    that failed, with their reasons."""
    spec = request.spec
    request.runs_dir.mkdir(parents=True, exist_ok=True)
    planned = call_with_retry(
        lambda: plan_run(store, record.id, spec,
                         _study_place(request.runs_dir, spec.name, record.version)),
        policy, store.where, "the planned trials", on_outage=watch.notice)
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
            runs_dir=request.runs_dir, experiment=spec.name,
            address=request.address or resources.address, resources=resources,
            early_stopping=spec.search.early_stopping,
            max_steps=request.max_steps, num_cpus=request.num_cpus, fail_trial=request.fail_trial,
            log_file=request.runs_dir / spec.name / "ray.log", data=spec.data,
        )
        with contextlib.ExitStack() as stack:
            tracker = (stack.enter_context(TensorBoardLog(tensorboard_dir(request.runs_dir,
                                                                          spec.name)))
                       if request.tensorboard else None)
            sink = StoreSink(store, record.id, watch, tracker, policy)
            stack.enter_context(watch.sweeping())
            try:
                run_sweep(planned.strategy, sink, options, max_epochs=spec.train.epochs,
                          stop=(lease_lost, sink.lost), loaded=loaded)
            except KeyboardInterrupt:
                with contextlib.suppress(Exception):  # what can be written at once
                    sink.close(wait=False)
                raise
            sink.close()  # the held results written, or the store's problem raised
        failed = sink.failed
    return planned, failed
