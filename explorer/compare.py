"""Design spaces compared as distributions: `explorer compare`, and the same in the report
and the dashboard.

From the store's trials frame: per space, the error distribution of its
candidates (the unit is a candidate: its mean final test error over finished
seeds), optionally complexity-normalised; per pair of spaces, the two-sample
KS test and, given a margin D, the equivalence statement beside it ("better",
"worse", "equivalent within D", or "not enough models to say"); per space that
trades d for C at preserved complexity, the verdict on the paper's question
(the effect of doubling C); and how many models per space a KS test needs.
The arithmetic is explorer.stats'; no plotting, no I/O.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from explorer import analysis, stats
from explorer.errors import ExplorerError

__all__ = [
    "BINNING_CHOICES",
    "DEFAULT_NORMALIZE",
    "MANY_SEEDS",
    "MEANS_COLUMNS",
    "NORMALIZE_CHOICES",
    "TRIAL_COLUMNS",
    "CompareError",
    "Comparison",
    "Equivalence",
    "PairTest",
    "SamplePlan",
    "SpaceSummary",
    "Verdict",
    "cardinality_verdicts",
    "compare_or_plain",
    "compare_spaces",
    "equivalence_json",
    "equivalence_statement",
    "json_number",
    "plan_json",
    "plan_samples",
    "plan_sentence",
    "preserved",
    "space_names",
]

NORMALIZE_CHOICES = ("none", "params", "flops")
BINNING_CHOICES = ("log", "linear")  # log: shared log bins (the default); linear: NDS's code
_EQUIVALENCE_DRAWS = 2000
DEFAULT_NORMALIZE = "flops"  # NDS's default: models compared at equal flops
# Within this max/min ratio of params (or flops), a cardinality space counts as "at
# preserved complexity": the paper's solve keeps d's rounding within a few percent, and
# the CPU study's tolerance of 8% spans at most 16/92 ≈ 1.17.
_PRESERVED_RATIO = 1.25
_MIN_CARDINALITIES = 3  # two points always lie on a line: they say nothing about a trend
MANY_SEEDS = 10_000


class CompareError(ExplorerError):
    """A comparison that cannot be made as asked (one line for the user)."""


@dataclass(frozen=True)
class SpaceSummary:
    name: str
    n: int
    min: float
    mean: float             # of the candidates, unweighted
    weighted_mean: float    # of the EDF compared (equal to mean without normalisation)
    n_effective: float      # Kish's effective size of the weights (n without normalisation)
    quantiles: tuple[float, ...]  # the EDF read at stats.QUANTILES


@dataclass(frozen=True)
class Equivalence:
    """What the KS test and the bootstrap bound say together about a against b."""

    margin: float           # D
    upper: float            # the one-sided (1 − α) bootstrap bound of the KS distance
    finding: str            # "better" | "worse" | "equivalent" | "undecided"
    needed: int | None      # models per space that would show equivalence (undecided only)
    sentence: str


@dataclass(frozen=True)
class PairTest:
    a: str
    b: str
    ks_statistic: float
    p_value: float
    n_a: float
    n_b: float
    equivalence: Equivalence | None = None


@dataclass(frozen=True)
class Verdict:
    """The paper's question for one space: what doubling C does to the error."""

    space: str
    sentence: str
    trend: stats.Trend | None = None   # None when the data cannot say


@dataclass(frozen=True)
class SamplePlan:
    ks: float
    alpha: float
    per_space: int                  # closed form, equal weights
    rule: str
    have: dict[str, int] = field(default_factory=dict)
    needed: dict[str, int] = field(default_factory=dict)       # with the weights' Kish loss
    simulated: dict[str, int | None] = field(default_factory=dict)
    detectable: dict[tuple[str, str], float] = field(default_factory=dict)  # at today's n


@dataclass(frozen=True)
class Comparison:
    normalize: str
    bins: int
    spaces: tuple[SpaceSummary, ...]
    pairs: tuple[PairTest, ...]
    verdicts: tuple[Verdict, ...] = ()
    plan: SamplePlan | None = None
    binning: str = "log"
    span: tuple[float, float] | None = None   # the linear bins' fixed range
    margin: float | None = None               # --equivalence D

    def to_json(self) -> dict[str, Any]:
        """The contract's object (spaces: n, min, mean; pairs: a, b, ks_statistic,
        p_value), with more keys beside them."""
        out: dict[str, Any] = {
            "spaces": {s.name: {
                "n": s.n, "min": json_number(s.min), "mean": json_number(s.mean),
                "weighted_mean": json_number(s.weighted_mean),
                "n_effective": json_number(s.n_effective),
                "edf": {f"q{round(level * 100):02d}": json_number(v)
                        for level, v in zip(stats.QUANTILES, s.quantiles, strict=True)},
            } for s in self.spaces},
            "pairs": [{"a": p.a, "b": p.b, "ks_statistic": json_number(p.ks_statistic),
                       "p_value": json_number(p.p_value), "n_a": json_number(p.n_a),
                       "n_b": json_number(p.n_b),
                       **({"equivalence": equivalence_json(p.equivalence)}
                          if p.equivalence is not None else {})} for p in self.pairs],
            "normalize": self.normalize,
            "bins": self.bins,
            "binning": self.binning,
            "range": list(self.span) if self.span is not None else None,
            "equivalence_margin": self.margin,
            "verdicts": [_verdict_json(v) for v in self.verdicts],
        }
        if self.plan is not None:
            out["plan"] = plan_json(self.plan)
        return out


def json_number(value: float) -> float | None:
    """JSON has no NaN: a missing figure is null."""
    return None if value is None or not math.isfinite(value) else float(value)


def space_names(trials: pd.DataFrame) -> list[str]:
    """Every space the trials frame names, sorted."""
    if trials.empty:
        return []
    return sorted(trials["space"].dropna().astype(str).unique().tolist())


# The trials frame's columns a comparison reads (Reader.trials_frame(columns=...)), beside
# the candidates' means over seeds (Reader.candidate_means, or analysis.by_candidate).
TRIAL_COLUMNS = ("experiment", "trial_id", "key", "space", "cardinality", "seed", "status",
                 "test_error")
# TRIAL_COLUMNS and what analysis.by_candidate needs to make the means over seeds that a
# comparison reads (complexity for the weights, the architecture's columns for the spaces'
# kinds): one narrow read of a large experiment, its means made in memory, costs less than
# reading the means aggregated by the database beside it.
MEANS_COLUMNS = (*TRIAL_COLUMNS, "bottleneck_width", "depths", "widths", "params", "flops",
                 "test_top5_error", "train_images_per_sec", "latency_ms")


def compare_or_plain(trials: pd.DataFrame, *, spaces: Sequence[str] | None = None,
                     normalize: str = DEFAULT_NORMALIZE, bins: int = 10,
                     span: tuple[float, float] | None = None, margin: float | None = None,
                     candidates: pd.DataFrame | None = None,
                     ) -> tuple[Comparison, str | None]:
    """The comparison `explorer compare`, the report and the dashboard show, and the note
    saying why it is not normalised where the spaces share no complexity bin: then the
    plain EDFs (unweighted) are compared instead. A caller that was asked for `normalize`
    explicitly may refuse instead (the CLI does; the note is the reason). `span`,
    `margin` and `candidates` are compare_spaces's (NDS's linear bins, the equivalence
    margin, the means over seeds)."""
    try:
        return compare_spaces(trials, spaces=spaces, normalize=normalize, bins=bins, span=span,
                              margin=margin, candidates=candidates), None
    except CompareError as problem:
        return compare_spaces(trials, spaces=spaces, normalize="none", bins=bins,
                              margin=margin, candidates=candidates), str(problem)


def compare_spaces(trials: pd.DataFrame, *, spaces: Sequence[str] | None = None,
                   normalize: str = DEFAULT_NORMALIZE, bins: int = 10,
                   span: tuple[float, float] | None = None, margin: float | None = None,
                   draws: int = _EQUIVALENCE_DRAWS, seed: int = 0,
                   candidates: pd.DataFrame | None = None) -> Comparison:
    """Summaries, pairwise KS tests and verdicts for the spaces of one experiment's trials.

    Normalisation weighs all compared spaces together (the bins every one of them
    occupies; see explorer.stats), so the summaries, the EDFs and the tests use one
    weighting; choose `spaces` to compare two alone. With `span` (LO, HI) the bins are
    NDS's instead: linear over that range, each space weighted on its own, an empty
    bin refused. With `margin` each pair also gets the equivalence statement.
    `candidates` are the trials' means over seeds when already made
    (`analysis.by_candidate(trials)` otherwise); `trials` then needs only TRIAL_COLUMNS.
    """
    names = list(spaces) if spaces else space_names(trials)
    candidates = _means(trials, candidates)
    parts = {name: candidates[candidates["space"] == name] for name in names}
    present = [name for name in names if not parts[name].empty]
    by = None if normalize == "none" else normalize
    try:
        weight_list = analysis.group_weights([parts[n] for n in present], by, bins, span) \
            if present else []
    except stats.EmptyBin as empty:
        space = next(n for n in present if _has_empty_bin(parts[n], by, bins, span))
        raise CompareError(f"--binning linear: space {space}'s {by} {empty}; widen --range, "
                           "use fewer --bins, or draw more models") from None
    except stats.NoCommonComplexity:
        raise CompareError(
            f"the spaces {', '.join(present)} share none of the {bins} log-spaced {by} bins "
            f"over their range, so no weighting gives them the same {by} distribution; compare "
            "fewer spaces (--space), use fewer --bins, or --normalize none") from None
    weights = dict(zip(present, weight_list, strict=True))
    errors = {name: parts[name]["test_error_mean"].to_numpy(dtype=float) for name in names}
    summaries = tuple(_summarise(name, errors[name], weights.get(name)) for name in names)
    pairs = tuple(_pair_test(a, b, errors, weights, by is not None)
                  for a, b in itertools.combinations(names, 2))
    if margin is not None:
        rng = np.random.default_rng(seed)
        pairs = tuple(dataclasses.replace(p, equivalence=_pair_equivalence(
            p, errors, weights, margin, draws=draws, rng=rng))
            if p.a in weights and p.b in weights else p for p in pairs)
    return Comparison(normalize=normalize, bins=bins, spaces=summaries, pairs=pairs,
                      verdicts=tuple(cardinality_verdicts(trials, names,
                                                          candidates=candidates)),
                      binning="log" if span is None else "linear", span=span, margin=margin)


def _has_empty_bin(part: pd.DataFrame, by: str | None, bins: int,
                   span: tuple[float, float] | None) -> bool:
    try:
        analysis.group_weights([part], by, bins, span)
    except stats.EmptyBin:
        return True
    return False


def _means(trials: pd.DataFrame, candidates: pd.DataFrame | None) -> pd.DataFrame:
    """The candidates' means over seeds (made from `trials` when not given), spaces as text."""
    means = analysis.by_candidate(trials) if candidates is None else candidates
    return means.assign(space=means["space"].astype(str))


def _summarise(name: str, errors: np.ndarray, weights: np.ndarray | None) -> SpaceSummary:
    nan = math.nan
    if weights is None or errors.size == 0:
        return SpaceSummary(name, 0, nan, nan, nan, 0.0, tuple(nan for _ in stats.QUANTILES))
    return SpaceSummary(
        name=name, n=int(errors.size), min=float(errors.min()), mean=float(errors.mean()),
        weighted_mean=float(np.sum(weights * errors)), n_effective=stats.kish_size(weights),
        quantiles=tuple(float(v) for v in stats.weighted_quantiles(errors, weights)),
    )


def _pair_test(a: str, b: str, errors: dict[str, np.ndarray], weights: dict[str, np.ndarray],
              weighted: bool) -> PairTest:
    if a not in weights or b not in weights:  # a space without finished candidates
        return PairTest(a, b, math.nan, math.nan, float(errors[a].size), float(errors[b].size))
    if weighted:
        result = stats.ks_test(errors[a], errors[b], weights[a], weights[b])
    else:
        result = stats.ks_test(errors[a], errors[b])
    return PairTest(a, b, result.statistic, result.p_value, result.n_a, result.n_b)


# --- equivalence ----------------------------------------------------------------------------


def _pair_equivalence(pair: PairTest, errors: dict[str, np.ndarray],
                     weights: dict[str, np.ndarray], margin: float, *, draws: int,
                     rng: np.random.Generator, alpha: float = stats.ALPHA) -> Equivalence:
    """The equivalence statement for one pair, from its KS test and a bootstrap bound."""
    distances = stats.bootstrap_ks(errors[pair.a], weights[pair.a], errors[pair.b],
                                   weights[pair.b], draws=draws, rng=rng)
    ahead, behind = stats.signed_ks(errors[pair.a], weights[pair.a], errors[pair.b],
                                    weights[pair.b])
    return equivalence_statement(pair.a, pair.b, p_value=pair.p_value,
                                 a_ahead=ahead >= behind, upper=stats.ks_upper_bound(distances,
                                                                                     alpha),
                                 margin=margin, n_a=pair.n_a, n_b=pair.n_b,
                                 sizes=(errors[pair.a].size, errors[pair.b].size), alpha=alpha)


def equivalence_statement(a: str, b: str, *, p_value: float, a_ahead: bool, upper: float,
                          margin: float, n_a: float, n_b: float, sizes: tuple[int, int],
                          alpha: float = stats.ALPHA) -> Equivalence:
    """"a is better than b", "worse", "equivalent within D" or "not enough models to say",
    in one sentence. A significant KS test decides the direction; otherwise the bound must
    fall below D; otherwise the sentence says how many models would show equivalence
    (equal spaces' closed form, scaled by the weights' loss of effective size)."""
    bound = f"{1 - alpha:.0%} bootstrap bound of the KS distance {upper:.3f}"
    within = upper < margin
    if p_value < alpha:
        finding = "better" if a_ahead else "worse"
        tail = (f", though within {margin:g} of each other ({bound})" if within else "")
        return Equivalence(margin, upper, finding, None,
                           f"{a} is {finding} than {b} (KS p = {p_value:.3g}){tail}")
    if within:
        return Equivalence(margin, upper, "equivalent", None,
                           f"{a} and {b} are equivalent within {margin:g} ({bound}, below "
                           f"{margin:g}; KS p = {p_value:.3g})")
    base = stats.equivalence_samples_needed(margin, alpha)
    loss = max(sizes[0] / n_a if n_a > 0 else 1.0, sizes[1] / n_b if n_b > 0 else 1.0)
    needed = math.ceil(base * loss - 1e-9)
    return Equivalence(margin, upper, "undecided", needed,
                       f"{a} vs {b}: not enough models to say (no significant difference, KS "
                       f"p = {p_value:.3g}, but the {bound} is not below {margin:g}); about "
                       f"{needed} models per space would show equivalence within {margin:g} "
                       "if the spaces are the same")


def equivalence_json(eq: Equivalence) -> dict[str, Any]:
    return {"margin": eq.margin, "upper_bound": json_number(eq.upper), "finding": eq.finding,
            "needed": eq.needed, "sentence": eq.sentence}


# --- the verdict ----------------------------------------------------------------------------


def cardinality_verdicts(trials: pd.DataFrame, spaces: Sequence[str] | None = None, *,
                         draws: int = 2000, seed: int = 0,
                         candidates: pd.DataFrame | None = None) -> list[Verdict]:
    """A verdict per space that trades d for C at preserved complexity: only C and d vary,
    and params or flops stay within _PRESERVED_RATIO. `candidates` as compare_spaces's."""
    done = analysis.finished(trials)
    if done.empty:
        return []
    done = done.assign(space=done["space"].astype(str))
    candidates = _means(done, candidates)
    kinds = analysis.space_kinds(candidates)
    verdicts = []
    for name in spaces or sorted(kinds):
        if kinds.get(name) != "cardinality" or not preserved(candidates[candidates["space"]
                                                                        == name]):
            continue
        verdicts.append(_space_verdict(name, done[done["space"] == name], draws=draws, seed=seed))
    return verdicts


def preserved(candidates: pd.DataFrame) -> bool:
    """Whether the candidates' params or flops stay within _PRESERVED_RATIO of each other."""
    for column in ("params", "flops"):
        values = pd.to_numeric(candidates[column], errors="coerce").dropna()
        if not values.empty and values.min() > 0 \
                and values.max() / values.min() <= _PRESERVED_RATIO:
            return True
    return False


def _space_verdict(space: str, runs: pd.DataFrame, *, draws: int = 2000, seed: int = 0
                  ) -> Verdict:
    """The slope of error per doubling of C over one space's finished runs, in a sentence."""
    cardinality = pd.to_numeric(runs["cardinality"], errors="coerce")
    runs = runs[cardinality.notna() & (cardinality > 0)]
    distinct = int(runs["cardinality"].nunique())
    if distinct < _MIN_CARDINALITIES:
        return Verdict(space, f"{space}: too few points to say: finished runs at {distinct} "
                              f"cardinalit{'y' if distinct == 1 else 'ies'} "
                              f"(a trend needs at least {_MIN_CARDINALITIES})")
    trend = stats.cardinality_trend(
        runs["cardinality"].to_numpy(dtype=float), runs["test_error"].to_numpy(dtype=float),
        runs["seed"].to_numpy(), runs["key"].astype(str).to_numpy(), draws=draws, rng_seed=seed)
    log2c = np.log2(np.sort(runs["cardinality"].unique().astype(float)))
    return Verdict(space, _verdict_sentence(space, trend, log2c), trend)


def _verdict_sentence(space: str, trend: stats.Trend, log2_cardinalities: np.ndarray) -> str:
    """"error falls by X points per doubling of C, 95% CI [a, b]" (with "but the trend test
    does not confirm it" where Kendall's test disagrees), or why no trend shows."""
    level = f"{trend.level:.0%}"
    where = (f" ({trend.candidates} cardinalities × {trend.seeds} seed"
             f"{'s' if trend.seeds != 1 else ''}; Kendall τ = {trend.tau:.2f}, "
             f"p = {trend.tau_p:.2g})")
    if trend.detected:
        falls = trend.slope < 0
        size, low, high = (-trend.slope, -trend.high, -trend.low) if falls \
            else (trend.slope, trend.low, trend.high)
        found = (f"{space}: error {'falls' if falls else 'rises'} by {size:.2f} points per "
                 f"doubling of C, {level} CI [{low:.2f}, {high:.2f}]")
        if trend.confirmed:
            return found + where
        return (f"{found}, but the trend test does not confirm it (Kendall τ = {trend.tau:.2f}, "
                f"p = {trend.tau_p:.2g}, over {trend.candidates} cardinalities × {trend.seeds} "
                f"seed{'s' if trend.seeds != 1 else ''}): not conclusive")
    seeds = f"{trend.seeds} seed{'s' if trend.seeds != 1 else ''}"
    needed = stats.seeds_to_detect(trend.slope, trend.residual_std, log2_cardinalities)
    if not math.isfinite(needed) or needed > MANY_SEEDS:
        return (f"{space}: no trend detectable with {seeds}: the observed slope "
                f"({trend.slope:+.2f} points per doubling of C, {level} CI [{trend.low:.2f}, "
                f"{trend.high:.2f}]) is too small against the runs' spread for any practical "
                f"number of seeds to detect{where}")
    return (f"{space}: no trend detectable with {seeds}; about {max(math.ceil(needed), 2)} "
            f"seeds would detect {abs(trend.slope):.2f} points per doubling of C (the observed "
            f"slope, at 80% power; {level} CI now [{trend.low:+.2f}, {trend.high:+.2f}]){where}")


def _verdict_json(verdict: Verdict) -> dict[str, Any]:
    trend = verdict.trend
    out: dict[str, Any] = {"space": verdict.space, "sentence": verdict.sentence}
    if trend is not None:
        out.update(slope=json_number(trend.slope),
                   ci=[json_number(trend.low), json_number(trend.high)],
                   level=trend.level, detected=trend.detected,
                   confirmed=trend.detected and trend.confirmed,
                   kendall_tau=json_number(trend.tau),
                   kendall_p=json_number(trend.tau_p), candidates=trend.candidates,
                   seeds=trend.seeds, runs=trend.points)
    return out


# --- the sample-size planner ----------------------------------------------------------------


def plan_samples(comparison: Comparison, trials: pd.DataFrame, *, ks: float = 0.1,
                 alpha: float = stats.ALPHA, simulate: bool = True, seed: int = 0,
                 candidates: pd.DataFrame | None = None) -> SamplePlan:
    """How many models per space a KS test at level `alpha` needs to flag a distance `ks`:
    the closed form, the same with the normalisation's loss of effective size, and (with
    `simulate`) the noise floor simulated from each space's observed errors."""
    per_space = stats.ks_samples_needed(ks, alpha)
    rule = (f"n = m = ceil(2·c(α)²/D²), c(α) = sqrt(-ln(α/2)/2) = "
            f"{stats.ks_coefficient(alpha):.3f} at α = {alpha:g}: two samples of sizes n and m "
            f"differ significantly once their KS distance exceeds c(α)·sqrt((n+m)/(n·m))")
    candidates = _means(trials, candidates)
    have, needed, simulated = {}, {}, {}
    for space in comparison.spaces:
        have[space.name] = space.n
        if space.n == 0:
            continue
        kept = space.n_effective / space.n  # what the weights leave of each model
        # (the tolerance: equal weights' Kish size is n up to rounding)
        needed[space.name] = math.ceil(per_space / kept - 1e-9) if kept > 0 else per_space
        errors = candidates.loc[candidates["space"] == space.name,
                                "test_error_mean"].to_numpy(dtype=float)
        if simulate and errors.size >= 2:
            simulated[space.name] = stats.simulated_samples_needed(errors, ks, alpha=alpha,
                                                                   seed=seed)
    detectable = {(p.a, p.b): stats.ks_critical(p.n_a, p.n_b, alpha)
                  for p in comparison.pairs if p.n_a > 0 and p.n_b > 0}
    return SamplePlan(ks=ks, alpha=alpha, per_space=per_space, rule=rule, have=have,
                      needed=needed, simulated=simulated, detectable=detectable)


def plan_json(plan: SamplePlan) -> dict[str, Any]:
    return {
        "ks": plan.ks, "alpha": plan.alpha, "per_space": plan.per_space, "rule": plan.rule,
        "have": plan.have, "needed": plan.needed, "simulated": plan.simulated,
        "detectable_now": [{"a": a, "b": b, "ks": json_number(d)}
                           for (a, b), d in plan.detectable.items()],
    }


def plan_sentence(plan: SamplePlan, normalize: str) -> str:
    """The planner's answer in one line."""
    weighted = "" if normalize == "none" else (
        f" ({', '.join(f'{k}: {v}' for k, v in plan.needed.items())} models once the {normalize} "
        "weights' loss of effective size is counted)")
    return (f"to detect a KS difference of {plan.ks:g} at α = {plan.alpha:g}, each space needs "
            f"about {plan.per_space} models{weighted}")
