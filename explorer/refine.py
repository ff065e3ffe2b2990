"""`explorer refine`: the next design space from the models already trained.

Radosavovic et al. 2020 ("Designing Network Design Spaces", RegNet) refine a
sampled space step by step: AnyNetX_A, then a shared bottleneck ratio b, a
shared group width g, non-decreasing widths, non-decreasing depths, keeping a
constraint when the child space's error EDF is no worse than the parent's. They
read each parameter's good region off an empirical bootstrap of the best models.
This module does both for one sampled space of an experiment, on its finished
candidates (the unit is a candidate: its mean final test error over seeds):

- Good regions (`good_regions`): the models in the order of their content
  keys; for every parameter, per stage where it
  varies (one row when every model has the same value in all stages), the
  paper's bootstrap: `draws` times, a quarter of the models is drawn with
  replacement and the best one's value kept; the 2.5%, 50% and 97.5% points of
  those values (read off their EDF, so they are values a model has) are the
  95% interval and the median. The draws pick models, not values, so one set
  of seeded draws serves every parameter.
- Parameters: depth, width, C, d (the bottleneck width, the channels per group),
  b = width / (C·d) (the bottleneck ratio: the block's inner width is w/b) and
  g = d (the group width), all derived from what the store keeps per stage.
- Proposed constraints (`propose`): shared b, shared g, non-decreasing widths,
  non-decreasing depths, and per drawn field a range cut to its good region
  (the union of its stages' intervals). Each is first read on the models
  already drawn: the models that satisfy it are a sample of the child space
  (rejection sampling draws exactly those), so their normalised EDF is set
  against the parent's. The KS distance is the child's against the parent's;
  the KS test and the direction come from the models that satisfy it against
  those that do not (disjoint samples: the parent's EDF is a mixture of the
  two, so the child equals the parent exactly when it equals the rest, and the
  test's p-value is valid); the equivalence bound resamples the parent's models
  and recomputes the child among them (explorer.compare's sentence). Ranked by
  the finding (better, equivalent, undecided, worse), then by how far the
  child's weighted mean error lies below the parent's, then by the share of
  models the constraint keeps (a smaller child with the same EDF first).
- The child spec (`child_spec`): the parent's recorded spec with a new space
  beside the parent's, named SPACE.CONSTRAINT[.CONSTRAINT…]: the parent's
  sample section (same n, stratification, complexity band, recipe) with the
  chosen constraints added, and a seed no other space of the spec uses, so the
  child is a fresh sample, independent of the parent (the spec's own policy of
  one seed per space), and its KS test against the parent a two-sample test.
  The parent's spaces stay, so their finished trials are reused and `explorer
  compare` sets the two side by side.

Pure numpy / pandas and the spec's YAML; no plotting, no I/O.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import yaml

from explorer import analysis, compare, stats
from explorer.errors import ExplorerError
from explorer.spec import Sample, Spec, SpecError, StageRange, parse_spec, parse_yaml

__all__ = [
    "DRAWS",
    "MARGIN",
    "MEANING",
    "PARAMETERS",
    "POPULATION_COLUMNS",
    "Constraint",
    "Population",
    "Proposal",
    "RefineError",
    "Refinement",
    "Region",
    "child_spec",
    "choose",
    "constraint_candidates",
    "good_regions",
    "interval",
    "population",
    "propose",
    "read_constraint",
    "recorded_sampled_spaces",
    "refine",
    "space_regions",
]

DRAWS = 2000            # the paper's bootstrap draws are 10^4; 2,000 already pins 95% points
_LEVEL = 0.95
_FRACTION = 0.25         # the paper's share of models per bootstrap draw
MARGIN = 0.1            # the equivalence margin (KS distance) by default
_MIN_MODELS = 2          # fewer on one side of a constraint say nothing about it
_CHUNK = 1_000_000       # bootstrap picks per chunk: memory stays flat in the models

# The parameters by name, the per-stage column each derives from, and a word on it.
PARAMETERS = ("depth", "width", "C", "d", "b", "g")
MEANING = {"depth": "blocks", "width": "block output width w", "C": "cardinality (groups)",
           "d": "bottleneck width (channels per group)", "b": "bottleneck ratio w/(C·d)",
           "g": "group width (= d)"}
# The sample.stages field that draws each parameter directly (b and g only in the AnyNet
# parametrisation: bottleneck_ratio, group_width).
_FIELD_OF = {"depth": "depths", "width": "widths", "C": "cardinality", "d": "bottleneck_width",
            "b": "bottleneck_ratio", "g": "group_width"}
_FINDING_ORDER = {"better": 0, "equivalent": 1, "undecided": 2, "worse": 3}


class RefineError(ExplorerError):
    """A refinement that cannot be made as asked (one line for the user)."""


# --- the population ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Population:
    """One sampled space's finished candidates: errors, complexity, per-stage parameters."""

    keys: np.ndarray
    errors: np.ndarray
    params: np.ndarray
    flops: np.ndarray
    stages: Mapping[str, np.ndarray]   # parameter -> (models, stages)

    @property
    def size(self) -> int:
        return int(self.errors.size)


# The trials frame's columns `population` reads (Reader.trials_frame(columns=...)): the
# means over seeds, complexity and every stage's lists, with the dashboard's filter columns.
POPULATION_COLUMNS = ("experiment", "trial_id", "key", "space", "seed", "status", "test_error",
                      "test_top5_error", "train_images_per_sec", "latency_ms", "cardinality",
                      "bottleneck_width", "depths", "widths", "cardinalities",
                      "bottleneck_widths", "params", "flops", "acts")


def population(trials: pd.DataFrame, space: str) -> Population:
    """The candidates of `space` with a finished run, from the store's trials frame."""
    rows = trials[trials["space"].astype(str) == space]
    means = analysis.by_candidate(rows)
    if means.empty:
        return Population(np.array([], dtype=object), np.zeros(0), np.zeros(0), np.zeros(0),
                          {p: np.zeros((0, 0)) for p in PARAMETERS})
    # In the order of their content keys: the bootstrap's seeded picks index this order.
    means = means.sort_values("key", kind="stable").reset_index(drop=True)
    lists = rows.drop_duplicates("key").set_index("key")
    keys = means["key"].astype(str).to_numpy()

    def matrix(column: str) -> np.ndarray:
        return np.array(lists[column].reindex(keys).tolist(), dtype=float)

    depth, width = matrix("depths"), matrix("widths")
    card, d = matrix("cardinalities"), matrix("bottleneck_widths")
    return Population(
        keys=keys, errors=means["test_error_mean"].to_numpy(dtype=float),
        params=means["params"].to_numpy(dtype=float), flops=means["flops"].to_numpy(dtype=float),
        stages={"depth": depth, "width": width, "C": card, "d": d, "b": width / (card * d),
                "g": d},
    )


# --- good regions: the empirical bootstrap ----------------------------------------------------


@dataclass(frozen=True)
class Region:
    """A parameter's good region: where the best models' values fall."""

    parameter: str
    stage: int | None       # 1-based; None when every model has one value in all stages
    low: float              # the interval at `level`
    median: float
    high: float
    level: float
    best: float             # the best model's value
    distinct: int           # distinct values among the models

    @property
    def label(self) -> str:
        return f"{self.parameter}, {'all stages' if self.stage is None else f'stage {self.stage}'}"


def _best_of_quarters(errors: np.ndarray, *, draws: int = DRAWS, seed: int = 0,
                     fraction: float = _FRACTION) -> np.ndarray:
    """The index of the best model in each of `draws` resamples of a quarter of the models
    (with replacement): `rng.integers(0, n, (rows, m))` in chunks of _CHUNK picks, the first
    smallest error of each row."""
    n = errors.size
    m = max(1, round(n * fraction))
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK // m)
    out = []
    for start in range(0, draws, rows):
        picks = rng.integers(0, n, (min(rows, draws - start), m))
        out.append(picks[np.arange(picks.shape[0]), np.argmin(errors[picks], axis=1)])
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def interval(values: np.ndarray, level: float = _LEVEL) -> tuple[float, float, float]:
    """(low, median, high) of the bootstrap's values, read off their EDF (values it has)."""
    tail = (1 - level) / 2
    low, median, high = np.quantile(values, [tail, 0.5, 1 - tail], method="inverted_cdf")
    return float(low), float(median), float(high)


def good_regions(pop: Population, *, draws: int = DRAWS, seed: int = 0,
                 level: float = _LEVEL) -> tuple[Region, ...]:
    """Every parameter's good region, per stage where it varies (see the module's notes)."""
    if pop.size == 0:
        return ()
    best = _best_of_quarters(pop.errors, draws=draws, seed=seed)
    top = int(np.argmin(pop.errors))
    regions = []
    for name in PARAMETERS:
        table = pop.stages[name]
        for stage, column in _varying(table):
            low, median, high = interval(column[best], level)
            regions.append(Region(name, stage, low, median, high, level, float(column[top]),
                                  int(np.unique(column).size)))
    return tuple(regions)


def _varying(table: np.ndarray) -> list[tuple[int | None, np.ndarray]]:
    """The columns to read: one (stage None) when all stages are equal in every model, else
    each stage whose value varies between models."""
    if table.size == 0 or np.unique(table).size < 2:
        return []
    if np.all(np.isclose(table, table[:, :1])):
        return [(None, table[:, 0])]
    return [(s + 1, table[:, s]) for s in range(table.shape[1])
            if np.unique(table[:, s]).size > 1]


def _region_frames(pop: Population, regions: Sequence[Region]
                  ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """What the good-regions figure draws: each model's value against its error per region
    (panel, value, error), and each region's interval (panel, low, median, high, level)."""
    points, bands = [], []
    for r in regions:
        table = pop.stages[r.parameter]
        values = table[:, 0] if r.stage is None else table[:, r.stage - 1]
        points.append(pd.DataFrame({"panel": r.label, "value": values, "error": pop.errors}))
        bands.append({"panel": r.label, "low": r.low, "median": r.median, "high": r.high,
                      "level": r.level})
    columns = ["panel", "value", "error"]
    return (pd.concat(points, ignore_index=True) if points else pd.DataFrame(columns=columns),
            pd.DataFrame(bands, columns=["panel", "low", "median", "high", "level"]))


def space_regions(trials: pd.DataFrame, space: str, *, draws: int = DRAWS, seed: int = 0
                  ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """region_frames for one space of a trials frame (empty with fewer than four models), as
    the report and the dashboard draw them."""
    pop = population(trials, space)
    if pop.size < 2 * _MIN_MODELS:
        return _region_frames(pop, ())
    return _region_frames(pop, good_regions(pop, draws=draws, seed=seed))


# --- proposed constraints -------------------------------------------------------------------


@dataclass(frozen=True)
class Proposal:
    """A constraint read on the drawn models: the child (those that satisfy it) against the
    parent."""

    name: str                       # the id --constraint takes: shared-b, nd-widths, cut-widths
    description: str
    kept: int                       # models that satisfy it
    total: int
    ks_statistic: float             # the child's EDF against the parent's
    p_value: float                  # KS test: the models that satisfy it against the rest
    child_mean: float               # weighted mean errors
    parent_mean: float
    equivalence: compare.Equivalence
    edit: tuple[str, str, Any]      # ("shared" | "non_decreasing" | "cut", field, new rule)
    writable: str | None            # None when --write can add it, else why not
    rank: int = 0

    @property
    def kept_share(self) -> float:
        return self.kept / self.total if self.total else 0.0


@dataclass(frozen=True)
class Constraint:
    """A constraint before it is read: which models satisfy it and how it edits the spec."""

    name: str
    description: str
    mask: np.ndarray
    edit: tuple[str, str, Any]
    writable: str | None


def constraint_candidates(pop: Population, sample: Sample,
                          regions: Sequence[Region]) -> list[Constraint]:
    """The constraints worth reading on these models: shared b and g, non-decreasing widths
    and depths, and range cuts to good regions, each unless every model already obeys it."""
    drawn = sample.stages.present()
    out = []
    for name, parameter in (("shared-b", "b"), ("shared-g", "g")):
        table = pop.stages[parameter]
        mask = np.all(np.isclose(table, table[:, :1]), axis=1)
        field = _shared_field(parameter, drawn)
        why = (None if field is not None else
               f"the space draws no {_FIELD_OF[parameter]} (RegNet's AnyNet parametrisation): "
               f"its {parameter} follows from w, C and d, and cannot be shared by a spec"
               if parameter == "b" else
               "the space draws neither group_width nor bottleneck_width")
        out.append(Constraint(name, f"{parameter} shared by all stages ({MEANING[parameter]})",
                             mask, ("shared", field or _FIELD_OF[parameter], None), why))
    for name, parameter in (("nd-widths", "width"), ("nd-depths", "depth")):
        field = _FIELD_OF[parameter]
        mask = np.all(np.diff(pop.stages[parameter], axis=1) >= 0, axis=1)
        why = None if field in drawn else f"the space does not draw {field}"
        out.append(Constraint(name, f"non-decreasing {field}", mask,
                             ("non_decreasing", field, None), why))
    for parameter, field in _FIELD_OF.items():
        rule = drawn.get(field)
        mine = [r for r in regions if r.parameter == parameter]
        if rule is None or not mine:
            continue
        low, high = min(r.low for r in mine), max(r.high for r in mine)
        table = pop.stages[parameter]
        mask = np.all((table >= low - 1e-9) & (table <= high + 1e-9), axis=1)
        cut = _cut_rule(rule, low, high)
        out.append(Constraint(f"cut-{field}", f"{field} cut to its good region "
                             f"[{_value(low)}, {_value(high)}]", mask,
                             ("cut", field, cut),
                             None if cut is not None else "no value of the rule lies inside"))
    return [c for c in out if c.edit[1] not in _already(sample, c.edit[0])]


def _already(sample: Sample, kind: str) -> tuple[str, ...]:
    return tuple(sample.shared) if kind == "shared" else (
        tuple(sample.non_decreasing) if kind == "non_decreasing" else ())


def _shared_field(parameter: str, drawn: Mapping[str, Any]) -> str | None:
    """The sample.stages field whose sharing makes `parameter` shared: b by bottleneck_ratio;
    g by group_width, or by bottleneck_width (g = d) in the C-and-d parametrisation."""
    if _FIELD_OF[parameter] in drawn:
        return _FIELD_OF[parameter]
    if parameter == "g" and "bottleneck_width" in drawn:
        return "bottleneck_width"
    return None


def _cut_rule(rule: Any, low: float, high: float) -> Any:
    """The stage rule limited to [low, high]: a range's steps inside it, a list's values
    inside it; None when nothing is left."""
    if isinstance(rule, StageRange):
        if rule.log:
            lo, hi = max(rule.low, math.ceil(low)), min(rule.high, math.floor(high))
            return {"low": lo, "high": hi, "log": True} if lo <= hi else None
        lo = rule.low + rule.step * max(0, math.ceil((low - rule.low) / rule.step - 1e-9))
        hi = rule.low + rule.step * math.floor((min(high, rule.high) - rule.low) / rule.step
                                               + 1e-9)
        if lo > hi:
            return None
        return {"low": int(lo), "high": int(hi), **({"step": rule.step} if rule.step != 1
                                                      else {})}
    kept = [int(v) for v in rule if low - 1e-9 <= v <= high + 1e-9]
    return kept or None


def _value(v: float) -> str:
    return f"{v:g}"


def propose(pop: Population, sample: Sample, regions: Sequence[Region], *,
            normalize: str | None = "flops", bins: int = 10, margin: float = MARGIN,
            draws: int = DRAWS, seed: int = 0
            ) -> tuple[tuple[Proposal, ...], tuple[tuple[str, str], ...]]:
    """Each constraint read on the drawn models, ranked (see the module's notes); and the
    constraints that could not be read, with why."""
    read, unread = [], []
    rng = np.random.default_rng(seed)
    for c in constraint_candidates(pop, sample, regions):
        kept = int(c.mask.sum())
        if kept == pop.size:
            unread.append((c.name, f"every drawn model satisfies it ({kept} of {pop.size}): "
                                   "it changes nothing the models can show"))
            continue
        if kept < _MIN_MODELS or pop.size - kept < _MIN_MODELS:
            unread.append((c.name, f"{kept} of {pop.size} models satisfy it; reading it needs "
                                   f"at least {_MIN_MODELS} on each side"))
            continue
        read.append(read_constraint(pop, c, normalize=normalize, bins=bins, margin=margin,
                                    draws=draws, rng=rng))
    ranked = sorted(read, key=lambda p: (_FINDING_ORDER[p.equivalence.finding],
                                         p.child_mean - p.parent_mean, p.kept_share))
    return tuple(_with_rank(p, i + 1) for i, p in enumerate(ranked)), tuple(unread)


def _with_rank(p: Proposal, rank: int) -> Proposal:
    return dataclasses.replace(p, rank=rank)


def _weights(complexities: Sequence[np.ndarray], normalize: str | None,
             bins: int) -> list[np.ndarray]:
    """NDS weights over the log bins the groups share; equal where they share none."""
    if normalize is not None:
        try:
            return stats.nds_weights(complexities, bins)
        except stats.NoCommonComplexity:
            pass
    return [np.full(c.size, 1.0 / c.size) for c in complexities]


def read_constraint(pop: Population, c: Constraint, *, normalize: str | None, bins: int,
                    margin: float, draws: int, rng: np.random.Generator) -> Proposal:
    """One constraint on the drawn models: the child's EDF against the parent's, the KS test of
    the child against the rest, the equivalence bound by resampling the parent."""
    size = {"params": pop.params, "flops": pop.flops}.get(normalize or "", pop.flops)
    child, rest = c.mask, ~c.mask
    w_child, w_parent = _weights([size[child], size], normalize, bins)
    errors = pop.errors
    distance = stats.ks_distance(errors[child], w_child, errors, w_parent)
    ahead, behind = stats.signed_ks(errors[child], w_child, errors, w_parent)
    w_in, w_out = _weights([size[child], size[rest]], normalize, bins)
    test = stats.ks_test(errors[child], errors[rest], w_in, w_out)
    # The bound: the parent's models resampled; the child is whoever satisfies it among them.
    # The models are put in error order once: a resample's counts are exchangeable, so they
    # are drawn in that order directly.
    order = np.argsort(errors, kind="stable")
    on_child = np.zeros(pop.size)
    on_child[child] = w_child
    sorted_errors, on_child, on_parent = errors[order], on_child[order], w_parent[order]
    bounds = []
    for start in range(0, draws, 256):
        counts = stats.resample_counts(pop.size, min(256, draws - start), rng)
        bounds.append(stats.ks_of_masses(sorted_errors, counts * on_child, counts * on_parent))
    upper = stats.ks_upper_bound(np.concatenate(bounds))
    equivalence = compare.equivalence_statement(
        f"the child ({c.name})", "the parent", p_value=test.p_value, a_ahead=ahead >= behind,
        upper=upper, margin=margin, n_a=stats.kish_size(w_child),
        n_b=stats.kish_size(w_parent), sizes=(int(child.sum()), pop.size))
    return Proposal(
        name=c.name, description=c.description, kept=int(child.sum()), total=pop.size,
        ks_statistic=distance, p_value=test.p_value,
        child_mean=float(np.sum(w_child * errors[child])),
        parent_mean=float(np.sum(w_parent * errors)), equivalence=equivalence, edit=c.edit,
        writable=c.writable)


# --- the whole refinement -------------------------------------------------------------------


@dataclass(frozen=True)
class Refinement:
    experiment: str
    space: str
    models: int
    draws: int
    seed: int
    normalize: str
    margin: float
    regions: tuple[Region, ...]
    proposals: tuple[Proposal, ...]
    not_read: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "experiment": self.experiment, "space": self.space, "models": self.models,
            "bootstrap": {"draws": self.draws, "seed": self.seed, "fraction": _FRACTION,
                          "level": _LEVEL},
            "normalize": self.normalize, "equivalence_margin": self.margin,
            "good_regions": [{
                "parameter": r.parameter, "stage": r.stage, "low": r.low, "median": r.median,
                "high": r.high, "level": r.level, "best": r.best, "distinct": r.distinct,
            } for r in self.regions],
            "proposals": [{
                "rank": p.rank, "name": p.name, "description": p.description, "kept": p.kept,
                "total": p.total, "ks_statistic": p.ks_statistic,
                "p_value": compare.json_number(p.p_value),
                "child_mean": p.child_mean, "parent_mean": p.parent_mean,
                "equivalence": compare.equivalence_json(p.equivalence),
                "writable": p.writable is None, "why_not": p.writable,
            } for p in self.proposals],
            "not_read": [{"name": n, "why": why} for n, why in self.not_read],
        }


def _sampled_spaces(spec: Spec) -> list[str]:
    return [name for name, space in spec.spaces.items() if space.sample is not None]


def recorded_sampled_spaces(spec_text: str) -> list[str]:
    """The sampled spaces of an experiment's recorded spec (none if it no longer parses)."""
    try:
        return _sampled_spaces(parse_spec(spec_text, "recorded spec"))
    except SpecError:
        return []


def refine(trials: pd.DataFrame, spec: Spec, experiment: str, space: str, *,
           draws: int = DRAWS, seed: int = 0, normalize: str = compare.DEFAULT_NORMALIZE,
           bins: int = 10, margin: float = MARGIN) -> Refinement:
    """Good regions and ranked constraints for one sampled space of an experiment."""
    if space not in spec.spaces:
        raise RefineError(f"--space {space!r} is not a space of {experiment!r}; its spaces "
                          f"are: {', '.join(spec.spaces)}")
    sample = spec.spaces[space].sample
    if sample is None:
        sampled = _sampled_spaces(spec)
        raise RefineError(f"--space {space!r} is not sampled (it has axes): refine reads "
                          "per-stage draws; "
                          + (f"sampled spaces: {', '.join(sampled)}" if sampled else
                             f"{experiment!r} has no sampled space"))
    pop = population(trials, space)
    if pop.size < 2 * _MIN_MODELS:
        raise RefineError(f"space {space!r} of {experiment!r} has {pop.size} finished "
                          f"candidates; refine needs at least {2 * _MIN_MODELS}")
    regions = good_regions(pop, draws=draws, seed=seed)
    proposals, unread = propose(pop, sample, regions, normalize=None if normalize == "none"
                                else normalize, bins=bins, margin=margin, draws=draws,
                                seed=seed)
    return Refinement(experiment, space, pop.size, draws, seed, normalize, margin, regions,
                      proposals, unread)


# --- the child spec -------------------------------------------------------------------------


def _child_names(spec: Spec, space: str, chosen: Sequence[Proposal]) -> tuple[str, str]:
    """(experiment, space) names of the child: SPACE.CONSTRAINT… and NAME-refined."""
    child = ".".join([space, *(p.name for p in chosen)])
    return f"{spec.name}-refined"[:64], child[:64]


def child_spec(spec_text: str, spec: Spec, space: str, chosen: Sequence[Proposal], *,
               name: str | None = None, source: str = "") -> tuple[str, Spec, str]:
    """The child spec's text, validated, and the child space's name (see the module's notes).

    Raises RefineError naming the first constraint a spec cannot state.
    """
    for p in chosen:
        if p.writable is not None:
            raise RefineError(f"--constraint {p.name}: cannot be written: {p.writable}")
    data = parse_yaml(spec_text).data
    if not isinstance(data, dict):
        raise RefineError("the experiment's recorded spec is not a mapping")
    default_name, child = _child_names(spec, space, chosen)
    if child in spec.spaces:
        raise RefineError(f"the spec already has a space {child!r}")
    parent = copy.deepcopy(data["spaces"][space])
    sample = parent["sample"]
    seeds = [s.sample.seed for s in spec.spaces.values() if s.sample is not None]
    sample["seed"] = max(seeds) + 1
    for p in chosen:
        kind, field, rule = p.edit
        if kind == "cut":
            sample.setdefault("stages", {})[field] = rule
        else:
            listed = list(sample.get(kind) or [])
            if field not in listed:
                sample[kind] = [*listed, field]
    data["name"] = name or default_name
    data["spaces"] = {**data["spaces"], child: parent}
    how = "; ".join(f"{p.name}: {p.description}" for p in chosen)
    header = (f"# written by `explorer refine{source}`: the space {child} is {space} with "
              f"{how}, drawn with a seed of its own\n")
    text = header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True,
                                   default_flow_style=None)
    return text, parse_spec(text, f"{data['name']}.yaml"), child


def choose(proposals: Sequence[Proposal], names: Sequence[str]) -> list[Proposal]:
    """The named proposals, or by default the best-ranked writable one that is better than or
    equivalent to the parent."""
    by_name = {p.name: p for p in proposals}
    if names:
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise RefineError(f"--constraint {unknown[0]!r} is not a proposed constraint; "
                              f"proposed: {', '.join(by_name) or 'none'}")
        return [by_name[n] for n in dict.fromkeys(names)]
    for p in proposals:
        if p.writable is None and p.equivalence.finding in ("better", "equivalent"):
            return [p]
    raise RefineError("no writable constraint is better than or equivalent to the parent; "
                      "choose one with --constraint NAME (proposed: "
                      f"{', '.join(by_name) or 'none'})")
