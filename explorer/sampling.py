"""Sampled design spaces (docs/CONVENTIONS.md, "Sampled design spaces"): per-stage draws, filtered.

Each candidate draws, for every stage, its depth, width, cardinality and bottleneck
width from the space's `sample.stages` (a field left out keeps the base model's
per-stage value; d is drawn per stage, never scaled by width). The draws come from
one `numpy.random.default_rng(seed)` stream in a fixed order, in fixed-size batches,
so a seed gives the same candidates in the same order, and a smaller `n` gives a
prefix of a larger one's candidates (without `stratify`).

A draw is kept when, in this order: every `non_decreasing` field is (rejection, not
sorting: the kept draws are uniform over the non-decreasing sequences, so a stage's
marginal is that distribution's, not the range's); the network is new (equal
per-stage values, equal network); it lies inside every constraint band; and its
stratum, an equal-width bin of the band of `stratify.by`, still has room. Bins get
n // bins candidates each, and the n % bins lowest bins one more.

Needs neither torch nor ray.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from explorer.arch import Arch, BlockForm, Stage, Template, make_arch, stage_strides
from explorer.complexity import Complexity, count_stages
from explorer.errors import SetupError
from explorer.spec import Sample, Spec, StageRange

# The drawn fields in the order they consume the generator, and the Arch field of each.
FIELDS = ("depths", "widths", "cardinality", "bottleneck_width")
BATCH = 4096
# The draws a space may make: enough that a feasible region of 1/1000 of the space fills n.
DRAWS_PER_CANDIDATE = 1000
MIN_DRAWS = 100_000

Int64Array = np.ndarray[Any, np.dtype[np.int64]]


class SampleShortfall(SetupError):
    """A sampled space that cannot yield its `n` distinct candidates; one line for people."""


@dataclass(frozen=True)
class SampleReport:
    """How a sampled space was drawn: draws made and why the others were rejected."""

    space: str
    n: int
    draws: int
    rejected: Mapping[str, int] = field(default_factory=dict)

    @property
    def acceptance(self) -> float:
        """Kept candidates per draw."""
        return self.n / self.draws if self.draws else 0.0

    def summary(self) -> str:
        reasons = ", ".join(f"{count:,} {why}" for why, count in self.rejected.items() if count)
        return (f"{self.space}: sampled {self.n} candidates in {self.draws:,} draws "
                f"(acceptance {100 * self.acceptance:.2f}%"
                + (f"; rejected: {reasons}" if reasons else "") + ")")


@dataclass(frozen=True)
class Drawn:
    """A sampled space's candidates, in draw order, with their exact complexity."""

    archs: tuple[Arch, ...]
    complexities: tuple[Complexity, ...]
    report: SampleReport


def _arch(template: Template, stem_width: int, block: BlockForm, per_stage: Any) -> Arch:
    depths, widths, cardinalities, ds = per_stage
    strides = stage_strides(template, len(depths))
    stages = tuple(
        Stage(depth=int(n), width=int(w), cardinality=int(c), bottleneck_width=int(d), stride=s)
        for n, w, c, d, s in zip(depths, widths, cardinalities, ds, strides, strict=True))
    return Arch(template=template, stem_width=stem_width, stages=stages, block=block)


def draw_values(rng: np.random.Generator, rule: StageRange | tuple[int, ...],
                size: tuple[int, int]) -> Int64Array:
    """Uniform over a list or a range's steps; log-uniform for `log: true`.

    Log-uniform integers are the continuous log-uniform on [low, high + 1) rounded
    down: v has probability log((v + 1) / v) / log((high + 1) / low).
    """
    if isinstance(rule, StageRange):
        if rule.log:
            u = rng.uniform(np.log(rule.low), np.log(rule.high + 1), size)
            return np.clip(np.floor(np.exp(u)), rule.low, rule.high).astype(np.int64)
        steps = (rule.high - rule.low) // rule.step + 1
        return rule.low + rule.step * rng.integers(0, steps, size, dtype=np.int64)
    values = np.asarray(rule, dtype=np.int64)
    return values[rng.integers(0, len(values), size)]


def _draw_batch(rng: np.random.Generator, sample: Sample, base: dict[str, tuple[int, ...]],
                rows: int) -> dict[str, Int64Array]:
    """(rows, S) values of every field; shared fields drawn once per row."""
    stages = len(base["depths"])
    drawn = sample.stages.present()
    out = {}
    for name in FIELDS:
        rule = drawn.get(name)
        if rule is None:
            out[name] = np.broadcast_to(np.asarray(base[name], dtype=np.int64), (rows, stages))
        elif name in sample.shared:
            out[name] = np.repeat(draw_values(rng, rule, (rows, 1)), stages, axis=1)
        else:
            out[name] = draw_values(rng, rule, (rows, stages))
    return out


def _stratum_quota(n: int, bins: int) -> list[int]:
    return [n // bins + (1 if b < n % bins else 0) for b in range(bins)]


def _strata(values: Int64Array, band: tuple[float, float], bins: int) -> Int64Array:
    """The equal-width bin of the band each value falls in (the top edge in the last bin)."""
    low, high = band
    index = np.floor((values.astype(np.float64) - low) / (high - low) * bins).astype(np.int64)
    return np.clip(index, 0, bins - 1)


def _inside(spec: Spec, costs: dict[str, Int64Array]) -> np.ndarray[Any, np.dtype[np.bool_]]:
    keep = np.ones(len(costs["params"]), dtype=bool)
    for name, band in spec.constraints:
        if band is None:
            continue
        low, high = band
        if low is not None:
            keep &= costs[name] >= low
        if high is not None:
            keep &= costs[name] <= high
    return keep


def sample_space(spec: Spec, space: str) -> Drawn:
    """The `n` distinct candidates of a sampled space; SampleShortfall when it has fewer."""
    sample = spec.spaces[space].sample
    assert sample is not None, f"space {space} is not sampled"
    m = spec.model
    base_arch = make_arch(template=m.template, stem_width=m.stem_width, depths=m.depths,
                          widths=m.widths, cardinality=m.cardinality,
                          bottleneck_width=m.bottleneck_width, block=m.block)
    base = {"depths": base_arch.depths, "widths": base_arch.widths,
            "cardinality": base_arch.cardinalities, "bottleneck_width": base_arch.bottleneck_widths}
    rng = np.random.default_rng(sample.seed)
    strat = sample.stratify
    band: tuple[float, float] | None = None
    if strat is not None:
        low, high = getattr(spec.constraints, strat.by)  # validated: two different bounds
        band = (float(low), float(high))
    room = _stratum_quota(sample.n, strat.bins) if strat is not None else [sample.n]
    max_draws = max(DRAWS_PER_CANDIDATE * sample.n, MIN_DRAWS)
    seen: set[bytes] = set()
    archs: list[Arch] = []
    complexities: list[Complexity] = []
    rejected: Counter[str] = Counter()
    draws = 0
    while len(archs) < sample.n and draws < max_draws:
        rows = min(BATCH, max_draws - draws)
        # Always a whole batch from the generator (the budget only cuts what is used), so the
        # draws for any n are the same stream and a smaller n gives a prefix of a larger one.
        values = {k: v[:rows] for k, v in _draw_batch(rng, sample, base, BATCH).items()}
        ordered = np.ones(rows, dtype=bool)
        for name in sample.non_decreasing:
            ordered &= np.all(np.diff(values[name], axis=1) >= 0, axis=1)
        stacked = np.stack([values[k] for k in FIELDS], axis=1)  # (rows, fields, S)
        new: list[int] = []
        for i in np.flatnonzero(ordered):
            key = stacked[i].tobytes()
            if key not in seen:  # every network met is judged once: its verdict never changes
                seen.add(key)
                new.append(int(i))
        index = np.asarray(new, dtype=np.int64)
        params, flops, acts = count_stages(
            template=m.template, stem_width=m.stem_width, block=m.block,
            depths=values["depths"][index], widths=values["widths"][index],
            cardinalities=values["cardinality"][index],
            bottleneck_widths=values["bottleneck_width"][index],
            resolution=spec.data.resolution, num_classes=spec.num_classes)
        costs = {"params": params, "flops": flops, "acts": acts}
        inside = _inside(spec, costs)
        strata = (_strata(costs[strat.by], band, strat.bins) if strat is not None and band
                  else np.zeros(len(index), dtype=np.int64))
        verdict = np.full(rows, "out of order" if sample.non_decreasing else "", dtype=object)
        verdict[ordered] = "repeats"  # of a network drawn before (kept or not)
        used = rows
        for j, i in enumerate(index):
            if not inside[j]:
                verdict[i] = "outside the constraints"
            elif room[strata[j]] == 0:
                verdict[i] = "in a full stratum"
            else:
                verdict[i] = ""
                room[strata[j]] -= 1
                archs.append(_arch(m.template, m.stem_width, m.block,
                                   tuple(values[k][i] for k in FIELDS)))
                complexities.append(Complexity(int(params[j]), int(flops[j]), int(acts[j])))
                if len(archs) == sample.n:
                    used = int(i) + 1
                    break
        rejected.update(v for v in verdict[:used] if v)
        draws += used
    report = SampleReport(space, len(archs), draws, dict(sorted(rejected.items())))
    if len(archs) < sample.n:
        raise SampleShortfall(
            f"spaces.{space}.sample.n: the space yielded {len(archs)} distinct candidates in "
            f"{draws:,} draws, fewer than n = {sample.n}; lower n or widen the ranges or the "
            "constraints")
    return Drawn(tuple(archs), tuple(complexities), report)
