"""The terminal UI of the CLI: the progress bars of ``explorer train`` and ``explorer cost``.

The library (`explorer.train`, `explorer.cost`) reports through callbacks and
never draws; this module turns those callbacks into rich displays. Modules
that load torch are imported inside functions or for type checking only, so
importing this one stays cheap for commands that draw without training.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from explorer.arch import Arch
from explorer.metrics import EpochMetrics, TrialResult
from explorer.spec import DataSpec, TrainSpec

if TYPE_CHECKING:
    import torch

    from explorer.cost import CostRow
    from explorer.data import Dataset


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
    data: Dataset | DataSpec,
    recipe: TrainSpec,
    *,
    seed: int | None = None,
    epochs: int | None = None,
    device: str | torch.device = "auto",
    checkpoint_dir: str | Path | None = None,
    max_steps: int | None = None,
    console: Console | None = None,
    title: str | None = None,
) -> TrialResult:
    """`train_trial` with a progress bar: what ``explorer train`` runs.

    `seed` defaults to the recipe's first; `epochs` overrides the recipe's
    (a different recipe, so a different trial; the warm-up is cut to fit).
    One line per epoch is printed above the bar so a finished run leaves its
    history on screen.
    """
    from explorer.data import load_dataset
    from explorer.train import revise, train_trial

    out = console or stderr_console()
    if epochs is not None:
        recipe = revise(recipe, epochs=epochs, warmup_epochs=min(recipe.warmup_epochs, epochs))
    trial_seed = recipe.seeds[0] if seed is None else seed
    if isinstance(data, DataSpec):
        with out.status(f"loading {data.dataset}…"):
            data = load_dataset(data)
    with EpochBar(out, title or arch.label(), recipe.epochs) as bar:
        result = train_trial(
            arch, data, recipe, seed=trial_seed, device=device, checkpoint_dir=checkpoint_dir,
            max_steps=max_steps, on_epoch=bar.epoch_done, on_step=bar.step,
        )
    if result.resumed_from_epoch:
        out.print(f"resumed from epoch {result.resumed_from_epoch} in {checkpoint_dir}")
    if result.status == "failed":
        out.print(f"[red]trial failed:[/red] {result.error}")
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
