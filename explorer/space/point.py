"""The per-point engine: a space's points realised one at a time with `count`.

Per named space: the grid product of its axes applied to the base model; a
`solve` picks the solved field per candidate so its params or flops come
closest to the base model's; `tolerance` and the absolute `constraints` drop
the rest, each with a reason. `enumerate_per_point` is the reference the tests
hold explorer.space.stream to; `realise`, `build_arch` and `base_candidate` are
what the search strategies use to realise one point.
"""

from __future__ import annotations

import gc
import itertools
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from explorer.arch import Arch, make_arch, regnet_arch
from explorer.complexity import Complexity, CountTooLarge, check_fits, count
from explorer.sampling import SampleReport, sample_space
from explorer.space.records import (
    ROUNDS_TO_ZERO_REASON,
    Candidate,
    Dropped,
    Enumeration,
    constraint_reason,
    no_valid_reason,
    same_network_reason,
    tolerance_reason,
)
from explorer.spec import Range, Solve, SpaceSpec, Spec

__all__ = [
    "AXIS_FIELDS",
    "base_candidate",
    "base_values",
    "build_arch",
    "constraint_violation",
    "enumerate_per_point",
    "grid",
    "grid_size",
    "realise",
    "solve",
    "tolerance_violation",
    "valid_widths",
]


# The axes a space may vary, in the order tables show them: a resnext model's, then a
# regnet model's (a space varies only its own family's).
AXIS_FIELDS = ("depths", "widths", "stem_width", "cardinality", "bottleneck_width", "block",
               "depth", "w_0", "w_a", "w_m", "group_width", "bottleneck_ratio")


def base_values(spec: Spec) -> dict[str, Any]:
    m = spec.model
    if m.family == "regnet":
        return {"depth": m.depth, "w_0": m.w_0, "w_a": m.w_a, "w_m": m.w_m,
                "group_width": m.group_width, "bottleneck_ratio": m.bottleneck_ratio,
                "quantum": m.quantum, "stem_width": m.stem_width, "block": m.block}
    return {
        "depths": m.depths, "widths": m.widths, "stem_width": m.stem_width,
        "cardinality": m.cardinality, "bottleneck_width": m.bottleneck_width, "block": m.block,
    }


def build_arch(spec: Spec, values: Mapping[str, Any]) -> Arch:
    """The base model with some of its fields replaced."""
    v = {**base_values(spec), **values}
    if spec.model.family == "regnet":
        return regnet_arch(
            template=spec.model.template, stem_width=int(v["stem_width"]), depth=int(v["depth"]),
            w_0=int(v["w_0"]), w_a=float(v["w_a"]), w_m=float(v["w_m"]),
            group_width=int(v["group_width"]), bottleneck_ratio=int(v["bottleneck_ratio"]),
            quantum=int(v["quantum"]), block=v["block"])
    return make_arch(
        template=spec.model.template, stem_width=int(v["stem_width"]),
        depths=tuple(v["depths"]), widths=tuple(v["widths"]),
        cardinality=int(v["cardinality"]), bottleneck_width=int(v["bottleneck_width"]),
        block=v["block"],
    )


def base_candidate(spec: Spec) -> Candidate:
    arch = build_arch(spec, {})
    try:
        cost = check_fits(count(arch, spec.data.resolution, spec.num_classes), arch)
    except CountTooLarge as too_large:
        raise too_large.within("the base model (model:)") from None
    return Candidate(space="(base)", arch=arch, complexity=cost, base=cost)


def grid(space: SpaceSpec) -> Iterator[dict[str, Any]]:
    """Every combination of the space's list axes (one empty point if it has none)."""
    axes = {k: v for k, v in space.axes.present().items() if not isinstance(v, Range)}
    names = [k for k in AXIS_FIELDS if k in axes]
    for combo in itertools.product(*(axes[k] for k in names)):
        yield dict(zip(names, combo, strict=True))


def grid_size(space: SpaceSpec) -> int:
    """How many points `grid` yields: known before any work."""
    return math.prod(len(v) for v in space.axes.present().values() if not isinstance(v, Range))


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
        return Dropped(space_name, values, ROUNDS_TO_ZERO_REASON)
    arch = build_arch(spec, values)
    try:
        cost = check_fits(count(arch, spec.data.resolution, spec.num_classes), arch)
    except CountTooLarge as too_large:
        raise too_large.within(f"space {space_name}") from None
    candidate = Candidate(space_name, arch, cost, base.complexity, solved)
    reason = (tolerance_violation(candidate, space.solve, solved and values[solved])
              or constraint_violation(spec, cost))
    return Dropped(space_name, values, reason) if reason else candidate


def enumerate_per_point(spec: Spec, spaces: list[str] | None = None) -> Enumeration:
    """`enumerate_spec`'s result, realised one point at a time with `count`: the reference.

    Slow (about 10,000 points/s) and independent of the numpy engine, so the
    tests hold `CandidateStream` and `enumerate_spec` to it.
    """
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
                    dropped.append(Dropped(name, values, same_network_reason(result.key)))
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
    if spec.model.family == "regnet":
        return True  # every stage's d is its group width, at least 1
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
        return no_valid_reason(rule)
    goal = getattr(target, rule.preserve)

    def quantity(x: int) -> int:
        arch = build_arch(spec, {**values, rule.field: x})
        return int(getattr(count(arch, spec.data.resolution, spec.num_classes), rule.preserve))

    if spec.model.family == "regnet":
        return _scan(spec, rule, values, goal, quantity)

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


def _scan(spec: Spec, rule: Solve, values: Mapping[str, Any], goal: int,
          quantity: Callable[[int], int]) -> int | str:
    """A regnet field solved by trying every value in [low, high]: complexity is not
    monotone in it (a larger w_0 can quantise the blocks into fewer, narrower stages), so
    a binary search could miss the closest. w_0 takes the multiples of quantum only; ties
    go to the smaller network, then the smaller value."""
    step = int({**base_values(spec), **values}["quantum"]) if rule.field == "w_0" else 1
    options = range(-(-rule.low // step) * step, rule.high + 1, step)
    if not options:
        return no_valid_reason(rule)
    found = {x: quantity(x) for x in options}
    return min(options, key=lambda x: (abs(found[x] - goal), found[x], x))


def _smallest_valid(spec: Spec, field_name: str, values: Mapping[str, Any]) -> int:
    """Below this, some stage's bottleneck width would round to 0."""
    if field_name != "bottleneck_width":
        return 1
    widths = tuple({**base_values(spec), **values}["widths"])
    return max(-(-widths[0] // w) for w in widths)


def tolerance_violation(candidate: Candidate, rule: Solve | None,
                        value: object = None) -> str | None:
    """Why a solved candidate is too far from the base model; `value`: the solved field's,
    when the record does not hold it (a regnet field)."""
    if rule is None:
        return None
    deviation = getattr(candidate, f"{rule.preserve}_deviation")
    if abs(deviation) <= 100.0 * rule.tolerance:
        return None
    return tolerance_reason(rule, deviation,
                            candidate.row()[rule.field] if value is None else value)


def constraint_violation(spec: Spec, cost: Complexity) -> str | None:
    for name, band in spec.constraints:
        if band is None:
            continue
        value, (low, high) = getattr(cost, name), band
        if low is not None and value < low:
            return constraint_reason(name, "below", low, value)
        if high is not None and value > high:
            return constraint_reason(name, "above", high, value)
    return None
