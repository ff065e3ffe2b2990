"""Measured cost of a candidate on the current device: latency, throughput, memory.

Complexity counts (flops, params) predict cost only roughly: grouped
convolutions, for one, run far below their flop rate on most hardware. So
the explorer also measures, on the device at hand:

- latency: forward of one image (batch 1, eval mode, no grad), median of
  `repeats` timed runs after `warmup` untimed ones;
- training throughput: images/s of full SGD steps at the recipe's batch
  size, precision and memory format, including the trainer's on-device
  augmentation and normalisation (the same code path as `train_trial`);
- timing: on CUDA by CUDA events recorded in the stream (the GPU's own clock,
  read once at the end of a timed region, so no host synchronisation sits
  inside it); on CPU by the wall clock;
- peak memory: CUDA ``max_memory_allocated`` over the training steps. On CPU
  it is None: the process RSS high-water mark cannot be reset between
  candidates, and its deltas mostly measure the allocator, not the model.

The terminal's progress bar for ``explorer cost`` is `explorer.console`'s,
fed by `measure_costs`'s callbacks.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from explorer.arch import Arch
from explorer.data import ResidentFeed, crop_pad, make_synthetic, random_crop_flip
from explorer.spec import TrainSpec
from explorer.train import (
    ModelBuilder,
    TrialSetup,
    TrialState,
    autocast,
    make_setup,
    make_state,
    release_memory,
    resolve_device,
    resolve_precision,
    synchronize,
    train_step,
    trial_settings,
)

__all__ = [
    "Cost",
    "CostRow",
    "CudaTimer",
    "Timing",
    "WallTimer",
    "measure_cost",
    "measure_costs",
    "timer",
]


@dataclass(frozen=True)
class Cost:
    """One candidate's measured cost; `peak_memory_bytes` is None on CPU."""

    device: str
    resolution: int
    batch_size: int
    precision: str
    latency_ms: float
    train_images_per_sec: float
    peak_memory_bytes: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_CandidateCallback = Callable[[str, Arch], None]
_RowCallback = Callable[["CostRow"], None]


@dataclass(frozen=True)
class CostRow:
    """A measured (or failed) candidate, as ``explorer cost`` lists them."""

    key: str
    label: str
    cost: Cost | None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "label": self.label,
            "error": self.error,
            **(self.cost.to_dict() if self.cost else {}),
        }


@dataclass(frozen=True)
class Timing:
    """How a cost is measured: the input's shape, the device, how many runs of each kind."""

    num_classes: int = 10
    resolution: int = 32
    device: str = "auto"
    warmup: int = 3
    repeats: int = 20
    train_steps: int = 5


def measure_cost(
    arch: Arch,
    recipe: TrainSpec,
    timing: Timing = Timing(),  # frozen: one shared default is safe
    *,
    seed: int = 0,
    cpu_low_precision: bool = False,
    build: ModelBuilder | None = None,
) -> Cost:
    """Measure `arch` on the timing's device with the recipe's batch size, precision and
    layout.

    Uses synthetic uint8 data of the right shape: cost does not depend on
    pixel values, and no dataset has to be present.
    """
    dev = resolve_device(timing.device)
    precision = resolve_precision(recipe.precision, dev, cpu_low_precision=cpu_low_precision)
    data = make_synthetic(
        num_classes=timing.num_classes, resolution=timing.resolution,
        train_size=recipe.batch_size, test_size=1, seed=seed,
    )
    with trial_settings(dev):
        try:
            # The model and its data live only in this call's frame.
            setup = make_setup(data, recipe, dev, precision, augment=True)
            state = make_state(arch, timing.num_classes, recipe, seed, dev, precision, build)
            throughput, peak = _train_throughput(setup, state, timing.warmup, timing.train_steps)
            latency = _latency_ms(setup, state, timing.warmup, timing.repeats)
            del setup, state
        finally:
            release_memory(dev)
    return Cost(
        device=str(dev),
        resolution=timing.resolution,
        batch_size=recipe.batch_size,
        precision=precision,
        latency_ms=latency,
        train_images_per_sec=throughput,
        peak_memory_bytes=peak,
    )


def _train_throughput(
    setup: TrialSetup, state: TrialState, warmup: int, steps: int
) -> tuple[float, int | None]:
    """Images/s over `steps` SGD steps after `warmup` untimed ones (same batch each time)."""
    dev = setup.device
    feed = _resident(setup)
    pad = crop_pad(feed.train_images.shape[-1])
    images, labels = feed.train_images, feed.train_labels

    def step() -> None:
        x = setup.normalize(random_crop_flip(images, pad, state.generator))
        train_step(setup, state, x, labels)

    for _ in range(max(1, warmup)):
        step()
    synchronize(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    clock = timer(dev)
    clock.start()
    for _ in range(steps):
        step()
    seconds = clock.seconds()
    peak = int(torch.cuda.max_memory_allocated(dev)) if dev.type == "cuda" else None
    return steps * labels.numel() / seconds, peak


class WallTimer:
    """Seconds by the host's clock, the device synchronised at the end (CPU: a no-op)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.begin = 0.0

    def start(self) -> None:
        self.begin = time.perf_counter()

    def seconds(self) -> float:
        synchronize(self.device)
        return time.perf_counter() - self.begin


class CudaTimer:
    """Seconds between two CUDA events recorded in the current stream: what the GPU
    spent, read once the end event has completed."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.begin = torch.cuda.Event(enable_timing=True)
        self.end = torch.cuda.Event(enable_timing=True)

    def start(self) -> None:
        self.begin.record(torch.cuda.current_stream(self.device))

    def seconds(self) -> float:
        self.end.record(torch.cuda.current_stream(self.device))
        self.end.synchronize()
        return float(self.begin.elapsed_time(self.end)) / 1000.0


def timer(device: torch.device) -> WallTimer | CudaTimer:
    return CudaTimer(device) if device.type == "cuda" else WallTimer(device)


def _resident(setup: TrialSetup) -> ResidentFeed:
    # measure_cost builds its setup from synthetic data, which is always resident.
    assert isinstance(setup.feed, ResidentFeed)
    return setup.feed


@torch.no_grad()
def _latency_ms(setup: TrialSetup, state: TrialState, warmup: int, repeats: int) -> float:
    """Median batch-1 forward time in milliseconds, eval mode."""
    dev = setup.device
    state.model.eval()
    x = setup.normalize(_resident(setup).test_images[:1])
    times = []
    clock = timer(dev)
    for i in range(warmup + repeats):
        synchronize(dev)  # each forward starts on an idle device
        clock.start()
        with autocast(dev, setup.precision):
            state.forward(x)
        elapsed = clock.seconds()
        if i >= warmup:
            times.append(elapsed)
    state.model.train()
    return 1000.0 * statistics.median(times)


def measure_costs(
    items: Sequence[tuple[str, Arch]],
    recipe: TrainSpec,
    timing: Timing = Timing(),  # frozen: one shared default is safe
    *,
    on_candidate: _CandidateCallback | None = None,
    on_row: _RowCallback | None = None,
) -> list[CostRow]:
    """Measure several candidates (key, arch): what ``explorer cost`` runs.

    Candidates are measured one after another in one process (never
    concurrently: they would compete for the device). One that runs out of
    memory is reported as a row with the error and the rest continue.
    `on_candidate(key, arch)` runs before each measurement and `on_row(row)`
    after it, so a caller can show progress.
    """
    rows: list[CostRow] = []
    for key, arch in items:
        if on_candidate is not None:
            on_candidate(key, arch)
        try:
            cost = measure_cost(arch, recipe, timing)
            row = CostRow(key, arch.label(), cost)
        except torch.OutOfMemoryError as exc:
            first = str(exc).splitlines()[0] if str(exc) else "out of memory"
            row = CostRow(key, arch.label(), None, f"out of memory: {first}")
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return rows
