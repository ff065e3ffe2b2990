"""`explorer run`: plan an experiment's trials, skip or reuse the finished ones,
sweep the rest on Ray, and record everything in the store as it happens.

This is where the stages meet: the sweep reports events to a `Sink`, and the
`StoreSink` here writes them to the database and the live status display.
Only the driver writes; it does so idempotently, so the same command run
again after a crash continues where the last one stopped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from explorer.plan import TrialPlan
from explorer.search import Listed, OptunaStrategy, Strategy, listed_candidates, listed_trials
from explorer.space import Candidate
from explorer.spec import Spec
from explorer.store import Writer, environment_info, store_url


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


@dataclass
class LiveStatus:
    """Counts and timings for the live display, updated by the sink."""

    name: str
    total: int
    concurrency: int
    started: float = field(default_factory=time.monotonic)
    done: int = 0
    failed: int = 0
    running: set[str] = field(default_factory=set)
    best: float | None = None
    durations: list[float] = field(default_factory=list)
    began: dict[str, float] = field(default_factory=dict)

    def render(self) -> Table:
        pending = max(self.total - self.done - self.failed - len(self.running), 0)
        elapsed = time.monotonic() - self.started
        table = Table.grid(padding=(0, 2))
        table.add_row(
            Text(f"{self.name}", style="bold"),
            Text(f"done {self.done}", style="green"),
            Text(f"running {len(self.running)}", style="cyan"),
            Text(f"failed {self.failed}", style="red" if self.failed else "dim"),
            Text(f"pending {pending}"),
            Text("best test error " + (f"{self.best:.2f}%" if self.best is not None else "–")),
            Text(f"elapsed {_clock(elapsed)}"),
            Text(f"ETA {self.eta(pending)}"),
        )
        return table

    def eta(self, pending: int) -> str:
        if not self.durations:
            return "–"
        mean = sum(self.durations) / len(self.durations)
        left = (pending + len(self.running) / 2) * mean / max(self.concurrency, 1)
        return _clock(left)


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}"


class StoreSink:
    """Writes a sweep's events to the store and refreshes the live display."""

    def __init__(self, store: Writer, experiment_id: int, live: LiveStatus,
                 display: Live | None) -> None:
        self.store = store
        self.experiment_id = experiment_id
        self.live = live
        self.display = display
        self.failed: dict[str, str] = {}

    def trial_planned(self, plan: TrialPlan, candidate: Candidate | None) -> None:
        if candidate is not None:
            self.store.add_candidates(self.experiment_id, [candidate])
        self.store.add_trials(self.experiment_id, [(plan.trial_key, plan.candidate_key, plan.seed)])

    def trial_started(self, trial_key: str, node: str, device: str) -> None:
        self.store.mark_running(self.experiment_id, trial_key, f"{device}@{node[:8]}")
        self.live.running.add(trial_key)
        self.live.began[trial_key] = time.monotonic()
        self.tick()

    def epoch(self, trial_key: str, metrics: Mapping[str, Any]) -> None:
        self.store.record_epoch(self.experiment_id, trial_key, metrics)
        self.tick()

    def trial_ended(self, trial_key: str, status: str, metrics: Mapping[str, Any],
                    error: str | None, history: Sequence[Mapping[str, Any]]) -> None:
        # The whole history again: epochs reported before a crash of the
        # driver were lost with it; recording is idempotent per epoch.
        if history:
            self.store.record_epochs(self.experiment_id, trial_key, history)
        self.store.finish_trial(self.experiment_id, trial_key, status, metrics, error)
        self.live.running.discard(trial_key)
        if trial_key in self.live.began:
            self.live.durations.append(time.monotonic() - self.live.began.pop(trial_key))
        if status == "finished":
            self.live.done += 1
            err = metrics.get("test_error")
            if err is not None and (self.live.best is None or err < self.live.best):
                self.live.best = float(err)
        else:
            self.live.failed += 1
            self.failed[trial_key] = error or "failed"
        self.tick()

    def tick(self) -> None:
        if self.display is not None:
            self.display.update(self.live.render())


@dataclass(frozen=True)
class Planned:
    """What a run will do: the strategy handing out the trials left, and the counts."""

    strategy: Strategy
    planned: int
    skipped: int
    reused: int


def plan_run(store: Writer, experiment_id: int, spec: Spec) -> Planned:
    """Record the trials a listed search needs, then skip the finished ones and reuse those
    finished in other experiments; a search that picks as it goes is told what is known."""
    candidates = listed_candidates(spec)
    if candidates is None:
        assert spec.search.n_trials is not None  # the spec requires it
        known = store.finished_results(experiment_id)
        left = max(spec.search.n_trials - len(known), 0)
        return Planned(OptunaStrategy(spec, known, left), left, len(known), 0)
    store.add_candidates(experiment_id, candidates)
    trials = listed_trials(spec, candidates)
    store.add_trials(experiment_id, [(t.plan.trial_key, t.plan.candidate_key, t.plan.seed)
                                     for t in trials])
    finished = store.finished_trial_keys(experiment_id)
    todo, reused = [], 0
    for trial in trials:
        key = trial.plan.trial_key
        if key in finished:
            continue
        source = store.find_finished(key, exclude_experiment_id=experiment_id)
        if source is not None:
            store.copy_finished(experiment_id, key, source)
            reused += 1
        else:
            todo.append(trial)
    return Planned(Listed(todo), len(trials), len(trials) - len(todo) - reused, reused)


def run_experiment(request: RunRequest, console: Console) -> RunSummary:
    """Run (or continue) an experiment; returns what happened."""
    spec = request.spec
    started = time.monotonic()
    store = Writer.open(store_url(request.runs_dir, request.store_url))
    record = store.create_or_get_experiment(
        spec.name, request.spec_text, spec.hash, json.dumps(spec.model_dump(mode="json")),
        new_version=request.new_version, environment=environment_info(),
    )
    exp_dir = request.runs_dir / spec.name
    store.requeue_running(record.id)  # left 'running' by a driver that died
    planned = plan_run(store, record.id, spec)
    total = planned.strategy.budget
    listed = isinstance(planned.strategy, Listed)
    console.print(f"{spec.name} v{record.version}: "
                  f"{planned.planned if listed else spec.search.n_trials} trials "
                  f"planned, {planned.skipped} already finished, {planned.reused} reused from "
                  f"other experiments, {total} to run", highlight=False)
    failed: dict[str, str] = {}
    if total and not request.dry_run:
        from explorer.sweep import SweepOptions, run_sweep  # ray loads only when there is work

        resources = spec.resources
        options = SweepOptions(
            runs_dir=request.runs_dir, experiment=spec.name, address=request.address
            or resources.address, cpus_per_trial=resources.cpus_per_trial,
            gpus_per_trial=resources.gpus_per_trial, max_concurrent=resources.max_concurrent,
            max_failures=resources.max_failures, early_stopping=spec.search.early_stopping,
            max_steps=request.max_steps, num_cpus=request.num_cpus, fail_trial=request.fail_trial,
            log_file=exp_dir / "ray.log",
        )
        live = LiveStatus(spec.name, total, resources.max_concurrent or 1)
        display_console = Console(file=console.file, width=console.width)
        try:
            with Live(live.render(), console=display_console, refresh_per_second=4,
                      transient=False) as display:
                sink = StoreSink(store, record.id, live, display)
                run_sweep(planned.strategy, sink, options, max_epochs=spec.train.epochs)
                display.update(Group(live.render()))
        finally:  # the display's last line has no newline: an error must not run on from it
            console.line()
        failed = sink.failed
    counts = store.status_counts(record.id)
    return RunSummary(
        experiment=spec.name, version=record.version, planned=planned.planned,
        skipped=planned.skipped,
        reused=planned.reused, finished=counts.get("finished", 0), failed=tuple(failed.items()),
        seconds=time.monotonic() - started,
    )
