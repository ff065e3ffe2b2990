"""Statistics for comparing design spaces as distributions (pure numpy and scipy).

Radosavovic et al. 2019 ("On Network Design Spaces for Visual Recognition",
NDS) compare design spaces by the error EDFs of models sampled from them, with
a two-sample Kolmogorov–Smirnov test, after complexity normalisation. This
module holds the arithmetic; explorer.analysis and explorer.compare apply it
to the store's frames.

Choices, written down once:

- Complexity normalisation (`_common_bins`, `nds_weights`): the compared spaces
  share one grid of `bins` equal-width bins of log complexity spanning all
  their models. Only the bins that hold models of *every* compared space count;
  in each space, every such bin gets the same total weight, split equally
  between its models, and models elsewhere get weight 0. Every space then has
  the same complexity distribution (uniform over the shared bins), which is
  what makes their EDFs comparable. With one space this is NDS's "uniform over
  bins" weighting of that space alone.
- NDS-exact normalisation (`linear_bin_weights`): NDS's own code (compute_norm_ws
  in its notebooks) keeps the models strictly inside a fixed complexity range
  (LO, HI), cuts it into `bins` equal-width *linear* bins, and gives a model
  the weight 1 / (models in its bin) / bins; each space is weighted on its own,
  and an empty bin is refused (its weights would not sum to 1). The default
  above instead adapts the bins to the data (log-spaced, over the models' span)
  and keeps only the bins every space occupies, so it never refuses.
- Weighted KS (`ks_test` with weights): the statistic is the largest distance
  between the two weighted EDFs. Its p-value is Smirnov's asymptotic one, as
  scipy.stats.ks_2samp's ``method="asymp"`` computes it, with each sample's
  size replaced by its Kish effective size (Σw)² / Σw²: unequal weights carry
  less information than as many equal ones. Without weights the test *is*
  scipy.stats.ks_2samp.
- Bootstrap bands (`edf_band`): models resampled with replacement, keeping
  their weights (renormalised), from an explicit seeded generator.
- The cardinality trend (`cardinality_trend`): the slope of error against
  log2(C) with one intercept per seed (a fixed-effects fit, so runs of the
  same seed are compared with each other); a 95% bootstrap interval that
  resamples candidates, each with all of its seeds; Kendall's tau between C and
  the candidates' mean errors as the trend test. A slope is reported as found
  when the interval excludes 0, and as confirmed when the trend test agrees at
  5% too (with 6 candidates, the percentile bootstrap alone is optimistic).
- Equivalence (`ks_upper_bound`): two spaces are "equivalent within D" when a
  one-sided (1 − α) bootstrap upper bound of their (weighted) KS distance is
  below D: each space's models resampled with replacement (weights kept,
  renormalised), the distance recomputed, the (1 − α) quantile taken (the
  percentile bound). The bound is conservative: the sample distance is biased
  upwards and the bootstrap adds that bias again, so at a true distance of D it
  falls below D less often than α (a simulation in tests/test_equivalence.py
  measures it). This is the confidence-interval form of a test of H0: distance
  >= D against H1: distance < D at level α. With equal spaces the bound is
  about sqrt(2)·c(α)·sqrt((n+m)/(n·m)) (the sample distance and the bootstrap's
  own noise add as two independent bridges), so showing equivalence needs
  about n = m = 4·c(α)²/D² models per space (`equivalence_samples_needed`):
  twice what detecting a difference of D needs.
- Sample sizes (`ks_samples_needed`): the KS test at level α flags a distance
  D between samples of sizes n and m once D exceeds c(α)·sqrt((n+m)/(n·m)),
  c(α) = sqrt(-ln(α/2)/2); for n = m that is n = 2·c(α)²/D².
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from types import ModuleType

__all__ = [
    "ALPHA",
    "QUANTILES",
    "EmptyBin",
    "KSResult",
    "NoCommonComplexity",
    "Trend",
    "bootstrap_ks",
    "cardinality_trend",
    "edf_band",
    "equivalence_samples_needed",
    "kish_size",
    "ks_coefficient",
    "ks_critical",
    "ks_distance",
    "ks_of_masses",
    "ks_samples_needed",
    "ks_test",
    "ks_upper_bound",
    "linear_bin_weights",
    "nds_weights",
    "resample_counts",
    "residual_std",
    "seeds_to_detect",
    "signed_ks",
    "simulated_samples_needed",
    "weighted_edf",
    "weighted_quantiles",
]

ALPHA = 0.05
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def _scipy_stats() -> ModuleType:
    """scipy.stats, imported when a test runs: it takes seconds to import, and the EDFs that
    explorer.analysis draws from here do not need it."""
    from scipy import stats

    return stats


class NoCommonComplexity(ValueError):
    """The compared spaces share no complexity bin, so no normalisation can make their
    complexity distributions equal."""


# --- EDFs and complexity weights -------------------------------------------------------------


def _renormalise(weights: np.ndarray) -> np.ndarray:
    """Weights scaled to sum to 1 (all-zero weights stay zero)."""
    total = weights.sum()
    return weights / total if total > 0 else weights


def weighted_edf(errors: np.ndarray, weights: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """The EDF of `errors` with a weight per model (weights summing to 1), at each grid value."""
    order = np.argsort(errors)
    cumulative = np.concatenate([[0.0], np.cumsum(weights[order])])
    return cumulative[np.searchsorted(errors[order], grid, side="right")]


def _common_bins(complexities: Sequence[np.ndarray], bins: int = 10) -> np.ndarray:
    """Edges of `bins` equal-width bins of log complexity spanning every group's models."""
    logs = np.log(np.maximum(np.concatenate([np.asarray(c, dtype=float) for c in complexities]),
                             1.0))
    if logs.size == 0:
        return np.linspace(0.0, 1.0, bins + 1)
    return np.linspace(logs.min(), logs.max() + 1e-9, bins + 1)  # the top model in the last bin


def _bin_of(complexity: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The bin index (0 .. bins-1) of each model's log complexity."""
    logs = np.log(np.maximum(np.asarray(complexity, dtype=float), 1.0))
    return np.clip(np.digitize(logs, edges) - 1, 0, edges.size - 2)


def nds_weights(complexities: Sequence[np.ndarray], bins: int = 10) -> list[np.ndarray]:
    """Per group, weights (summing to 1) that make its complexity distribution uniform over
    the bins every group occupies; zero outside them (see the module's notes).

    Raises NoCommonComplexity when no bin holds models of every group.
    """
    edges = _common_bins(complexities, bins)
    which = [_bin_of(c, edges) for c in complexities]
    counts = [np.bincount(w, minlength=bins) for w in which]
    shared = np.logical_and.reduce([c > 0 for c in counts]) if counts else np.zeros(bins, bool)
    if not shared.any():
        raise NoCommonComplexity("no complexity bin holds models of every space")
    out = []
    for w, count in zip(which, counts, strict=True):
        per_model = np.where(shared[w], 1.0 / np.maximum(count[w], 1), 0.0)
        out.append(_renormalise(per_model))
    return out


class EmptyBin(ValueError):
    """A linear complexity bin with no model: NDS's weights cannot be formed."""


def _linear_edges(low: float, high: float, bins: int) -> np.ndarray:
    """The edges of `bins` equal-width linear bins of [low, high] (np.histogram's)."""
    return np.linspace(float(low), float(high), bins + 1)


def linear_bin_weights(complexity: np.ndarray, low: float, high: float,
                       bins: int) -> np.ndarray:
    """NDS's compute_norm_ws: 1 / (models in the bin) / bins for the models strictly inside
    (low, high), 0 outside; EmptyBin names the first bin without a model."""
    values = np.asarray(complexity, dtype=float)
    inside = (values > low) & (values < high)
    edges = _linear_edges(low, high, bins)
    # np.histogram's bins: [e_k, e_k+1), the last closed; the strict range leaves no model
    # on the top edge, so digitize agrees with it.
    which = np.clip(np.digitize(values, edges) - 1, 0, bins - 1)
    counts = np.bincount(which[inside], minlength=bins)
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        k = int(empty[0])
        raise EmptyBin(f"bin {k + 1} of {bins}, [{edges[k]:.4g}, {edges[k + 1]:.4g}), holds "
                       f"no model ({int(empty.size)} of {bins} bins are empty)")
    return np.where(inside, 1.0 / counts[which] / bins, 0.0)


def kish_size(weights: np.ndarray) -> float:
    """Kish's effective sample size (Σw)² / Σw²: n for equal weights, fewer for unequal."""
    squares = float(np.sum(weights ** 2))
    return float(np.sum(weights)) ** 2 / squares if squares > 0 else 0.0


def weighted_quantiles(values: np.ndarray, weights: np.ndarray,
                       levels: Sequence[float] = QUANTILES) -> np.ndarray:
    """The smallest value whose weighted EDF reaches each level (the EDF read backwards)."""
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    at = np.searchsorted(cumulative, np.asarray(levels) * cumulative[-1] - 1e-12, side="left")
    return np.asarray(values, dtype=float)[order][np.minimum(at, values.size - 1)]


def edf_band(errors: np.ndarray, weights: np.ndarray, grid: np.ndarray, *, draws: int,
             level: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A pointwise bootstrap band (low, high) around the weighted EDF at `level` (e.g. 0.9)."""
    if draws == 0 or errors.size == 0:
        edf = weighted_edf(errors, weights, grid)
        return edf, edf
    # Each draw's EDF from how often it drew each model, over the models sorted once: the
    # weighted EDF of the resampled models without sorting every resample again.
    order = np.argsort(errors, kind="stable")
    sorted_weights = np.asarray(weights, dtype=float)[order]
    below = np.searchsorted(errors[order], grid, side="right")  # models at or under each
    curves = np.empty((draws, grid.size))
    for row in range(draws):
        counts = np.bincount(rng.integers(0, errors.size, errors.size), minlength=errors.size)
        cumulative = np.concatenate([[0.0], np.cumsum(counts[order] * sorted_weights)])
        total = cumulative[-1]
        curves[row] = cumulative[below] / total if total > 0 else cumulative[below]
    tail = (1 - level) / 2
    return np.quantile(curves, tail, axis=0), np.quantile(curves, 1 - tail, axis=0)


# --- the two-sample KS test ----------------------------------------------------------------


@dataclass(frozen=True)
class KSResult:
    statistic: float
    p_value: float
    n_a: float  # the samples' sizes: Kish effective sizes when weighted
    n_b: float


def ks_test(a: np.ndarray, b: np.ndarray, weights_a: np.ndarray | None = None,
            weights_b: np.ndarray | None = None) -> KSResult:
    """Two-sample KS test of two error samples; scipy.stats.ks_2samp's when unweighted."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if weights_a is None and weights_b is None:
        result = _scipy_stats().ks_2samp(a, b)
        return KSResult(float(result.statistic), float(result.pvalue), a.size, b.size)
    wa = _renormalise(np.full(a.size, 1.0) if weights_a is None else np.asarray(weights_a, float))
    wb = _renormalise(np.full(b.size, 1.0) if weights_b is None else np.asarray(weights_b, float))
    statistic = ks_distance(a, wa, b, wb)
    n_a, n_b = kish_size(wa), kish_size(wb)
    return KSResult(statistic, _ks_asymptotic_p(statistic, n_a, n_b), n_a, n_b)


def ks_distance(a: np.ndarray, weights_a: np.ndarray, b: np.ndarray,
                weights_b: np.ndarray) -> float:
    """The largest gap between two weighted EDFs (checked at every observed value, where
    the step functions jump)."""
    grid = np.concatenate([a, b])
    if grid.size == 0:
        return 0.0
    gap = weighted_edf(a, weights_a, grid) - weighted_edf(b, weights_b, grid)
    return float(np.max(np.abs(gap)))


def _ks_asymptotic_p(statistic: float, n_a: float, n_b: float) -> float:
    """Smirnov's two-sided asymptotic p-value, computed as scipy.stats.ks_2samp does for
    method="asymp" (kstwo at the rounded n·m/(n+m)), for possibly fractional sizes."""
    if n_a <= 0 or n_b <= 0:
        return float("nan")
    en = max(1.0, float(np.round(n_a * n_b / (n_a + n_b))))
    return float(np.clip(_scipy_stats().kstwo.sf(statistic, en), 0.0, 1.0))


# --- equivalence: a bootstrap upper bound of the KS distance --------------------------------


def ks_of_masses(values: np.ndarray, mass_a: np.ndarray, mass_b: np.ndarray) -> np.ndarray:
    """Per row, the KS distance between two weighted samples given as masses on the pooled,
    sorted `values` (rows: bootstrap draws; each mass row normalised here)."""
    total_a = mass_a.sum(axis=1, keepdims=True)
    total_b = mass_b.sum(axis=1, keepdims=True)
    gap = np.cumsum(mass_a / np.where(total_a > 0, total_a, 1.0)
                    - mass_b / np.where(total_b > 0, total_b, 1.0), axis=1)
    # The EDFs are read after the last of each run of equal values (they jump there).
    last = np.append(values[1:] != values[:-1], True)
    if not last.all():
        gap = gap[:, last]
    return np.abs(gap).max(axis=1)


def resample_counts(n: int, draws: int, rng: np.random.Generator) -> np.ndarray:
    """(draws, n): how often each of n models is drawn when n are drawn with replacement."""
    picks = rng.integers(0, n, (draws, n)) + (np.arange(draws) * n)[:, None]
    return np.bincount(picks.ravel(), minlength=draws * n).reshape(draws, n)


def bootstrap_ks(a: np.ndarray, weights_a: np.ndarray, b: np.ndarray, weights_b: np.ndarray,
                 *, draws: int, rng: np.random.Generator, chunk: int = 256) -> np.ndarray:
    """KS distances between resamples of a and of b (each resampled with replacement, its
    weights kept and renormalised), `draws` of them, in chunks to bound memory."""
    values = np.concatenate([np.asarray(a, float), np.asarray(b, float)])
    order = np.argsort(values, kind="stable")
    n_a = len(a)
    rank = np.empty(values.size, dtype=np.int64)
    rank[order] = np.arange(values.size)  # each model's place in the pooled order
    out = []
    for start in range(0, draws, chunk):
        rows = min(chunk, draws - start)
        mass_a = np.zeros((rows, values.size))
        mass_b = np.zeros((rows, values.size))
        mass_a[:, rank[:n_a]] = resample_counts(n_a, rows, rng) * weights_a
        mass_b[:, rank[n_a:]] = resample_counts(len(b), rows, rng) * weights_b
        out.append(ks_of_masses(values[order], mass_a, mass_b))
    return np.concatenate(out) if out else np.zeros(0)


def ks_upper_bound(distances: np.ndarray, alpha: float = ALPHA) -> float:
    """The one-sided (1 − α) percentile bound of bootstrap KS distances."""
    return float(np.quantile(distances, 1 - alpha)) if distances.size else math.inf


def signed_ks(a: np.ndarray, weights_a: np.ndarray, b: np.ndarray,
              weights_b: np.ndarray) -> tuple[float, float]:
    """(max(F_a − F_b), max(F_b − F_a)): the first is larger when a holds more of its models
    at low errors than b does (a is the better space)."""
    grid = np.concatenate([a, b])
    if grid.size == 0:
        return 0.0, 0.0
    gap = weighted_edf(a, weights_a, grid) - weighted_edf(b, weights_b, grid)
    return float(max(gap.max(), 0.0)), float(max((-gap).max(), 0.0))


def equivalence_samples_needed(margin: float, alpha: float = ALPHA) -> int:
    """Models per space (n = m) at which equal spaces' bound falls to `margin`: 4·c(α)²/D²
    (see the module's notes)."""
    return math.ceil(4 * ks_coefficient(alpha) ** 2 / margin ** 2)


# --- how many samples the KS test needs -----------------------------------------------------


def ks_coefficient(alpha: float = ALPHA) -> float:
    """c(α) = sqrt(-ln(α/2) / 2): 1.358 at α = 0.05 (Smirnov's limit, first term)."""
    return math.sqrt(-math.log(alpha / 2) / 2)


def ks_critical(n: float, m: float, alpha: float = ALPHA) -> float:
    """The smallest KS distance the test at level α flags between samples of sizes n and m."""
    return ks_coefficient(alpha) * math.sqrt((n + m) / (n * m))


def ks_samples_needed(ks: float, alpha: float = ALPHA) -> int:
    """Models per space (n = m) at which a KS distance `ks` reaches the critical value."""
    return math.ceil(2 * ks_coefficient(alpha) ** 2 / ks ** 2)


def _null_ks_quantile(errors: np.ndarray, n: int, *, draws: int, level: float,
                     rng: np.random.Generator) -> float:
    """The `level` quantile of the KS distance between two samples of n models drawn (with
    replacement) from the same observed errors: how far apart two equally good spaces'
    EDFs fall by chance at that n (NDS's n-against-KS analysis, on the data at hand)."""
    uniform = np.full(n, 1.0 / n)
    distances = [ks_distance(errors[rng.integers(0, errors.size, n)], uniform,
                             errors[rng.integers(0, errors.size, n)], uniform)
                 for _ in range(draws)]
    return float(np.quantile(distances, level))


def simulated_samples_needed(errors: np.ndarray, ks: float, *, alpha: float = ALPHA,
                             draws: int = 200, seed: int = 0, largest: int = 5000) -> int | None:
    """The smallest n (on a geometric grid) at which two n-samples of these errors are
    closer than `ks` in (1 - α) of the draws; None when not even `largest` is enough."""
    rng = np.random.default_rng(seed)
    grid = np.unique(np.geomspace(4, largest, 40).astype(int))
    for n in grid:
        if _null_ks_quantile(errors, int(n), draws=draws, level=1 - alpha, rng=rng) < ks:
            return int(n)
    return None


# --- the verdict: error against log2(C) -----------------------------------------------------


@dataclass(frozen=True)
class Trend:
    """The slope of error (points) per doubling of C, and what backs it."""

    slope: float
    low: float              # the bootstrap interval at `level`
    high: float
    level: float
    tau: float              # Kendall's tau between C and the candidates' mean errors
    tau_p: float
    candidates: int
    seeds: int
    points: int
    residual_std: float     # of single runs around the fit (seed intercepts removed)
    draws: int              # bootstrap draws that had two or more cardinalities

    @property
    def detected(self) -> bool:
        """Whether the interval excludes 0."""
        return self.low > 0 or self.high < 0

    @property
    def confirmed(self) -> bool:
        """Whether the trend test agrees at ALPHA. With few candidates a percentile bootstrap
        is optimistic, so a slope is stated as found only when both say so."""
        return self.tau_p < ALPHA


def _fixed_effects_slope(x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> float:
    """The least-squares slope of y on x with one intercept per group (NaN when x does not
    vary within any group)."""
    _, inverse = np.unique(groups, return_inverse=True)
    counts = np.bincount(inverse)
    x_within = x - (np.bincount(inverse, x) / counts)[inverse]
    y_within = y - (np.bincount(inverse, y) / counts)[inverse]
    sxx = float(np.sum(x_within ** 2))
    return float(np.sum(x_within * y_within) / sxx) if sxx > 1e-12 else float("nan")


def residual_std(x: np.ndarray, y: np.ndarray, groups: np.ndarray, slope: float) -> float:
    """The standard deviation of the fixed-effects fit's residuals (degrees of freedom:
    points − groups − 1)."""
    _, inverse = np.unique(groups, return_inverse=True)
    counts = np.bincount(inverse)
    residual = y - slope * x
    residual = residual - (np.bincount(inverse, residual) / counts)[inverse]
    dof = x.size - counts.size - 1
    return float(np.sqrt(np.sum(residual ** 2) / dof)) if dof > 0 else float("nan")


def cardinality_trend(cardinality: np.ndarray, error: np.ndarray, seed: np.ndarray,
                      candidate: np.ndarray, *, draws: int = 2000, level: float = 0.95,
                      rng_seed: int = 0) -> Trend:
    """Error against log2(C), one point per run (candidate × seed); see the module's notes.

    The bootstrap draws the candidates with replacement (each keeps all of its
    seeds' runs) and refits; draws where C does not vary are left out.
    """
    x = np.log2(np.asarray(cardinality, dtype=float))
    y = np.asarray(error, dtype=float)
    seed, candidate = np.asarray(seed), np.asarray(candidate)
    slope = _fixed_effects_slope(x, y, seed)
    keys, rows_of = np.unique(candidate, return_inverse=True)
    members = [np.flatnonzero(rows_of == k) for k in range(keys.size)]
    rng = np.random.default_rng(rng_seed)
    slopes = []
    for _ in range(draws):
        rows = np.concatenate([members[k] for k in rng.integers(0, keys.size, keys.size)])
        value = _fixed_effects_slope(x[rows], y[rows], seed[rows])
        if not math.isnan(value):
            slopes.append(value)
    tail = (1 - level) / 2
    low, high = (np.quantile(slopes, [tail, 1 - tail]) if slopes else (math.nan, math.nan))
    means = np.array([y[m].mean() for m in members])
    cards = np.array([x[m[0]] for m in members])
    tau = _scipy_stats().kendalltau(cards, means) if keys.size >= 2 else None
    return Trend(
        slope=slope, low=float(low), high=float(high), level=level,
        tau=float(tau.statistic) if tau is not None else math.nan,
        tau_p=float(tau.pvalue) if tau is not None else math.nan,
        candidates=int(keys.size), seeds=int(np.unique(seed).size), points=int(y.size),
        residual_std=residual_std(x, y, seed, slope), draws=len(slopes),
    )


def seeds_to_detect(effect: float, residual: float, log2_cardinalities: np.ndarray, *,
                    alpha: float = ALPHA, power: float = 0.8) -> float:
    """Seeds per candidate at which a slope of `effect` points per doubling would be found
    (two-sided test at α, with `power`), given the runs' residual spread and the
    cardinalities tried: the slope's standard error is residual / sqrt(seeds · Σ(x − x̄)²)."""
    x = np.asarray(log2_cardinalities, dtype=float)
    sxx = float(np.sum((x - x.mean()) ** 2))
    if effect == 0 or sxx == 0 or not math.isfinite(residual):
        return math.inf
    z = _scipy_stats().norm.ppf(1 - alpha / 2) + _scipy_stats().norm.ppf(power)
    return (z * residual / abs(effect)) ** 2 / sxx
