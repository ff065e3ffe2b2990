"""Candidates of a spec's design spaces, with exact complexity, before any training.

Per named space: the grid product of its axes applied to the base model; a
`solve` picks the solved field per candidate so its params or flops come
closest to the base model's; `tolerance` and the absolute `constraints` drop
the rest, each with a reason. Needs neither torch nor ray.

Two engines give the same candidates in the same order: `enumerate_per_point`
realises one point at a time with `count` (the reference the tests hold the
other to); `CandidateStream` does the same steps on numpy columns with
`count_stages`, a chunk of points at a time, for spaces of millions of points.
`enumerate_spec` collects the stream's batches as records.
A sampled space has no grid: both take its drawn candidates from explorer.sampling.
"""

from __future__ import annotations

import gc
import hashlib
import itertools
import math
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from explorer.arch import BLOCK_FORMS, Arch, Stage, make_arch, regnet_arch, stage_strides
from explorer.columns import COLUMNS
from explorer.complexity import Complexity, CountTooLarge, check_fits, count, count_stages
from explorer.sampling import SampleReport, sample_space
from explorer.spec import Range, Solve, SpaceSpec, Spec

# The axes a space may vary, in the order tables show them: a resnext model's, then a
# regnet model's (a space varies only its own family's).
AXIS_FIELDS = ("depths", "widths", "stem_width", "cardinality", "bottleneck_width", "block",
               "depth", "w_0", "w_a", "w_m", "group_width", "bottleneck_ratio")


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
    try:
        cost = check_fits(count(arch, spec.data.resolution, spec.num_classes), arch)
    except CountTooLarge as too_large:
        raise too_large.within(f"space {space_name}") from None
    candidate = Candidate(space_name, arch, cost, base.complexity, solved)
    reason = (tolerance_violation(candidate, space.solve, solved and values[solved])
              or constraint_violation(spec, cost))
    return Dropped(space_name, values, reason) if reason else candidate


def enumerate_spec(spec: Spec, spaces: list[str] | None = None) -> Enumeration:
    """All candidates of the named spaces (all of them by default), deduplicated per space,
    with every drop and each sampled space's report: `CandidateStream`'s, as records."""
    stream = CandidateStream(spec, spaces, keep_dropped=None)
    # The records all live to the end: the cyclic garbage collector would rescan the
    # growing heap for nothing.
    collecting = gc.isenabled()
    gc.disable()
    try:
        kept = [c for batch in stream for c in batch.candidates(stream.base.complexity)]
    finally:
        if collecting:
            gc.enable()
    return Enumeration(stream.base, tuple(kept), tuple(stream.dropped), tuple(stream.samples))


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
        return f"no valid {rule.field} in [{rule.low}, {rule.high}]"
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
        return f"no valid {rule.field} in [{rule.low}, {rule.high}]"
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
    return tolerance_message(rule, deviation,
                             candidate.row()[rule.field] if value is None else value)


def tolerance_message(rule: Solve, deviation: float, value: object) -> str:
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


# --- Enumeration that scales: the same spaces, a chunk of grid points at a time ---------------
#
# `enumerate_per_point` realises one point at a time and keeps every record; the code below
# computes the same candidates, reasons and order on numpy columns, chunk by chunk, so a
# space of millions of points streams through in bounded memory. `enumerate_per_point`
# stays the reference the tests hold this to.

STAGE_COLUMNS = ("depths", "widths", "cardinalities", "bottleneck_widths")
CHUNK_POINTS = 32_768


def _points(space: SpaceSpec) -> int:
    """A space's points, known before any work: its grid's, or a sampled space's n."""
    return space.sample.n if space.sample is not None else grid_size(space)


def same_depth_runs(archs: Sequence[Arch]) -> Iterator[slice]:
    """Runs of consecutive networks with as many stages each (a Batch's columns are (n, S)):
    RegNets of one space can differ in their number of stages."""
    start = 0
    for i in range(1, len(archs) + 1):
        if i == len(archs) or len(archs[i].stages) != len(archs[start].stages):
            yield slice(start, i)
            start = i


def sampled_batch(space: str, archs: Sequence[Arch], costs: Sequence[Complexity],
                  base: Complexity, solved: str | None = None) -> Batch:
    """Networks with as many stages each as a Batch: each its own per-stage values."""
    def column(values: Any) -> np.ndarray:
        return np.array(values, dtype=np.int64).reshape(len(archs), -1)

    params, flops, acts = (np.array([getattr(c, k) for c in costs], dtype=np.int64)
                           for k in ("params", "flops", "acts"))
    return Batch(
        space=space, template=archs[0].template, solved=solved,  # n >= 1 by the spec
        blocks=tuple(a.block for a in archs),
        stem_width=np.array([a.stem_width for a in archs], dtype=np.int64),
        depths=column([a.depths for a in archs]), widths=column([a.widths for a in archs]),
        cardinalities=column([a.cardinalities for a in archs]),
        bottleneck_widths=column([a.bottleneck_widths for a in archs]),
        params=params, flops=flops, acts=acts,
        params_deviation=100.0 * (params - base.params) / base.params,
        flops_deviation=100.0 * (flops - base.flops) / base.flops,
        keys=tuple(a.key for a in archs))


def grid_size(space: SpaceSpec) -> int:
    """How many points `grid` yields: known before any work."""
    return math.prod(len(v) for v in space.axes.present().values() if not isinstance(v, Range))


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


def _factorise(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The sorted distinct values of a 1-D integer array and each value's index among them.

    Values in a narrow range are looked up in a table, without sorting.
    """
    low, high = int(values.min()), int(values.max())
    if high - low > 4 * values.size + 1024:
        levels, inverse = np.unique(values, return_inverse=True)
        return levels, inverse.reshape(-1)
    present = np.zeros(high - low + 1, dtype=bool)
    present[values - low] = True
    levels = np.flatnonzero(present)
    lookup = np.cumsum(present) - 1
    return levels + low, lookup[values - low]


def distinct_rows(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of a 2-D integer array and, per row, the index of its distinct row.

    Like np.unique(axis=0, return_inverse=True) up to the order of the rows,
    without its slow sort of rows as opaque bytes: each column is factorised
    on its own and the codes are combined into one integer per row.
    """
    if values.shape[0] == 0:
        return values[:0], np.zeros(0, dtype=np.int64)
    code = np.zeros(values.shape[0], dtype=np.int64)
    room = 1
    for column in values.T:
        levels, inverse = _factorise(column)
        room *= len(levels)
        if room >= 2**62:  # the combined code would overflow
            unique, inverse = np.unique(values, axis=0, return_inverse=True)
            return unique, inverse.reshape(-1)
        code = code * len(levels) + inverse
    _, inverse = _factorise(code)
    first = np.zeros(int(inverse.max()) + 1, dtype=np.int64)
    first[inverse] = np.arange(values.shape[0])  # a row of each code: rows of one code are equal
    return values[first], inverse


def _text_per_row(template: str, values: np.ndarray) -> np.ndarray:
    """`template % row` for every row of a 2-D array, each distinct row formatted once."""
    unique, inverse = distinct_rows(values)
    text = np.array([template % tuple(row) for row in unique.tolist()], dtype=object)
    return text[inverse]


def canonical_keys(template: str, blocks: Sequence[str], stem_width: np.ndarray,
                   stages: Mapping[str, np.ndarray]) -> tuple[str, ...]:
    """Arch.key of every row, from the columns: the same canonical JSON, written directly.

    json.dumps with sorted keys and no spaces, per record, costs more than the
    whole count; the text has one fixed shape, so each stage's part is
    formatted once per distinct stage and the parts are joined column-wise.
    """
    strides = stage_strides(template, stages["depths"].shape[1])  # type: ignore[arg-type]
    parts = [[f'{{"block":"{b}","stages":[' for b in blocks]]
    for s, stride in enumerate(strides):
        stage = np.stack([stages["bottleneck_widths"][:, s], stages["cardinalities"][:, s],
                          stages["depths"][:, s], stages["widths"][:, s]], axis=1)
        part = ('{"bottleneck_width":%d,"cardinality":%d,"depth":%d,"stride":' + str(stride)
                + ',"width":%d}' + ("," if s < len(strides) - 1 else ""))
        parts.append(_text_per_row(part, stage).tolist())
    tail = '],"stem_width":%d,"template":"' + template + '"}'
    parts.append(_text_per_row(tail, stem_width.reshape(-1, 1)).tolist())
    if not parts[0]:
        return ()
    texts = "\n".join(map("".join, zip(*parts, strict=True))).encode().split(b"\n")
    return tuple(h.hexdigest()[:16] for h in map(hashlib.sha256, texts))


# A drop's reason without the point's own figures (as _Chunk.reason_kind words it): the
# measured value before below/above, the deviation and value before "beyond", the key.
_REASON_FIGURES = (
    (re.compile(r"^(params|flops|acts) \S+ (below|above) "), r"\1 \2 "),
    (re.compile(r"^(params|flops) \S+ from the base model at the closest \S+, beyond"),
     r"\1 beyond"),
    (re.compile(r"^same network as candidate \S+$"), "same network as an earlier candidate"),
)


def reason_kind(reason: str) -> str:
    """A reason `realise` gives, as the counts by reason name it."""
    for pattern, replacement in _REASON_FIGURES:
        reason = pattern.sub(replacement, reason)
    return reason


# Why a point was dropped, as a code per point; constraint codes follow, two per band.
KEPT, NO_VALID, ROUNDS_TO_ZERO, BEYOND_TOLERANCE, DUPLICATE, CONSTRAINT = 0, 1, 2, 3, 4, 5
ROUNDS_TO_ZERO_REASON = "a stage's bottleneck width rounds to 0"


class CandidateStream:
    """The candidates of a spec's spaces, a Batch at a time, in `enumerate_per_point`'s order.

    Iterate it once. The grid's size (`sizes`, `total_points`) is known before
    any work; `points_done`, `candidates` and the dropped counts fill in as
    it goes. Memory stays bounded by the chunk size: only the first
    `keep_dropped` drops are kept whole (None: all of them), the rest are
    counted by reason. Deduplication needs the keys seen so far, so it keeps
    them, but only in a space whose points can repeat a network (the solved
    field is also an axis, or an axis lists a value twice).
    """

    def __init__(self, spec: Spec, spaces: Sequence[str] | None = None, *,
                 chunk_points: int = CHUNK_POINTS, keep_dropped: int | None = 50) -> None:
        self.spec = spec
        self.spaces = list(spaces or spec.spaces)
        self.chunk_points = chunk_points
        self.keep_dropped = keep_dropped
        self.base = base_candidate(spec)
        self.sizes = {name: _points(spec.spaces[name]) for name in self.spaces}
        self.samples: list[SampleReport] = []  # one per sampled space, once it is drawn
        self.points_done = 0
        self.candidates = 0
        self.dropped: list[Dropped] = []
        self.dropped_by_reason: Counter[str] = Counter()

    @property
    def total_points(self) -> int:
        return sum(self.sizes.values())

    @property
    def dropped_count(self) -> int:
        return sum(self.dropped_by_reason.values())

    def __iter__(self) -> Iterator[Batch]:
        for name in self.spaces:
            try:
                yield from self._space(name)
            except CountTooLarge as too_large:
                raise too_large.within(f"space {name}") from None

    def _space(self, name: str) -> Iterator[Batch]:
        space = self.spec.spaces[name]
        if space.sample is not None:
            yield from self._sampled(name)
            return
        if self.spec.model.family == "regnet":
            yield from self._per_point(name)
            return
        axes = {k: v for k, v in space.axes.present().items() if not isinstance(v, Range)}
        names = [k for k in AXIS_FIELDS if k in axes]
        options = [tuple(axes[k]) for k in names]
        shape = tuple(len(o) for o in options)
        rule = space.solve
        repeats = (rule is not None and rule.field in names) or any(
            len(set(o)) < len(o) for o in options)
        seen: set[str] | None = set() if repeats else None
        size = self.sizes[name]
        for start in range(0, size, self.chunk_points):
            stop = min(size, start + self.chunk_points)
            coords = np.unravel_index(np.arange(start, stop), shape) if shape else ()
            chunk = _Chunk(self.spec, name, names, options, coords, stop - start, self.base)
            batch = chunk.run(seen)
            self._count_drops(chunk)
            self.points_done += stop - start
            self.candidates += len(batch)
            yield batch

    def _sampled(self, name: str) -> Iterator[Batch]:
        """A sampled space's n candidates (explorer.sampling) in draw order, a Batch per run
        of networks with as many stages."""
        drawn = sample_space(self.spec, name)
        self.samples.append(drawn.report)
        for run in same_depth_runs(drawn.archs):
            batch = sampled_batch(name, drawn.archs[run], drawn.complexities[run],
                                  self.base.complexity)
            self.points_done += len(batch)
            self.candidates += len(batch)
            yield batch

    def _per_point(self, name: str) -> Iterator[Batch]:
        """A regnet space's grid realised one point at a time (`realise`, as
        `enumerate_per_point` does): its networks' stages come from generating them, not
        from columns. A Batch per run of networks with as many stages, per chunk."""
        seen: set[str] = set()
        points = grid(self.spec.spaces[name])
        solved = self.spec.spaces[name].solve
        while chunk := list(itertools.islice(points, self.chunk_points)):
            kept: list[Candidate] = []
            for values in chunk:
                result = realise(self.spec, name, values, self.base)
                if not isinstance(result, Dropped) and result.key in seen:
                    result = Dropped(name, values, f"same network as candidate {result.key}")
                if isinstance(result, Dropped):
                    self.dropped_by_reason[reason_kind(result.reason)] += 1
                    if self.keep_dropped is None or len(self.dropped) < self.keep_dropped:
                        self.dropped.append(result)
                    continue
                seen.add(result.key)
                kept.append(result)
            archs = [c.arch for c in kept]
            for run in same_depth_runs(archs):
                yield sampled_batch(name, archs[run], [c.complexity for c in kept[run]],
                                    self.base.complexity, solved.field if solved else None)
            self.points_done += len(chunk)
            self.candidates += len(kept)

    def _count_drops(self, chunk: _Chunk) -> None:
        codes = chunk.code
        dropped = np.flatnonzero(codes != KEPT)
        if dropped.size == 0:
            return
        for code, n in zip(*np.unique(codes[dropped], return_counts=True), strict=True):
            self.dropped_by_reason[chunk.reason_kind(int(code))] += int(n)
        room = dropped.size if self.keep_dropped is None else max(
            0, self.keep_dropped - len(self.dropped))
        self.dropped.extend(chunk.describe(int(i)) for i in dropped[:room])


class _Chunk:
    """Consecutive grid points of one space as whole-network columns, realised at once.

    The steps are `realise`'s, on arrays: solve, the widths check, count,
    tolerance, constraints, dedupe. `code` says per point what became of it.
    """

    def __init__(self, spec: Spec, space: str, names: Sequence[str],
                 options: Sequence[tuple[Any, ...]], coords: tuple[np.ndarray, ...], n: int,
                 base: Candidate) -> None:
        self.spec, self.space, self.rule = spec, space, spec.spaces[space].solve
        self.names, self.options, self.coords, self.n = names, options, coords, n
        self.base = base.complexity
        self.fields = _point_fields(spec, names, options, coords, n)
        self.code = np.zeros(n, dtype=np.int8)
        self.costs = np.zeros((3, n), dtype=np.int64)
        self.deviation = np.zeros((2, n), dtype=np.float64)
        self.keys: dict[int, str] = {}
        self.bands = [(name, band) for name, band in spec.constraints if band is not None]

    def run(self, seen: set[str] | None) -> Batch:
        if self.rule is not None:
            self._solve(self.rule)
        live = self.code == KEPT
        stages = _stage_columns(self.fields)
        self.code[live & ~(stages["bottleneck_widths"] >= 1).all(axis=1)] = ROUNDS_TO_ZERO
        idx = np.flatnonzero(self.code == KEPT)
        sub = {k: v[idx] for k, v in stages.items()}
        sub_fields = {k: v[idx] for k, v in self.fields.items()}
        self.costs[:, idx] = _count(self.spec, sub_fields, sub)
        base = (self.base.params, self.base.flops)
        for j in range(2):
            diff = (self.costs[j, idx] - base[j]).astype(np.float64)
            self.deviation[j, idx] = 100.0 * diff / base[j]
        self._check(idx)
        kept = idx[self.code[idx] == KEPT]
        blocks = tuple(BLOCK_FORMS[b] for b in self.fields["block"][kept].tolist())
        keys = canonical_keys(self.spec.model.template, blocks, self.fields["stem_width"][kept],
                              {k: v[kept] for k, v in stages.items()})
        if seen is not None:
            kept, blocks, keys = self._dedupe(seen, kept, blocks, keys)
        return Batch(
            space=self.space, template=self.spec.model.template,
            solved=self.rule.field if self.rule is not None else None, blocks=blocks,
            stem_width=self.fields["stem_width"][kept],
            **{k: np.ascontiguousarray(v[kept]) for k, v in stages.items()},
            params=self.costs[0, kept], flops=self.costs[1, kept], acts=self.costs[2, kept],
            params_deviation=self.deviation[0, kept], flops_deviation=self.deviation[1, kept],
            keys=keys)

    def _solve(self, rule: Solve) -> None:
        """`solve` for every point at once: the same binary search, one step for all."""
        f = self.fields
        low = np.full(self.n, rule.low, dtype=np.int64)
        if rule.field == "bottleneck_width":
            widths = f["widths"]
            low = np.maximum(low, (-(-widths[:, :1] // widths)).max(axis=1))
        self.code[low > rule.high] = NO_VALID
        idx = np.flatnonzero(low <= rule.high)
        goal = getattr(self.base, rule.preserve)
        column = ("params", "flops").index(rule.preserve)

        def quantity(at: np.ndarray, x: np.ndarray) -> np.ndarray:
            sub = {k: v[at] for k, v in f.items()}
            sub[rule.field] = x
            # A probe past int64 is simply too large: the search only compares it to the goal.
            return _count(self.spec, sub, _stage_columns(sub), saturate=True)[column]

        first = low[idx]
        lo, hi = first.copy(), np.full(idx.size, rule.high, dtype=np.int64)
        while (open_ := np.flatnonzero(lo < hi)).size:
            mid = (lo[open_] + hi[open_]) // 2
            above = quantity(idx[open_], mid) >= goal
            hi[open_[above]] = mid[above]
            lo[open_[~above]] = mid[~above] + 1
        later = np.flatnonzero(lo > first)
        if later.size:
            at = idx[later]
            below = goal - quantity(at, lo[later] - 1) <= quantity(at, lo[later]) - goal
            lo[later[below]] -= 1
        solved = f[rule.field].copy()
        solved[idx] = lo
        f[rule.field] = solved

    def _check(self, idx: np.ndarray) -> None:
        """Tolerance, then the constraints in the spec's order: the first failure is the reason."""
        code = np.zeros(idx.size, dtype=np.int8)
        if self.rule is not None:
            j = ("params", "flops").index(self.rule.preserve)
            code[np.abs(self.deviation[j, idx]) > 100.0 * self.rule.tolerance] = BEYOND_TOLERANCE
        for b, (name, (low, high)) in enumerate(self.bands):
            value = self.costs[("params", "flops", "acts").index(name), idx]
            if low is not None:
                code[(code == KEPT) & (value < low)] = CONSTRAINT + 2 * b
            if high is not None:
                code[(code == KEPT) & (value > high)] = CONSTRAINT + 2 * b + 1
        self.code[idx] = code

    def _dedupe(self, seen: set[str], kept: np.ndarray, blocks: tuple[str, ...],
                keys: tuple[str, ...]) -> tuple[np.ndarray, tuple[str, ...], tuple[str, ...]]:
        first = []
        for j, (i, key) in enumerate(zip(kept.tolist(), keys, strict=True)):
            if key in seen:
                self.code[i] = DUPLICATE
                self.keys[i] = key
            else:
                seen.add(key)
                first.append(j)
        pick = np.asarray(first, dtype=np.int64)
        return kept[pick], tuple(blocks[j] for j in first), tuple(keys[j] for j in first)

    def reason_kind(self, code: int) -> str:
        """The reason for a drop without the point's own figures, for counting drops."""
        rule = self.rule
        if code == NO_VALID and rule is not None:
            return f"no valid {rule.field} in [{rule.low}, {rule.high}]"
        if code == ROUNDS_TO_ZERO:
            return ROUNDS_TO_ZERO_REASON
        if code == BEYOND_TOLERANCE and rule is not None:
            return f"{rule.preserve} beyond the tolerance of ±{100 * rule.tolerance:g}%"
        if code == DUPLICATE:
            return "same network as an earlier candidate"
        name, (low, high) = self.bands[(code - CONSTRAINT) // 2]
        if (code - CONSTRAINT) % 2 == 0:
            return f"{name} below the constraint's {low:.4g}"
        return f"{name} above the constraint's {high:.4g}"

    def describe(self, i: int) -> Dropped:
        """Point i's drop as `realise` words it."""
        code, rule = int(self.code[i]), self.rule
        values: dict[str, Any] = {k: o[int(c[i])]
                                  for k, o, c in zip(self.names, self.options, self.coords,
                                                     strict=True)}
        if rule is not None and code not in (NO_VALID, DUPLICATE):  # as enumerate_per_point does
            values[rule.field] = int(self.fields[rule.field][i])
        if code == BEYOND_TOLERANCE and rule is not None:
            deviation = float(self.deviation[("params", "flops").index(rule.preserve), i])
            reason = tolerance_message(rule, deviation, values[rule.field])
        elif code == DUPLICATE:
            reason = f"same network as candidate {self.keys[i]}"
        elif code >= CONSTRAINT:
            name, _ = self.bands[(code - CONSTRAINT) // 2]
            value = int(self.costs[("params", "flops", "acts").index(name), i])
            reason = self.reason_kind(code).replace(name, f"{name} {value:.4g}", 1)
        else:
            reason = self.reason_kind(code)
        return Dropped(self.space, values, reason)


def _point_fields(spec: Spec, names: Sequence[str], options: Sequence[tuple[Any, ...]],
                  coords: tuple[np.ndarray, ...], n: int) -> dict[str, np.ndarray]:
    """The whole-network fields of each point: its axis values, the base model's elsewhere."""
    given = dict(zip(names, zip(options, coords, strict=True), strict=True))
    fields = {}
    for name, base in base_values(spec).items():
        if name == "block":
            choices = np.array([BLOCK_FORMS.index(b) for b in given[name][0]]) if name in given \
                else np.array([BLOCK_FORMS.index(base)])
        else:
            choices = np.array(given[name][0] if name in given else [base], dtype=np.int64)
        picked = choices[given[name][1]] if name in given else np.repeat(choices, n, axis=0)
        fields[name] = picked
    return fields


def _stage_columns(fields: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-stage values as make_arch derives them: one C, d scaled with each stage's width."""
    widths = fields["widths"]
    shape = widths.shape
    return {
        "depths": fields["depths"], "widths": widths,
        "cardinalities": np.broadcast_to(fields["cardinality"][:, None], shape),
        "bottleneck_widths": fields["bottleneck_width"][:, None] * widths // widths[:, :1],
    }


def _count(spec: Spec, fields: Mapping[str, np.ndarray],
           stages: Mapping[str, np.ndarray], saturate: bool = False) -> np.ndarray:
    """(params, flops, acts) as a (3, n) array; the block form only changes acts (past int64:
    see count_stages)."""
    blocks = fields["block"]
    result = np.empty((3, blocks.size), dtype=np.int64)
    for b in np.unique(blocks).tolist():
        at = slice(None) if blocks.size and (blocks == b).all() else blocks == b
        result[:, at] = count_stages(
            template=spec.model.template, stem_width=fields["stem_width"][at],
            block=BLOCK_FORMS[b], resolution=spec.data.resolution, num_classes=spec.num_classes,
            saturate=saturate, **{k: v[at] for k, v in stages.items()})
    return result
