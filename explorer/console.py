"""The terminal UI of the CLI: the progress bars of ``explorer train`` and ``explorer cost``,
the live status of ``explorer run``, and what the other commands print: the tables and
summaries of ``explorer enumerate``, ``status``, ``compare`` and ``refine``.

The library (`explorer.train`, `explorer.cost`, `explorer.experiment`) reports
through callbacks and never draws; this module turns those callbacks into rich
displays. `cli.py` holds the commands and their options and hands their results here.
Modules that load torch, and the spec's models (a second to import), are imported inside
functions or for type checking only, so importing this one stays cheap for commands that
draw without training (`explorer status` reads no spec).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from explorer.arch import Arch
from explorer.metrics import SHOWN_STATUSES, EpochMetrics, Status, TrialResult

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from explorer.compare import Comparison
    from explorer.complexity import Complexity
    from explorer.cost import CostRow
    from explorer.data import Dataset, ImageFiles
    from explorer.experiment import PlanSummary
    from explorer.refine import Refinement
    from explorer.space import CandidateStream
    from explorer.spec import DataSpec, Spec, TrainSpec
    from explorer.store.records import Holder
    from explorer.train import ModelBuilder


__all__ = [
    "CostBar",
    "EpochBar",
    "LiveBar",
    "SweepDisplay",
    "SweepStatus",
    "candidates_table",
    "clock",
    "print_comparison",
    "print_drops",
    "print_enumeration",
    "print_refinement",
    "size_line",
    "status_table",
    "stderr_console",
    "train_with_progress",
]


def stderr_console() -> Console:
    """Where progress goes by default: stderr, so stdout stays the command's result."""
    return Console(stderr=True)


_Bar = TypeVar("_Bar", bound="LiveBar")


class LiveBar:
    """A rich progress display, live while its `with` block runs and cleared after it."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def __enter__(self: _Bar) -> _Bar:
        self.progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.progress.stop()


# ---------------------------------------------------------------------------
# explorer train


def train_with_progress(
    arch: Arch,
    data: Dataset | ImageFiles | DataSpec,
    recipe: TrainSpec,
    *,
    seed: int | None = None,
    epochs: int | None = None,
    device: str | torch.device = "auto",
    checkpoint_dir: str | Path | None = None,
    max_steps: int | None = None,
    console: Console | None = None,
    title: str | None = None,
    build: ModelBuilder | None = None,
    on_epoch: Callable[[EpochMetrics], None] | None = None,
) -> TrialResult:
    """`train_trial` with a progress bar: what ``explorer train`` runs.

    `seed` defaults to the recipe's first; `epochs` overrides the recipe's
    (a different recipe, so a different trial; the warm-up is cut to fit).
    One line per epoch is printed above the bar so a finished run leaves its
    history on screen; `on_epoch` hears each epoch too (e.g. a TensorBoard log),
    and `build` makes the model (e.g. from initial weights).
    """
    from explorer.data import load_data
    from explorer.spec import DataSpec
    from explorer.train import train_trial

    out = console or stderr_console()
    if epochs is not None:
        recipe = recipe.with_epochs(epochs)
    trial_seed = recipe.seeds[0] if seed is None else seed
    if isinstance(data, DataSpec):
        with out.status(f"loading {data.dataset}…"):
            data = load_data(data)
    with EpochBar(out, title or arch.label(), recipe.epochs) as bar:
        def epoch_done(metrics: EpochMetrics) -> None:
            bar.epoch_done(metrics)
            if on_epoch is not None:
                on_epoch(metrics)

        result = train_trial(
            arch, data, recipe, seed=trial_seed, device=device, checkpoint_dir=checkpoint_dir,
            max_steps=max_steps, on_epoch=epoch_done, on_step=bar.step, build=build,
            on_notice=lambda message: out.print(f"note: {message}", markup=False,
                                                highlight=False, soft_wrap=True),
        )
    if result.resumed_from_epoch:
        out.print(f"resumed from epoch {result.resumed_from_epoch} in {checkpoint_dir}",
                  markup=False)
    if result.status == Status.FAILED:
        out.print(f"[red]trial failed:[/red] {escape(result.error or '')}", soft_wrap=True)
    return result


class EpochBar(LiveBar):
    """A bar over the current epoch's steps, and one printed line per finished epoch."""

    def __init__(self, console: Console, name: str, epochs: int) -> None:
        self.console, self.name, self.epochs = console, name, epochs
        super().__init__(Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=console, transient=True,
        ))
        self.task: TaskID = self.progress.add_task(
            f"{name} epoch 1/{epochs}", total=None, info=""
        )

    def step(self, done: int, total: int) -> None:
        self.progress.update(self.task, completed=done, total=total)

    def epoch_done(self, m: EpochMetrics) -> None:
        info = (
            f"loss {m.train_loss:.3f}  train err {m.train_error:.1f}%  "
            f"test err {m.test_error:.2f}%  {m.train_images_per_sec:,.0f} img/s"
        )
        self.console.print(f"epoch {m.epoch}/{self.epochs}  {info}  ({m.seconds:.1f}s)")
        following = min(m.epoch + 1, self.epochs)
        self.progress.update(
            self.task, description=f"{self.name} epoch {following}/{self.epochs}",
            completed=0, info=info,
        )


# ---------------------------------------------------------------------------
# explorer cost


class CostBar(LiveBar):
    """A bar over the candidates of ``explorer cost``, fed by `measure_costs`'s callbacks.

    ::

        with CostBar(console, len(items)) as bar:
            rows = measure_costs(items, recipe, on_candidate=bar.starting, on_row=bar.measured)
    """

    def __init__(self, console: Console | None, total: int) -> None:
        super().__init__(Progress(
            TextColumn("[bold]cost"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.description}"), TimeElapsedColumn(),
            console=console or stderr_console(), transient=True,
        ))
        self.task: TaskID = self.progress.add_task("", total=total)

    def starting(self, key: str, arch: Arch) -> None:
        self.progress.update(self.task, description=f"{key} {arch.label()}")

    def measured(self, row: CostRow) -> None:
        self.progress.advance(self.task)


# ---------------------------------------------------------------------------
# explorer run


@dataclass
class SweepStatus:
    """Counts and timings of a running sweep, as the live line shows them."""

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
            Text(f"elapsed {clock(elapsed)}"),
            Text(f"ETA {self.eta(pending)}"),
        )
        return table

    def eta(self, pending: int) -> str:
        if not self.durations:
            return "–"
        mean = sum(self.durations) / len(self.durations)
        left = (pending + len(self.running) / 2) * mean / max(self.concurrency, 1)
        return clock(left)


def clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}"


class SweepDisplay:
    """The live status line of ``explorer run``: a `RunObserver` drawing on `console`."""

    def __init__(self, console: Console) -> None:
        self.console = console
        # Bound to the stream now: while Ray runs, the sweep points sys.stdout and
        # sys.stderr at ray.log, where a console without a file of its own would follow.
        # A console of its own, too: the live region must not take the caller's settings
        # (highlighting, a fixed width for piped output) along.
        self.terminal = Console(file=console.file, width=console.width)
        self.status = SweepStatus("", 0, 1)
        self.live: Live | None = None

    def planned(self, plan: PlanSummary) -> None:
        self.console.print(
            f"{plan.experiment} v{plan.version}: {plan.planned} trials planned, {plan.skipped} "
            f"already finished, {plan.reused} reused from other experiments, {plan.to_run} "
            "to run", highlight=False)
        for line in plan.sampling:
            self.console.print(f"  {line}", highlight=False, markup=False)
        self.status = SweepStatus(plan.experiment, plan.to_run, plan.concurrency)

    def notice(self, message: str) -> None:
        self.terminal.print(f"[yellow]note:[/] {escape(message)}", highlight=False,
                            soft_wrap=True)

    @contextlib.contextmanager
    def sweeping(self) -> Iterator[None]:
        try:
            with Live(self.status.render(), console=self.terminal, refresh_per_second=4,
                      transient=False) as live:
                self.live = live
                yield
                live.update(Group(self.status.render()))
        finally:  # the display's last line has no newline: an error must not run on from it
            self.live = None
            self.terminal.line()

    def trial_started(self, trial_key: str) -> None:
        self.status.running.add(trial_key)
        self.status.began[trial_key] = time.monotonic()
        self.tick()

    def trial_ended(self, trial_key: str, status: Status, test_error: float | None) -> None:
        line = self.status
        line.running.discard(trial_key)
        if trial_key in line.began:
            line.durations.append(time.monotonic() - line.began.pop(trial_key))
        if status == Status.FAILED:
            line.failed += 1
        else:  # finished, or stopped early: done either way, with an error figure to show
            line.done += 1
            if test_error is not None and (line.best is None or test_error < line.best):
                line.best = test_error
        self.tick()

    def tick(self) -> None:
        if self.live is not None:
            self.live.update(self.status.render())


# ---------------------------------------------------------------------------
# explorer enumerate


def size_line(spec: Spec, sizes: Mapping[str, int]) -> str:
    """How many points the spaces have (a grid's) or will draw (a sampled space's n)."""
    drawn = {name for name in sizes if spec.spaces[name].sample is not None}
    grid = sum(n for name, n in sizes.items() if name not in drawn)
    to_draw = sum(n for name, n in sizes.items() if name in drawn)
    parts = ([f"{grid:,} grid points"] if len(drawn) < len(sizes) else []) + (
        [f"{to_draw:,} candidates to draw"] if drawn else [])
    each = ", ".join(f"{name} n={n:,}" if name in drawn else f"{name} {n:,}"
                     for name, n in sizes.items())
    return f"{' and '.join(parts)} ({each})"


def print_enumeration(console: Console, spec: Spec, stream: CandidateStream,
                      rows: list[dict[str, Any]], ranges: Mapping[str, tuple[int, Any, Any]],
                      *, drop_lines: int, to_file: bool) -> None:
    """What `explorer enumerate` prints once its stream has run: the candidates it shows, the
    dropped points, each sampled space's draws, the counts and each space's ranges."""
    if rows:
        import pandas as pd

        per_stage = any(spec.spaces[name].sample is not None for name in stream.sizes)
        console.print(candidates_table(pd.DataFrame(rows), spec, stream.base.complexity,
                                       per_stage=per_stage))
    print_drops(console, stream, drop_lines)
    for sampled in stream.samples:
        console.print(sampled.summary(), highlight=False, markup=False)
    console.print(f"{stream.candidates:,} candidates, {stream.dropped_count:,} dropped",
                  highlight=False)
    for name, (n, low, high) in ranges.items():
        unit = "drawn" if spec.spaces[name].sample is not None else "points"
        console.print(f"  {name}: {n:,} of {stream.sizes[name]:,} {unit}; params {low[0]:,}–"
                      f"{high[0]:,}, flops {low[1]:,}–{high[1]:,}", highlight=False)
    if len(rows) < stream.candidates and (not to_file or rows):
        console.print(f"showed {len(rows):,} of {stream.candidates:,} candidates, as "
                      "enumerated (--limit N, --all to show more)", highlight=False)


def print_drops(console: Console, stream: CandidateStream, drop_lines: int) -> None:
    """One line per dropped point when there are few; counts by reason when there are many."""
    if stream.dropped_count <= drop_lines:
        for dropped in stream.dropped:
            values = ", ".join(f"{k}={_short(v)}" for k, v in dropped.values.items()) or "base"
            console.print(
                f"[yellow]dropped[/] {dropped.space} ({escape(values)}): "
                f"{escape(dropped.reason)}",
                highlight=False,
            )
        return
    for reason, n in stream.dropped_by_reason.most_common():
        console.print(f"[yellow]dropped[/] {n:,} points: {escape(reason)}", highlight=False)


def candidates_table(frame: pd.DataFrame, spec: Spec, base: Complexity,
                     per_stage: bool = False) -> Table:
    """The candidates as a terminal table; `per_stage` shows each stage's C and d as lists
    (a sampled space draws them per stage), else stage 1's, from which make_arch derives
    the rest."""
    from explorer.columns import shown_columns

    table = Table(title=f"{spec.name}: base model {base.params:,} params, {base.flops:,} flops")
    shown = shown_columns(per_stage)
    for column in shown:
        numeric = column.kind in ("int", "float")
        table.add_column(column.header or column.name, justify="right" if numeric else "left",
                         no_wrap=numeric or column.name == "key")
    columns = [column.name for column in shown]
    for row in frame[columns].itertuples(index=False):
        table.add_row(*(_cell(v) for v in row))
    return table


def _cell(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:+.2f}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(value)


def _short(value: Any) -> str:
    return _cell(value) if isinstance(value, list | tuple) else str(value)


# ---------------------------------------------------------------------------
# explorer status


def status_table(frame: pd.DataFrame, drivers: Mapping[int, Holder], host: str) -> Table:
    """`explorer status`'s table: an experiment a row, its trials counted by status (the
    database's counts in `frame`), its best error and the driver holding its lease."""
    from explorer.lease import holder_stale

    # 'running' trials are split by whether a driver still runs them.
    shown = [c for s in SHOWN_STATUSES
             for c in ((s, "interrupted") if s == Status.RUNNING else (s,))]
    table = Table(title="experiments")
    for column in ("experiment", "version", "trials", *shown, "best test error %", "driver"):
        table.add_column(column, justify="left" if column in ("experiment", "driver") else "right")
    for row in frame.itertuples(index=False):
        best = float(row.best_test_error)
        holder = drivers.get(int(row.experiment_id))
        counts: dict[str, int] = {s: int(getattr(row, s)) for s in SHOWN_STATUSES}
        stale = holder is not None and holder_stale(holder, host)
        if holder is None or stale:
            counts["interrupted"] = counts.pop(Status.RUNNING, 0)
        # A host name as it is, never read as markup.
        driver = "–" if holder is None else Text(holder.describe() + (" (gone: stale)"
                                                                       if stale else ""))
        table.add_row(
            str(row.experiment),
            str(row.version),
            str(row.trials),
            *(str(counts.get(s, 0)) for s in shown),
            "–" if math.isnan(best) else f"{best:.2f}",  # NaN when nothing finished
            driver,
        )
    return table


# ---------------------------------------------------------------------------
# explorer compare and explorer refine


def print_refinement(console: Console, result: Refinement) -> None:
    """`explorer refine`'s tables and sentences on the terminal."""
    from explorer.refine import MEANING

    regions = Table(title=f"{result.experiment} / {result.space}: good regions of "
                          f"{result.models} models ({result.draws} bootstrap draws of a "
                          "quarter of the models, the best one's value kept)")
    for header in ("parameter", "stage", "meaning", "2.5%", "median", "97.5%", "best model",
                   "values"):
        regions.add_column(header, justify="left" if header in ("parameter", "meaning")
                           else "right")
    for r in result.regions:
        regions.add_row(r.parameter, "all" if r.stage is None else str(r.stage),
                        MEANING[r.parameter], f"{r.low:g}", f"{r.median:g}", f"{r.high:g}",
                        f"{r.best:g}", str(r.distinct))
    console.print(regions)
    proposals = Table(title=f"proposed constraints, read on the drawn models ({result.normalize}"
                            f"-normalised EDFs; ranked: better, equivalent within "
                            f"{result.margin:g}, undecided, worse)")
    for header in ("rank", "constraint", "what", "kept", "KS vs parent", "p (kept vs rest)",
                   "mean error", "parent", "finding", "--write"):
        proposals.add_column(header, justify="left" if header in ("constraint", "what",
                                                                   "finding", "--write")
                             else "right")
    for p in result.proposals:
        proposals.add_row(str(p.rank), p.name, p.description, f"{p.kept}/{p.total}",
                          _figure(p.ks_statistic, 3), _p_value(p.p_value),
                          _figure(p.child_mean), _figure(p.parent_mean),
                          p.equivalence.finding, "yes" if p.writable is None else "no")
    console.print(proposals)
    for p in result.proposals:
        console.print(f"{p.rank}. {p.equivalence.sentence}"
                      + (f" (not writable: {p.writable})" if p.writable else ""),
                      highlight=False, soft_wrap=True)
    for name, why in result.not_read:
        console.print(f"not read: {name}: {why}", highlight=False, soft_wrap=True)


def print_comparison(console: Console, experiment: str, result: Comparison) -> None:
    """`explorer compare`'s tables and sentences on the terminal."""
    from explorer.compare import plan_sentence
    from explorer.stats import QUANTILES

    weighted = result.normalize != "none"
    how = ("not normalised" if not weighted else
           f"normalised by {result.normalize} ({result.bins} log bins)" if result.span is None
           else f"normalised by {result.normalize} (NDS: {result.bins} linear bins of "
                f"[{result.span[0]:g}, {result.span[1]:g}])")
    table = Table(title=f"{experiment}: test error (%) of each space's candidates, {how}")
    headers = ["space", "n", "min", "mean", *(["weighted mean", "n effective"] if weighted
                                               else []),
               *(f"EDF {level:.0%}" for level in QUANTILES)]
    for header in headers:
        table.add_column(header, justify="left" if header == "space" else "right")
    for s in result.spaces:
        figures = [s.min, s.mean, *([s.weighted_mean] if weighted else [])]
        table.add_row(s.name, str(s.n), *(_figure(v) for v in figures),
                      *([_figure(s.n_effective, 1)] if weighted else []),
                      *(_figure(v) for v in s.quantiles))
    console.print(table)
    if result.pairs:
        pairs = Table(title="two-sample Kolmogorov–Smirnov tests"
                            + (" (weighted; p from Kish effective sizes)" if weighted else ""))
        for header in ("a", "b", "KS statistic", "p-value", "n a", "n b"):
            pairs.add_column(header, justify="left" if header in ("a", "b") else "right")
        for p in result.pairs:
            pairs.add_row(p.a, p.b, _figure(p.ks_statistic, 3), _p_value(p.p_value),
                          _figure(p.n_a, 1), _figure(p.n_b, 1))
        console.print(pairs)
        for p in result.pairs:
            if p.equivalence is not None:
                console.print(f"equivalence: {p.equivalence.sentence}", highlight=False,
                              soft_wrap=True)
    for verdict in result.verdicts:
        console.print(f"verdict: {verdict.sentence}", highlight=False, soft_wrap=True, markup=False)
    planned = result.plan
    if planned is not None:
        console.print(f"plan: {plan_sentence(planned, result.normalize)}", highlight=False,
                      soft_wrap=True)
        console.print(f"  rule: {planned.rule}", highlight=False, soft_wrap=True)
        for name, n in planned.simulated.items():
            found = f"{n}" if n is not None else "more than 5000"
            console.print(f"  {name}: {planned.have[name]} models now; resampling its errors, two "
                          f"samples of {found} models each fall within KS {planned.ks:g} of each "
                          f"other in {1 - planned.alpha:.0%} of draws", highlight=False,
                          soft_wrap=True)
        for (a, b), d in planned.detectable.items():
            can = (f"flags KS differences above {d:.3f}" if d < 1 else
                   f"can flag no KS difference (its critical value is {d:.2f}, above 1)")
            console.print(f"  {a} vs {b}: with today's samples the test {can}", highlight=False,
                          soft_wrap=True)


def _figure(value: float, digits: int = 2) -> str:
    return "–" if value != value else f"{value:.{digits}f}"


def _p_value(value: float) -> str:
    return "–" if value != value else f"{value:.3g}"
