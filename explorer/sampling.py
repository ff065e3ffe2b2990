"""Sampled design spaces (docs/CONVENTIONS.md, "Sampled design spaces"): per-stage draws, filtered.

Each candidate draws, for every stage, its depth, width, cardinality and bottleneck
width from the space's `sample.stages` (a field left out keeps the base model's
per-stage value; d is drawn per stage, never scaled by width), or in the AnyNet
parametrisation its bottleneck ratio b and group width g: the inner width w/b in groups
of g channels, made compatible with w as pycls's AnyNet does (`arch.anynet_stage`). A
regnet model draws its whole-network fields instead (`sample.regnet`), once per
candidate, and its stages are generated (`arch.regnet_arch`). The draws come from
one `numpy.random.default_rng(seed)` stream in a fixed order, in fixed-size batches,
so a seed gives the same candidates in the same order, and a smaller `n` gives a
prefix of a larger one's candidates (without `stratify`).

A draw is kept when, in this order: every `non_decreasing` field is, in the network
after the compatibility adjustment (rejection, not
sorting: the kept draws are uniform over the non-decreasing sequences, so a stage's
marginal is that distribution's, not the range's); the network is new (equal
per-stage values, equal network); it lies inside every constraint band; and its
stratum, an equal-width bin of the band of `stratify.by`, still has room. Bins get
n // bins candidates each, and the n % bins lowest bins one more.

Needs neither torch nor ray.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from explorer.arch import (
    Arch,
    BlockForm,
    Stage,
    Template,
    anynet_columns,
    make_arch,
    regnet_arch,
    regnet_stage_counts,
    stage_strides,
)
from explorer.complexity import Complexity, count, count_stages
from explorer.errors import SetupError
from explorer.spec import FloatRange, RegNetDraws, Sample, Spec, StageRange

__all__ = [
    "DRAWN",
    "DRAWS_PER_CANDIDATE",
    "FIELDS",
    "Drawn",
    "Proposal",
    "SampleReport",
    "SampleShortfall",
    "sample_space",
]

# The network's per-stage fields, as Arch holds them.
FIELDS = ("depths", "widths", "cardinality", "bottleneck_width")
# The drawn fields in the order they consume the generator: the network's, then the
# AnyNet parametrisation's (drawn only when the space names them).
DRAWN = (*FIELDS, "bottleneck_ratio", "group_width")
# A regnet model's drawn fields, in the order they consume the generator.
_REGNET_DRAWN = ("depth", "w_0", "w_a", "w_m", "group_width", "bottleneck_ratio")
_BATCH = 4096
# The draws a space may make: enough that a feasible region of 1/1000 of the space fills n.
DRAWS_PER_CANDIDATE = 1000
_MIN_DRAWS = 100_000

_Int64Array = np.ndarray[Any, np.dtype[np.int64]]


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


def _draw_values(rng: np.random.Generator, rule: StageRange | tuple[int, ...],
                size: tuple[int, int]) -> _Int64Array:
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


def _draw_floats(rng: np.random.Generator, rule: FloatRange | tuple[float, ...],
                rows: int) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Uniform (or log-uniform) reals on [low, high], rounded to a multiple of step; or a
    uniform pick from a list."""
    if isinstance(rule, FloatRange):
        if rule.log:
            values = np.exp(rng.uniform(np.log(rule.low), np.log(rule.high), rows))
        else:
            values = rng.uniform(rule.low, rule.high, rows)
        if rule.step is not None:
            values = np.clip(np.round(values / rule.step) * rule.step, rule.low, rule.high)
        return values
    choices = np.asarray(rule, dtype=np.float64)
    return choices[rng.integers(0, len(choices), rows)]


def _draw_batch(rng: np.random.Generator, sample: Sample, base: dict[str, tuple[int, ...]],
                rows: int) -> dict[str, _Int64Array]:
    """(rows, S) values of every network field, and of b and g where drawn; shared fields
    drawn once per row."""
    stages = len(base["depths"])
    drawn = sample.stages.present()
    out = {}
    for name in DRAWN:
        rule = drawn.get(name)
        if rule is None and name not in base:
            continue
        if rule is None:
            out[name] = np.broadcast_to(np.asarray(base[name], dtype=np.int64), (rows, stages))
        elif name in sample.shared:
            out[name] = np.repeat(_draw_values(rng, rule, (rows, 1)), stages, axis=1)
        else:
            out[name] = _draw_values(rng, rule, (rows, stages))
    return out


def _network_columns(values: dict[str, _Int64Array], drawn: Mapping[str, Any]
                    ) -> dict[str, _Int64Array]:
    """The network's per-stage depths, widths, C and d from the drawn values, and the
    drawn b and g: without b, g is d (C·d is the inner width); with b, the inner width
    is w/b in groups of g (drawn, else the stage's d), or of C groups when C is drawn
    and no group width is, each made compatible with w (`arch.anynet_columns`)."""
    out = dict(values)
    if "group_width" in drawn:
        out["bottleneck_width"] = values["group_width"]
    if "bottleneck_ratio" not in drawn:
        return out
    b = values["bottleneck_ratio"]
    if "cardinality" in drawn and not {"group_width", "bottleneck_width"} & set(drawn):
        out["widths"], d, out["cardinality"] = anynet_columns(values["widths"], b,
                                                              values["cardinality"])
        out["bottleneck_width"] = d
    else:
        out["widths"], out["cardinality"], out["bottleneck_width"] = anynet_columns(
            values["widths"], b, out["bottleneck_width"])
    out["group_width"] = out["bottleneck_width"]
    return out


def _stratum_quota(n: int, bins: int) -> list[int]:
    return [n // bins + (1 if b < n % bins else 0) for b in range(bins)]


def _strata(values: _Int64Array, band: tuple[float, float], bins: int) -> _Int64Array:
    """The equal-width bin of the band each value falls in (the top edge in the last bin)."""
    low, high = band
    index = np.floor((values.astype(np.float64) - low) / (high - low) * bins).astype(np.int64)
    return np.clip(index, 0, bins - 1)


def _inside(spec: Spec, costs: dict[str, _Int64Array]) -> np.ndarray[Any, np.dtype[np.bool_]]:
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


@dataclass(frozen=True)
class Proposal:
    """One batch of draws judged up to the constraints: `verdict` per row ("" so far for
    the rows in `index`, the new networks), their `costs`, and `arch(row)`."""

    verdict: np.ndarray[Any, np.dtype[np.object_]]
    index: _Int64Array
    costs: dict[str, _Int64Array]
    arch: Callable[[int], Arch]


_Proposer = Callable[[np.random.Generator, int], Proposal]


def sample_space(spec: Spec, space: str) -> Drawn:
    """The `n` distinct candidates of a sampled space; SampleShortfall when it has fewer."""
    sample = spec.spaces[space].sample
    assert sample is not None, f"space {space} is not sampled"
    propose = (_regnet_proposer(spec, sample) if spec.model.family == "regnet"
               else _stage_proposer(spec, sample))
    rng = np.random.default_rng(sample.seed)
    strat = sample.stratify
    band: tuple[float, float] | None = None
    if strat is not None:
        low, high = getattr(spec.constraints, strat.by)  # validated: two different bounds
        band = (float(low), float(high))
    room = _stratum_quota(sample.n, strat.bins) if strat is not None else [sample.n]
    max_draws = max(DRAWS_PER_CANDIDATE * sample.n, _MIN_DRAWS)
    archs: list[Arch] = []
    complexities: list[Complexity] = []
    rejected: Counter[str] = Counter()
    draws = 0
    while len(archs) < sample.n and draws < max_draws:
        rows = min(_BATCH, max_draws - draws)
        batch = propose(rng, rows)
        index, costs, verdict = batch.index, batch.costs, batch.verdict
        inside = _inside(spec, costs)
        strata = (_strata(costs[strat.by], band, strat.bins) if strat is not None and band
                  else np.zeros(len(index), dtype=np.int64))
        used = rows
        for j, i in enumerate(index):
            if not inside[j]:
                verdict[i] = "outside the constraints"
            elif room[strata[j]] == 0:
                verdict[i] = "in a full stratum"
            else:
                verdict[i] = ""
                room[strata[j]] -= 1
                archs.append(batch.arch(int(i)))
                complexities.append(Complexity(int(costs["params"][j]), int(costs["flops"][j]),
                                               int(costs["acts"][j])))
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


def _stage_proposer(spec: Spec, sample: Sample) -> _Proposer:
    """Per-stage draws of a resnext model, judged on numpy columns (count_stages)."""
    m = spec.model
    base_arch = make_arch(template=m.template, stem_width=m.stem_width, depths=m.depths,
                          widths=m.widths, cardinality=m.cardinality,
                          bottleneck_width=m.bottleneck_width, block=m.block)
    base = {"depths": base_arch.depths, "widths": base_arch.widths,
            "cardinality": base_arch.cardinalities, "bottleneck_width": base_arch.bottleneck_widths}
    seen: set[bytes] = set()

    def propose(rng: np.random.Generator, rows: int) -> Proposal:
        # Always a whole batch from the generator (the budget only cuts what is used), so the
        # draws for any n are the same stream and a smaller n gives a prefix of a larger one.
        drawn_values = {k: v[:rows] for k, v in _draw_batch(rng, sample, base, _BATCH).items()}
        values = _network_columns(drawn_values, sample.stages.present())
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
        verdict = np.full(rows, "out of order" if sample.non_decreasing else "", dtype=object)
        verdict[ordered] = "repeats"  # of a network drawn before (kept or not)
        verdict[index] = ""

        def arch(i: int) -> Arch:
            return _arch(m.template, m.stem_width, m.block, tuple(values[k][i] for k in FIELDS))

        return Proposal(verdict, index, {"params": params, "flops": flops, "acts": acts}, arch)

    return propose


def _regnet_proposer(spec: Spec, sample: Sample) -> _Proposer:
    """A regnet model's fields drawn once per candidate; each network generated
    (`arch.regnet_arch`) and counted with `count`: its number of stages is its own."""
    m = spec.model
    rules: RegNetDraws = sample.regnet or RegNetDraws()
    drawn = rules.present()
    base: dict[str, Any] = {"depth": m.depth, "w_0": m.w_0, "w_a": m.w_a, "w_m": m.w_m,
                            "group_width": m.group_width, "bottleneck_ratio": m.bottleneck_ratio}
    seen: set[Arch] = set()

    def propose(rng: np.random.Generator, rows: int) -> Proposal:
        columns: dict[str, np.ndarray] = {}
        for name in _REGNET_DRAWN:  # whole batches, as the stage proposer draws
            rule = drawn.get(name)
            if rule is None:
                columns[name] = np.full(_BATCH, base[name])
            elif name in ("w_a", "w_m"):
                columns[name] = _draw_floats(rng, rule, _BATCH)
            else:
                columns[name] = _draw_values(rng, rule, (_BATCH, 1))[:, 0]
        verdict = np.full(rows, "", dtype=object)
        stages = rules.num_stages
        if stages is not None:  # judged on columns first: most draws of a wide space fail it
            counts = regnet_stage_counts(columns["depth"][:rows], columns["w_0"][:rows],
                                         columns["w_a"][:rows], columns["w_m"][:rows], m.quantum)
            verdict[(counts < stages[0]) | (counts > stages[1])] = "another number of stages"
        archs: dict[int, Arch] = {}
        costs: list[Complexity] = []
        for i in np.flatnonzero(verdict == "").tolist():
            arch = regnet_arch(
                template=m.template, stem_width=m.stem_width, block=m.block,
                quantum=m.quantum, depth=int(columns["depth"][i]), w_0=int(columns["w_0"][i]),
                w_a=float(columns["w_a"][i]), w_m=float(columns["w_m"][i]),
                group_width=int(columns["group_width"][i]),
                bottleneck_ratio=int(columns["bottleneck_ratio"][i]))
            if arch in seen:
                verdict[i] = "repeats"
            else:
                seen.add(arch)
                archs[i] = arch
                costs.append(count(arch, spec.data.resolution, spec.num_classes))
        index = np.fromiter(archs, dtype=np.int64, count=len(archs))
        columns_of = {k: np.array([getattr(c, k) for c in costs], dtype=np.int64)
                      for k in ("params", "flops", "acts")}
        return Proposal(verdict, index, columns_of, archs.__getitem__)

    return propose
