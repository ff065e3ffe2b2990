"""A space's records: a Candidate, a point Dropped and why, an Enumeration, a Batch of
candidates as numpy columns; and every reason a point is dropped, worded once here for
both engines (explorer.space.point and explorer.space.stream)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from explorer.arch import Arch, Stage, stage_strides
from explorer.columns import COLUMNS
from explorer.complexity import Complexity
from explorer.sampling import SampleReport

if TYPE_CHECKING:
    from explorer.spec import Solve

__all__ = [
    "ROUNDS_TO_ZERO_REASON",
    "SAME_NETWORK_KIND",
    "Batch",
    "Candidate",
    "Dropped",
    "Enumeration",
    "constraint_reason",
    "no_valid_reason",
    "reason_kind",
    "same_network_reason",
    "tolerance_kind",
    "tolerance_reason",
]


@dataclass(frozen=True)
class Candidate:
    """One network of a space, with its complexity relative to the base model."""

    space: str
    arch: Arch
    complexity: Complexity
    base: Complexity
    solved: str | None = None

    @property
    def key(self) -> str:
        return self.arch.key

    @property
    def params_deviation(self) -> float:
        """Percent above (+) or below (-) the base model's params."""
        return 100.0 * (self.complexity.params - self.base.params) / self.base.params

    @property
    def flops_deviation(self) -> float:
        return 100.0 * (self.complexity.flops - self.base.flops) / self.base.flops

    def row(self) -> dict[str, Any]:
        """A flat record for tables, CSV and the store: explorer.columns' columns."""
        return {column.name: column.of_candidate(self) for column in COLUMNS}


@dataclass(frozen=True)
class Dropped:
    """A point of a space that will not train, and why."""

    space: str
    values: Mapping[str, Any]
    reason: str


@dataclass(frozen=True)
class Enumeration:
    base: Candidate
    candidates: tuple[Candidate, ...]
    dropped: tuple[Dropped, ...] = field(default=())
    samples: tuple[SampleReport, ...] = field(default=())  # one per sampled space

    def in_space(self, name: str) -> tuple[Candidate, ...]:
        return tuple(c for c in self.candidates if c.space == name)

    def by_key(self) -> dict[str, Candidate]:
        return {c.key: c for c in self.candidates}


@dataclass(frozen=True)
class Batch:
    """Consecutive candidates of one space as columns (per-stage ones are (n, stages))."""

    space: str
    template: str
    solved: str | None
    blocks: tuple[str, ...]
    stem_width: np.ndarray
    depths: np.ndarray
    widths: np.ndarray
    cardinalities: np.ndarray
    bottleneck_widths: np.ndarray
    params: np.ndarray
    flops: np.ndarray
    acts: np.ndarray
    params_deviation: np.ndarray
    flops_deviation: np.ndarray
    keys: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def group_widths(self) -> np.ndarray:
        return self.cardinalities * self.bottleneck_widths

    def arch(self, i: int) -> Arch:
        strides = stage_strides(self.template, self.depths.shape[1])  # type: ignore[arg-type]
        stages = tuple(
            Stage(depth=int(n), width=int(w), cardinality=int(c), bottleneck_width=int(d),
                  stride=s)
            for n, w, c, d, s in zip(self.depths[i], self.widths[i], self.cardinalities[i],
                                     self.bottleneck_widths[i], strides, strict=True))
        return Arch(template=self.template, stem_width=int(self.stem_width[i]),  # type: ignore[arg-type]
                    stages=stages, block=self.blocks[i])  # type: ignore[arg-type]

    def candidates(self, base: Complexity) -> list[Candidate]:
        """The batch as Candidate records, relative to the base model's complexity."""
        costs = zip(self.params.tolist(), self.flops.tolist(), self.acts.tolist(), strict=True)
        return [Candidate(self.space, self.arch(i), Complexity(*cost), base, self.solved)
                for i, cost in enumerate(costs)]

    def rows(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The first `limit` (default all) candidates as Candidate.row() records."""
        n = len(self) if limit is None else min(limit, len(self))
        values = {column.name: _first_rows(column.of_batch(self), n) for column in COLUMNS}
        return [{name: column[i] for name, column in values.items()} for i in range(n)]


def _first_rows(column: Any, n: int) -> list[Any]:
    """The first n rows of a Batch's column as Python values: an array's or a sequence's,
    or the one value the whole batch shares, repeated."""
    if isinstance(column, np.ndarray):
        return column[:n].tolist()
    if isinstance(column, list | tuple):
        return list(column[:n])
    return [column] * n


# --- why a point is dropped: each reason worded once ------------------------------------

ROUNDS_TO_ZERO_REASON = "a stage's bottleneck width rounds to 0"
SAME_NETWORK_KIND = "same network as an earlier candidate"


def no_valid_reason(rule: Solve) -> str:
    return f"no valid {rule.field} in [{rule.low}, {rule.high}]"


def same_network_reason(key: str) -> str:
    return f"same network as candidate {key}"


def tolerance_reason(rule: Solve, deviation: float, value: object) -> str:
    return (f"{rule.preserve} {deviation:+.1f}% from the base model at the closest "
            f"{rule.field}={value}, beyond the tolerance of ±{100 * rule.tolerance:g}%")


def tolerance_kind(rule: Solve) -> str:
    """tolerance_reason without the point's own figures, for counting drops."""
    return f"{rule.preserve} beyond the tolerance of ±{100 * rule.tolerance:g}%"


def constraint_reason(name: str, side: str, bound: float, value: float | None = None) -> str:
    """A count `side` ("below" or "above") a constraint's `bound`; without `value`, the
    reason without the point's own figure, for counting drops."""
    figure = "" if value is None else f" {value:.4g}"
    return f"{name}{figure} {side} the constraint's {bound:.4g}"


# A drop's reason without the point's own figures (as the kinds above word it): the
# measured value before below/above, the deviation and value before "beyond", the key.
_REASON_FIGURES = (
    (re.compile(r"^(params|flops|acts) \S+ (below|above) "), r"\1 \2 "),
    (re.compile(r"^(params|flops) \S+ from the base model at the closest \S+, beyond"),
     r"\1 beyond"),
    (re.compile(r"^same network as candidate \S+$"), SAME_NETWORK_KIND),
)


def reason_kind(reason: str) -> str:
    """A reason `realise` gives, as the counts by reason name it."""
    for pattern, replacement in _REASON_FIGURES:
        reason = pattern.sub(replacement, reason)
    return reason
