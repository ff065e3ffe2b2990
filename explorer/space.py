"""Candidates of a spec's design spaces, with exact complexity, before any training.

Per named space: the grid product of its axes applied to the base model; a
`solve` picks the solved field per candidate so its params or flops come
closest to the base model's; `tolerance` and the absolute `constraints` drop
the rest, each with a reason. Needs neither torch nor ray.
"""

from __future__ import annotations

import gc
import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from explorer.arch import Arch, make_arch
from explorer.complexity import Complexity, count
from explorer.sampling import SampleReport, sample_space
from explorer.spec import Range, Solve, SpaceSpec, Spec

# The axes a space may vary, in the order tables show them.
AXIS_FIELDS = ("depths", "widths", "stem_width", "cardinality", "bottleneck_width", "block")


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
        """A flat record for tables, CSV and the store."""
        a, c = self.arch, self.complexity
        return {
            "space": self.space,
            "key": self.key,
            "template": a.template,
            "block": a.block,
            "depths": list(a.depths),
            "widths": list(a.widths),
            "stem_width": a.stem_width,
            "cardinality": a.stages[0].cardinality,
            "bottleneck_width": a.stages[0].bottleneck_width,
            "group_widths": list(a.group_widths),
            "cardinalities": list(a.cardinalities),
            "bottleneck_widths": list(a.bottleneck_widths),
            "params": c.params,
            "flops": c.flops,
            "acts": c.acts,
            "params_deviation_pct": round(self.params_deviation, 3),
            "flops_deviation_pct": round(self.flops_deviation, 3),
            "solved": self.solved,
        }


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


def base_values(spec: Spec) -> dict[str, Any]:
    m = spec.model
    return {
        "depths": m.depths, "widths": m.widths, "stem_width": m.stem_width,
        "cardinality": m.cardinality, "bottleneck_width": m.bottleneck_width, "block": m.block,
    }


def build_arch(spec: Spec, values: Mapping[str, Any]) -> Arch:
    """The base model with some of its fields replaced."""
    v = {**base_values(spec), **values}
    return make_arch(
        template=spec.model.template, stem_width=int(v["stem_width"]),
        depths=tuple(v["depths"]), widths=tuple(v["widths"]),
        cardinality=int(v["cardinality"]), bottleneck_width=int(v["bottleneck_width"]),
        block=v["block"],
    )


def base_candidate(spec: Spec) -> Candidate:
    arch = build_arch(spec, {})
    cost = count(arch, spec.data.resolution, spec.num_classes)
    return Candidate(space="(base)", arch=arch, complexity=cost, base=cost)


def grid(space: SpaceSpec) -> Iterator[dict[str, Any]]:
    """Every combination of the space's list axes (one empty point if it has none)."""
    axes = {k: v for k, v in space.axes.present().items() if not isinstance(v, Range)}
    names = [k for k in AXIS_FIELDS if k in axes]
    for combo in itertools.product(*(axes[k] for k in names)):
        yield dict(zip(names, combo, strict=True))


def realise(spec: Spec, space_name: str, values: Mapping[str, Any],
            base: Candidate | None = None) -> Candidate | Dropped:
    """Turn one point of a space into a candidate, solving and checking it."""
    base = base or base_candidate(spec)
    space = spec.spaces[space_name]
    values = dict(values)
    solved = None
    if space.solve is not None:
        found = solve(spec, space.solve, values, base.complexity)
        if isinstance(found, str):
            return Dropped(space_name, values, found)
        values[space.solve.field] = found
        solved = space.solve.field
    if not valid_widths(spec, values):
        return Dropped(space_name, values, "a stage's bottleneck width rounds to 0")
    arch = build_arch(spec, values)
    cost = count(arch, spec.data.resolution, spec.num_classes)
    candidate = Candidate(space_name, arch, cost, base.complexity, solved)
    reason = tolerance_violation(candidate, space.solve) or constraint_violation(spec, cost)
    return Dropped(space_name, values, reason) if reason else candidate


def enumerate_spec(spec: Spec, spaces: list[str] | None = None) -> Enumeration:
    """All candidates of the named spaces (all of them by default), deduplicated per space."""
    base = base_candidate(spec)
    kept: list[Candidate] = []
    dropped: list[Dropped] = []
    samples: list[SampleReport] = []
    # Enumeration allocates many small objects that all live to the end: the
    # cyclic garbage collector would rescan the growing heap for nothing.
    collecting = gc.isenabled()
    gc.disable()
    try:
        for name in spaces or list(spec.spaces):
            if spec.spaces[name].sample is not None:
                samples.append(_add_sampled(spec, name, base, kept))
                continue
            seen: set[Arch] = set()  # equal records, equal keys: hashing the record is cheaper
            for values in grid(spec.spaces[name]):
                result = realise(spec, name, values, base)
                if isinstance(result, Dropped):
                    dropped.append(result)
                elif result.arch in seen:
                    dropped.append(Dropped(name, values, f"same network as candidate {result.key}"))
                else:
                    seen.add(result.arch)
                    kept.append(result)
    finally:
        if collecting:
            gc.enable()
    return Enumeration(base, tuple(kept), tuple(dropped), tuple(samples))


def _add_sampled(spec: Spec, name: str, base: Candidate, kept: list[Candidate]) -> SampleReport:
    """A sampled space's candidates (explorer.sampling), appended to `kept` in draw order."""
    drawn = sample_space(spec, name)
    kept.extend(Candidate(name, arch, cost, base.complexity)
                for arch, cost in zip(drawn.archs, drawn.complexities, strict=True))
    return drawn.report


def valid_widths(spec: Spec, values: Mapping[str, Any]) -> bool:
    v = {**base_values(spec), **values}
    widths = tuple(v["widths"])
    return all(int(v["bottleneck_width"]) * w // widths[0] >= 1 for w in widths)


def solve(spec: Spec, rule: Solve, values: Mapping[str, Any], target: Complexity) -> int | str:
    """The integer value of `rule.field` whose preserved quantity is closest to the target.

    Complexity grows with each solvable field, so a binary search finds the
    first value at or above the target; the answer is it or the one before
    (ties go to the smaller network). Returns a reason string when no value fits.
    """
    low = max(rule.low, _smallest_valid(spec, rule.field, values))
    high = rule.high
    if low > high:
        return f"no valid {rule.field} in [{rule.low}, {rule.high}]"
    goal = getattr(target, rule.preserve)

    def quantity(x: int) -> int:
        arch = build_arch(spec, {**values, rule.field: x})
        return int(getattr(count(arch, spec.data.resolution, spec.num_classes), rule.preserve))

    lo, hi = low, high
    while lo < hi:
        mid = (lo + hi) // 2
        if quantity(mid) >= goal:
            hi = mid
        else:
            lo = mid + 1
    if lo > low and goal - quantity(lo - 1) <= quantity(lo) - goal:
        return lo - 1
    return lo


def _smallest_valid(spec: Spec, field_name: str, values: Mapping[str, Any]) -> int:
    """Below this, some stage's bottleneck width would round to 0."""
    if field_name != "bottleneck_width":
        return 1
    widths = tuple({**base_values(spec), **values}["widths"])
    return max(-(-widths[0] // w) for w in widths)


def tolerance_violation(candidate: Candidate, rule: Solve | None) -> str | None:
    if rule is None:
        return None
    deviation = getattr(candidate, f"{rule.preserve}_deviation")
    if abs(deviation) <= 100.0 * rule.tolerance:
        return None
    value = candidate.row()[rule.field]
    return (f"{rule.preserve} {deviation:+.1f}% from the base model at the closest "
            f"{rule.field}={value}, beyond the tolerance of ±{100 * rule.tolerance:g}%")


def constraint_violation(spec: Spec, cost: Complexity) -> str | None:
    for name, band in spec.constraints:
        if band is None:
            continue
        value, (low, high) = getattr(cost, name), band
        if low is not None and value < low:
            return f"{name} {value:.4g} below the constraint's {low:.4g}"
        if high is not None and value > high:
            return f"{name} {value:.4g} above the constraint's {high:.4g}"
    return None
