"""The columnar engine: `CandidateStream`, the same candidates, reasons and order as the
per-point engine (explorer.space.point), on numpy columns with `count_stages`, a chunk of
grid points at a time, so a space of millions of points streams through in bounded
memory; `enumerate_spec` collects its batches as records. A regnet space, whose stages
are generated, goes one point at a time; a sampled space takes its drawn candidates from
explorer.sampling.
"""

from __future__ import annotations

import gc
import itertools
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from explorer.arch import BLOCK_FORMS, Arch
from explorer.complexity import Complexity, CountTooLarge, count_stages
from explorer.sampling import SampleReport, sample_space
from explorer.space.keys import canonical_keys
from explorer.space.point import (
    AXIS_FIELDS,
    base_candidate,
    base_values,
    grid,
    grid_size,
    realise,
)
from explorer.space.records import (
    ROUNDS_TO_ZERO_REASON,
    SAME_NETWORK_KIND,
    Batch,
    Candidate,
    Dropped,
    Enumeration,
    constraint_reason,
    no_valid_reason,
    reason_kind,
    same_network_reason,
    tolerance_kind,
    tolerance_reason,
)
from explorer.spec import Range, Solve, SpaceSpec, Spec

__all__ = ["CHUNK_POINTS", "CandidateStream", "enumerate_spec"]


_STAGE_COLUMNS = ("depths", "widths", "cardinalities", "bottleneck_widths")


CHUNK_POINTS = 32_768


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


def _points(space: SpaceSpec) -> int:
    """A space's points, known before any work: its grid's, or a sampled space's n."""
    return space.sample.n if space.sample is not None else grid_size(space)


def _same_depth_runs(archs: Sequence[Arch]) -> Iterator[slice]:
    """Runs of consecutive networks with as many stages each (a Batch's columns are (n, S)):
    RegNets of one space can differ in their number of stages."""
    start = 0
    for i in range(1, len(archs) + 1):
        if i == len(archs) or len(archs[i].stages) != len(archs[start].stages):
            yield slice(start, i)
            start = i


def _sampled_batch(space: str, archs: Sequence[Arch], costs: Sequence[Complexity],
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


# Why a point was dropped, as a code per point; constraint codes follow, two per band.
_KEPT, _NO_VALID, _ROUNDS_TO_ZERO, _BEYOND_TOLERANCE, _DUPLICATE, _CONSTRAINT = 0, 1, 2, 3, 4, 5


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
        for run in _same_depth_runs(drawn.archs):
            batch = _sampled_batch(name, drawn.archs[run], drawn.complexities[run],
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
                    result = Dropped(name, values, same_network_reason(result.key))
                if isinstance(result, Dropped):
                    self.dropped_by_reason[reason_kind(result.reason)] += 1
                    if self.keep_dropped is None or len(self.dropped) < self.keep_dropped:
                        self.dropped.append(result)
                    continue
                seen.add(result.key)
                kept.append(result)
            archs = [c.arch for c in kept]
            for run in _same_depth_runs(archs):
                yield _sampled_batch(name, archs[run], [c.complexity for c in kept[run]],
                                    self.base.complexity, solved.field if solved else None)
            self.points_done += len(chunk)
            self.candidates += len(kept)

    def _count_drops(self, chunk: _Chunk) -> None:
        codes = chunk.code
        dropped = np.flatnonzero(codes != _KEPT)
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
        live = self.code == _KEPT
        stages = _stage_columns(self.fields)
        self.code[live & ~(stages["bottleneck_widths"] >= 1).all(axis=1)] = _ROUNDS_TO_ZERO
        idx = np.flatnonzero(self.code == _KEPT)
        sub = {k: v[idx] for k, v in stages.items()}
        sub_fields = {k: v[idx] for k, v in self.fields.items()}
        self.costs[:, idx] = _count(self.spec, sub_fields, sub)
        base = (self.base.params, self.base.flops)
        for j in range(2):
            diff = (self.costs[j, idx] - base[j]).astype(np.float64)
            self.deviation[j, idx] = 100.0 * diff / base[j]
        self._check(idx)
        kept = idx[self.code[idx] == _KEPT]
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
        self.code[low > rule.high] = _NO_VALID
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
            code[np.abs(self.deviation[j, idx]) > 100.0 * self.rule.tolerance] = _BEYOND_TOLERANCE
        for b, (name, (low, high)) in enumerate(self.bands):
            value = self.costs[("params", "flops", "acts").index(name), idx]
            if low is not None:
                code[(code == _KEPT) & (value < low)] = _CONSTRAINT + 2 * b
            if high is not None:
                code[(code == _KEPT) & (value > high)] = _CONSTRAINT + 2 * b + 1
        self.code[idx] = code

    def _dedupe(self, seen: set[str], kept: np.ndarray, blocks: tuple[str, ...],
                keys: tuple[str, ...]) -> tuple[np.ndarray, tuple[str, ...], tuple[str, ...]]:
        first = []
        for j, (i, key) in enumerate(zip(kept.tolist(), keys, strict=True)):
            if key in seen:
                self.code[i] = _DUPLICATE
                self.keys[i] = key
            else:
                seen.add(key)
                first.append(j)
        pick = np.asarray(first, dtype=np.int64)
        return kept[pick], tuple(blocks[j] for j in first), tuple(keys[j] for j in first)

    def reason_kind(self, code: int) -> str:
        """The reason for a drop without the point's own figures, for counting drops."""
        rule = self.rule
        if code == _NO_VALID and rule is not None:
            return no_valid_reason(rule)
        if code == _ROUNDS_TO_ZERO:
            return ROUNDS_TO_ZERO_REASON
        if code == _BEYOND_TOLERANCE and rule is not None:
            return tolerance_kind(rule)
        if code == _DUPLICATE:
            return SAME_NETWORK_KIND
        name, (low, high) = self.bands[(code - _CONSTRAINT) // 2]
        if (code - _CONSTRAINT) % 2 == 0:
            return constraint_reason(name, "below", low)
        return constraint_reason(name, "above", high)

    def describe(self, i: int) -> Dropped:
        """Point i's drop as `realise` words it."""
        code, rule = int(self.code[i]), self.rule
        values: dict[str, Any] = {k: o[int(c[i])]
                                  for k, o, c in zip(self.names, self.options, self.coords,
                                                     strict=True)}
        if rule is not None and code not in (_NO_VALID, _DUPLICATE):  # as enumerate_per_point does
            values[rule.field] = int(self.fields[rule.field][i])
        if code == _BEYOND_TOLERANCE and rule is not None:
            deviation = float(self.deviation[("params", "flops").index(rule.preserve), i])
            reason = tolerance_reason(rule, deviation, values[rule.field])
        elif code == _DUPLICATE:
            reason = same_network_reason(self.keys[i])
        elif code >= _CONSTRAINT:
            name, (low, high) = self.bands[(code - _CONSTRAINT) // 2]
            value = int(self.costs[("params", "flops", "acts").index(name), i])
            below = (code - _CONSTRAINT) % 2 == 0
            reason = constraint_reason(name, "below" if below else "above",
                                       low if below else high, value)
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
