"""Pure pandas: what the dashboard and the report show, computed from the store's frames.

Every function takes and returns DataFrames (no plotting, no I/O), so each is
unit-tested on small frames. Input frames are the store's `trials_frame`
(one row per trial and space) and `epochs_frame` (one row per trial and epoch).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

# Columns that identify a candidate within a space; seeds are averaged over them.
CANDIDATE = ["experiment", "space", "key"]
ARCH_COLUMNS = ["cardinality", "bottleneck_width", "depths", "widths", "params", "flops", "acts"]


def finished(trials: pd.DataFrame) -> pd.DataFrame:
    """Trials with a final test error."""
    if trials.empty:
        return trials
    return trials[(trials["status"] == "finished") & trials["test_error"].notna()]


def by_candidate(trials: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std of the error over seeds, one row per candidate and space.

    std is 0 for a single seed (not NaN), so error bars are drawable.
    """
    done = finished(trials)
    columns = [*CANDIDATE, *ARCH_COLUMNS, "test_error_mean", "test_error_std", "seeds",
               "test_top5_error_mean", "train_images_per_sec", "latency_ms"]
    if done.empty:
        return pd.DataFrame(columns=columns)
    present = [c for c in ARCH_COLUMNS if c in done.columns]
    hashable = done.assign(**{c: done[c].map(_hashable) for c in present})
    grouped = hashable.groupby([*CANDIDATE, *present], dropna=False, sort=False)
    out = grouped.agg(
        test_error_mean=("test_error", "mean"),
        test_error_std=("test_error", "std"),  # ddof=1; NaN for one seed, made 0 below
        seeds=("test_error", "size"),
        test_top5_error_mean=("test_top5_error", "mean"),
        train_images_per_sec=("train_images_per_sec", "mean"),
        latency_ms=("latency_ms", "mean"),
    ).reset_index()
    out["test_error_std"] = out["test_error_std"].fillna(0.0)
    return out


def _hashable(value: object) -> object:
    if isinstance(value, list | np.ndarray):
        return tuple(value)
    return value


def pareto_front(frame: pd.DataFrame, cost: str, error: str = "test_error_mean") -> pd.DataFrame:
    """The rows no other row beats on both `cost` and `error` (lower is better), by cost."""
    if frame.empty:
        return frame
    ordered = frame.sort_values([cost, error], kind="mergesort")
    best = np.minimum.accumulate(ordered[error].to_numpy())
    keep = np.r_[True, ordered[error].to_numpy()[1:] < best[:-1]]
    return ordered[keep]


def tradeoff(candidates: pd.DataFrame) -> pd.DataFrame:
    """The paper's Table 3 as rows: error against cardinality with d, per space.

    Sorted by space then cardinality; `setting` is the paper's "C×d" label.
    """
    if candidates.empty:
        return candidates.assign(setting=pd.Series(dtype=str))
    out = candidates.sort_values(["experiment", "space", "cardinality", "bottleneck_width"])
    return out.assign(setting=out["cardinality"].astype(str) + "×" +
                      out["bottleneck_width"].astype(str) + "d")


def error_edf(errors: Sequence[float] | pd.Series, grid: np.ndarray) -> np.ndarray:
    """Fraction of models with error below each value of `grid` (the empirical CDF)."""
    values = np.sort(np.asarray(errors, dtype=float))
    if values.size == 0:
        return np.zeros_like(grid, dtype=float)
    return np.searchsorted(values, grid, side="right") / values.size


def edf_table(
    trials: pd.DataFrame,
    *,
    group: str = "space",
    normalize_by: str | None = None,
    points: int = 200,
    bootstrap: int = 200,
    level: float = 0.9,
    seed: int = 0,
) -> pd.DataFrame:
    """Error EDFs per design space with bootstrap bands (Radosavovic et al. 2019).

    With `normalize_by` ("params" or "flops"), models are weighted so that
    each space's complexity distribution is uniform over common bins, as in
    the paper's complexity-normalised EDFs. Returns long form: group, error,
    edf, low, high.
    """
    done = by_candidate(trials)
    if done.empty:
        return pd.DataFrame(columns=[group, "error", "edf", "low", "high", "models"])
    grid = np.linspace(done["test_error_mean"].min(), done["test_error_mean"].max(), points)
    rng = np.random.default_rng(seed)
    frames = []
    for name, part in done.groupby(group, sort=True):
        errors = part["test_error_mean"].to_numpy(dtype=float)
        weights = complexity_weights(part[normalize_by].to_numpy(dtype=float)) \
            if normalize_by else np.full(errors.size, 1.0 / errors.size)
        edf = weighted_edf(errors, weights, grid)
        draws = np.stack([
            weighted_edf(errors[idx], _renormalise(weights[idx]), grid)
            for idx in (rng.integers(0, errors.size, errors.size) for _ in range(bootstrap))
        ]) if bootstrap else np.stack([edf])
        alpha = (1 - level) / 2
        frames.append(pd.DataFrame({
            group: name, "error": grid, "edf": edf,
            "low": np.quantile(draws, alpha, axis=0), "high": np.quantile(draws, 1 - alpha, axis=0),
            "models": errors.size,
        }))
    return pd.concat(frames, ignore_index=True)


def weighted_edf(errors: np.ndarray, weights: np.ndarray, grid: np.ndarray) -> np.ndarray:
    order = np.argsort(errors)
    cumulative = np.concatenate([[0.0], np.cumsum(weights[order])])
    return cumulative[np.searchsorted(errors[order], grid, side="right")]


def complexity_weights(values: np.ndarray, bins: int = 10) -> np.ndarray:
    """Weights making the complexity histogram flat: 1 / (models in the same log bin)."""
    if values.size == 0:
        return values
    logs = np.log(np.maximum(values, 1.0))
    edges = np.linspace(logs.min(), logs.max() + 1e-9, bins + 1)
    which = np.clip(np.digitize(logs, edges) - 1, 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    weights = 1.0 / counts[which]
    return _renormalise(weights)


def _renormalise(weights: np.ndarray) -> np.ndarray:
    total = weights.sum()
    return weights / total if total > 0 else weights


def curves(epochs: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """Training curves in long form (trial, label, epoch, split, error) for chosen trials."""
    if epochs.empty:
        return pd.DataFrame(columns=["trial_id", "label", "epoch", "split", "error"])
    labels = trials.drop_duplicates("trial_id").set_index("trial_id")
    label = (labels["cardinality"].astype(str) + "×" + labels["bottleneck_width"].astype(str)
             + "d seed " + labels["seed"].astype(str))
    long = epochs.melt(id_vars=["trial_id", "epoch"], value_vars=["train_error", "test_error"],
                       var_name="split", value_name="error")
    long["split"] = long["split"].str.replace("_error", "", regex=False)
    long["label"] = long["trial_id"].map(label)
    return long.dropna(subset=["error"]).sort_values(["trial_id", "split", "epoch"])


def filter_trials(trials: pd.DataFrame, *, experiments: Sequence[str] | None = None,
                  spaces: Sequence[str] | None = None, statuses: Sequence[str] | None = None,
                  seeds: Sequence[int] | None = None,
                  ranges: dict[str, tuple[float, float]] | None = None) -> pd.DataFrame:
    """The picker's filters; an empty or None selection means "all"."""
    mask = pd.Series(True, index=trials.index)
    for column, chosen in (("experiment", experiments), ("space", spaces), ("status", statuses),
                           ("seed", seeds)):
        if chosen:
            mask &= trials[column].isin(list(chosen))
    for column, (low, high) in (ranges or {}).items():
        mask &= trials[column].between(low, high)
    return trials[mask]


# --- proxy fidelity -----------------------------------------------------------------------
#
# How far can a cheap sweep be trusted? Rank the same candidates by a cheap proxy (a shorter
# run, or an early epoch of the full run) and by the full run, and compare the rankings with
# Kendall's tau: 1 is the same order, 0 no relation, -1 reversed.

PROXY_COLUMNS = ["key", "space", "cardinality", "bottleneck_width", "depths", "widths", "params",
                 "flops", "proxy_error", "full_error", "proxy_rank", "full_rank"]


def errors_at_epoch(trials: pd.DataFrame, epochs: pd.DataFrame, epoch: int) -> pd.DataFrame:
    """The finished trials with `test_error` taken at `epoch` instead of at the end.

    Trials that never reported that epoch are left out. The result has the shape of
    `trials`, so `by_candidate` averages it over seeds like any other.
    """
    done = finished(trials)
    if done.empty or epochs.empty:
        return done.iloc[0:0]
    at = epochs[epochs["epoch"] == epoch].set_index("trial_id")["test_error"]
    early = done[done["trial_id"].isin(at.index)]
    return early.assign(test_error=early["trial_id"].map(at).astype(float))


def proxy_table(proxy: pd.DataFrame, full: pd.DataFrame) -> pd.DataFrame:
    """Candidates present in both `by_candidate` frames, with their two mean errors and ranks.

    Candidates are matched on their key (the architecture's content key, the same in any
    experiment), so a proxy may come from another experiment with other space names. A
    candidate in several spaces (a shared base model) counts once. Best full error first.
    """
    if proxy.empty or full.empty:
        return pd.DataFrame(columns=PROXY_COLUMNS)
    short = proxy.groupby("key", sort=False)["test_error_mean"].mean().rename("proxy_error")
    arch = [c for c in PROXY_COLUMNS[1:8] if c in full.columns]
    long = (full.assign(**{c: full[c].map(_hashable) for c in arch})
            .groupby("key", sort=False)
            .agg(**{c: (c, "first") for c in arch}, full_error=("test_error_mean", "mean")))
    table = long.join(short, how="inner").reset_index()
    if table.empty:
        return pd.DataFrame(columns=PROXY_COLUMNS)
    table["proxy_rank"] = table["proxy_error"].rank(method="min").astype(int)
    table["full_rank"] = table["full_error"].rank(method="min").astype(int)
    present = [c for c in PROXY_COLUMNS if c in table.columns]
    return table.sort_values(["full_error", "key"])[present].reset_index(drop=True)


def kendall_tau(table: pd.DataFrame) -> float:
    """Kendall's tau-b between a `proxy_table`'s proxy and full errors; NaN under 3 candidates
    (two points always agree or disagree perfectly, which says nothing)."""
    if len(table) < 3:
        return float("nan")
    return float(table["proxy_error"].astype(float).corr(table["full_error"].astype(float),
                                                           method="kendall"))
