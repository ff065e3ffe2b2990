"""What a trial reports, defined once: each epoch's metrics, how a trial ended, its statuses.

The sweep's reports, the store's columns and casts, and the analysis's frames
all derive their field lists from the dataclasses here. Adding an epoch metric
is one field in `EpochMetrics` (plus the store migration that adds its
column); a field's metadata says whether the trials table carries its last
epoch's value too (`final`), or whether it is bookkeeping no one stores
(`stored: False`).

Needs neither torch, ray nor the store.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

__all__ = [
    "EPOCH_METRICS",
    "EPOCH_REPORT",
    "FINAL",
    "FINAL_REPORT",
    "INTEGER_METRICS",
    "OUTCOMES",
    "PROVENANCE",
    "PROVENANCE_TYPES",
    "SHOWN_STATUSES",
    "STATUSES",
    "TRIAL_METRICS",
    "EpochMetrics",
    "Provenance",
    "Status",
    "TrialResult",
    "outcome",
]


class Status(str, Enum):
    """A trial's status: pending -> running -> finished (every planned epoch) | stopped (ended
    early by the scheduler, e.g. ASHA; epochs_completed says where) | failed (with the
    reason). Only finished trials are skipped on a rerun or reused by another experiment.

    A str: the store keeps the value, and a member equals its value ("finished").
    """

    PENDING = "pending"
    RUNNING = "running"
    FINISHED = "finished"
    STOPPED = "stopped"
    FAILED = "failed"

    def __str__(self) -> str:  # the value, in f-strings too (not "Status.FINISHED")
        return self.value


STATUSES: tuple[Status, ...] = tuple(Status)
# The order tables and captions list them in: results first, then work left, then problems.
SHOWN_STATUSES: tuple[Status, ...] = (Status.FINISHED, Status.RUNNING, Status.PENDING,
                                      Status.STOPPED, Status.FAILED)
# How a trial can end; the others are states on the way.
OUTCOMES: frozenset[Status] = frozenset({Status.FINISHED, Status.STOPPED, Status.FAILED})


def outcome(*, failed: bool, epochs_completed: int = 0, planned_epochs: int = 0) -> Status:
    """How a trial ended, decided here for the trainer and the sweep alike: failed when it
    failed; stopped when it ended before its planned epochs without failing (the scheduler
    stopped it); finished otherwise."""
    if failed:
        return Status.FAILED
    return Status.STOPPED if epochs_completed < planned_epochs else Status.FINISHED


# An epoch metric whose last value is also a column of the trial.
FINAL = {"final": True}


@dataclass(frozen=True)
class EpochMetrics:
    """One epoch's report. Errors are in percent; `peak_memory_bytes` is None on CPU.

    `train_loss` and `train_error` are over the epoch's (augmented) batches as
    the model was updated, the usual running figures; `seconds` covers
    training and evaluation, `train_images_per_sec` training only. `steps`
    counts the trial's optimizer steps so far (the trainer's bookkeeping).
    """

    epoch: int
    train_loss: float = field(metadata=FINAL)
    train_error: float = field(metadata=FINAL)
    test_error: float = field(metadata=FINAL)
    test_top5_error: float = field(metadata=FINAL)
    lr: float
    seconds: float
    train_images_per_sec: float = field(metadata=FINAL)
    peak_memory_bytes: int | None
    steps: int = field(metadata={"stored": False})

    def same_result(self, other: EpochMetrics) -> bool:
        """Equal in everything a rerun must reproduce (not the timings)."""
        return all(getattr(self, k) == getattr(other, k) for k in _REPRODUCIBLE)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Provenance:
    """What actually ran, as the trainer resolved it (bf16 asked for on a CPU runs as fp32).

    Reported when training starts, and stored with the trial beside the Ray
    node it ran on and how many attempts it took.
    """

    device: str
    gpu_name: str | None
    precision: str
    channels_last: bool
    compiled: bool
    torch_version: str
    resumed_from_epoch: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TrialResult:
    """How a trial ended. `metrics` is the last completed epoch's, if any."""

    status: Status  # finished or failed: the trainer never stops a trial early
    error: str | None
    metrics: EpochMetrics | None
    history: tuple[EpochMetrics, ...]
    epochs_completed: int
    steps: int
    seed: int
    provenance: Provenance

    @property
    def device(self) -> str:
        return self.provenance.device

    @property
    def precision(self) -> str:
        return self.provenance.precision

    @property
    def resumed_from_epoch(self) -> int:
        return self.provenance.resumed_from_epoch

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_EPOCH_FIELDS = dataclasses.fields(EpochMetrics)
_EPOCH_TYPES = typing.get_type_hints(EpochMetrics)

# The metrics stored per epoch, by column name (`epoch` is the row's key, not a metric).
EPOCH_METRICS: tuple[str, ...] = tuple(
    f.name for f in _EPOCH_FIELDS if f.name != "epoch" and f.metadata.get("stored", True))
# Those that are whole numbers (stored as integers, read back as nullable Int64).
INTEGER_METRICS: frozenset[str] = frozenset(
    name for name in EPOCH_METRICS
    if int in (_EPOCH_TYPES[name], *typing.get_args(_EPOCH_TYPES[name])))
# What the sweep reports for an epoch: its number and every stored metric.
EPOCH_REPORT: tuple[str, ...] = ("epoch", *EPOCH_METRICS)
# Figures of the whole trial besides its last epoch's: the sum of the epochs' seconds
# (a trial's training time) and how many epochs it completed.
_TRIAL_TOTALS: tuple[str, ...] = ("epochs_completed", "seconds")
# The trial row's metrics: the final epoch's (`final` fields) and the totals.
TRIAL_METRICS: tuple[str, ...] = (
    *(f.name for f in _EPOCH_FIELDS if f.metadata.get("final")), *_TRIAL_TOTALS)
# What the store keeps of a trial's provenance: the trainer's (but `device`, which the
# trial row already has as DEVICE@NODE) and the Ray node's id.
PROVENANCE: tuple[str, ...] = (
    *(f.name for f in dataclasses.fields(Provenance) if f.name != "device"), "node")
_PROVENANCE_HINTS = typing.get_type_hints(Provenance)
# The plain type of each provenance field (None allowed for every one in the store).
PROVENANCE_TYPES: dict[str, type] = {
    **{name: next(t for t in (_PROVENANCE_HINTS[name], *typing.get_args(_PROVENANCE_HINTS[name]))
                  if t in (bool, int, str))
       for name in PROVENANCE if name in _PROVENANCE_HINTS},
    "node": str,
}
# What the sweep reports when a trial ends: its last epoch and the totals.
FINAL_REPORT: tuple[str, ...] = (*EPOCH_REPORT, *_TRIAL_TOTALS)
# What a rerun of the same trial must reproduce exactly (everything but timings and memory).
_REPRODUCIBLE: tuple[str, ...] = ("epoch", "train_loss", "train_error", "test_error",
                                 "test_top5_error", "lr")
