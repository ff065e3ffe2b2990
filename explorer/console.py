"""The terminal UI of the CLI: the progress bars of ``explorer train`` and ``explorer cost``,
and the live status of ``explorer run``.

The library (`explorer.train`, `explorer.cost`, `explorer.experiment`) reports
through callbacks and never draws; this module turns those callbacks into rich
displays. Modules
that load torch are imported inside functions or for type checking only, so
importing this one stays cheap for commands that draw without training.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

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
from explorer.metrics import EpochMetrics, Status, TrialResult
from explorer.spec import DataSpec, TrainSpec

if TYPE_CHECKING:
    import torch

    from explorer.cost import CostRow
    from explorer.data import Dataset, ImageFiles
    from explorer.experiment import PlanSummary
    from explorer.train import ModelBuilder


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
