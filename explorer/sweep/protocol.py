"""What the driver and a trial's worker agree on: the sweep's options, the config a
worker gets (`trial_config`), the kinds of report a worker sends, and the `Sink` the driver
tells what happened (the runner's writes the store)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from explorer.metrics import Status
from explorer.plan import TrialPlan
from explorer.space import Candidate
from explorer.spec import DataSpec, ResourcesSpec

__all__ = [
    "EPOCH", "FINAL", "HALT", "NOTICE", "PROVENANCE", "START", "Sink", "SweepOptions",
    "trial_config",
]


# The kinds of report a trial sends: where it runs (before anything loads), what runs
# (once the model is built), a line for the person watching (a damaged checkpoint set
# aside), each epoch, and how it ended; or, instead of an end, a problem every trial would
# meet (its checkpoint could not be written), which stops the sweep.
START = "start"
PROVENANCE = "provenance"
NOTICE = "notice"
EPOCH = "epoch"
FINAL = "final"
HALT = "halt"


@dataclass(frozen=True)
class SweepOptions:
    runs_dir: Path
    experiment: str
    address: str | None = None  # the cluster to join: --address, else resources.address
    resources: ResourcesSpec = field(default_factory=ResourcesSpec)  # the spec's, as it is
    early_stopping: str = "none"
    max_steps: int | None = None
    num_cpus: int | None = None
    log_file: Path | None = None
    fail_trial: str | None = None
    data: DataSpec | None = None  # the sweep's data, loaded once and shared (None: per worker)

    @property
    def checkpoint_root(self) -> Path:
        return self.runs_dir / "checkpoints"


class Sink(Protocol):
    """Where a sweep's events go; the runner's implementation writes the store."""

    def trial_planned(self, plan: TrialPlan, candidate: Candidate | None) -> None: ...

    def trial_started(self, trial_key: str, node: str, device: str) -> None: ...

    def trial_provenance(self, trial_key: str, provenance: Mapping[str, Any]) -> None: ...

    def notice(self, trial_key: str, message: str) -> None: ...

    def epoch(self, trial_key: str, metrics: Mapping[str, Any]) -> None: ...

    def trial_ended(self, trial_key: str, status: Status, metrics: Mapping[str, Any],
                    error: str | None, history: Sequence[Mapping[str, Any]]) -> None: ...

    def tick(self) -> None: ...


def trial_config(plan: TrialPlan, options: SweepOptions) -> dict[str, Any]:
    """What a worker gets: the plan as primitives and where to checkpoint."""
    return {
        "plan": plan.to_config(),
        "checkpoint_root": str(options.checkpoint_root.resolve()),
        "max_steps": options.max_steps,
        "fail_trial": options.fail_trial,
        # Loader processes of a streamed folder: one per CPU the trial holds.
        "workers": max(1, int(options.resources.cpus_per_trial)),
    }
