"""Pure pandas: what the dashboard and the report show, computed from the store's frames.

Every function takes and returns DataFrames (no plotting, no I/O), so each is
unit-tested on small frames: the aggregates, and also the selection (one
filter), the row labels and the tables that explorer.figures draws and the
pages list. Input frames are the store's `trials_frame` (one row per trial and
space) and `epochs_frame` (one row per trial and epoch).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from explorer import stats
from explorer.arch import setting_label
from explorer.metrics import SHOWN_STATUSES, Status
from explorer.stats import weighted_edf

__all__ = [
    "ARCH_COLUMNS",
    "CANDIDATE",
    "SCREEN_CELLS",
    "SCREEN_SAMPLE_FROM",
    "arch_labels",
    "best_trials",
    "by_candidate",
    "complexity_weights",
    "curves",
    "edf_table",
    "error_edf",
    "errors_at_epoch",
    "failed_table",
    "filter_trials",
    "finished",
    "group_weights",
    "hashable",
    "kendall_tau",
    "kind_label",
    "missing",
    "pareto_front",
    "proxy_table",
    "screen_grid",
    "screen_sample",
    "setting_labels",
    "space_kinds",
    "summary_table",
    "tradeoff",
    "trial_table",
    "tuple_label",
    "with_space_labels",
]

# Columns that identify a candidate within a space; seeds are averaged over them.
CANDIDATE = ["experiment", "space", "key"]
ARCH_COLUMNS = ["cardinality", "bottleneck_width", "depths", "widths", "params", "flops", "acts"]


def finished(trials: pd.DataFrame) -> pd.DataFrame:
    """Trials with a final test error."""
    if trials.empty:
        return trials
    return trials[(trials["status"] == Status.FINISHED) & trials["test_error"].notna()]


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
    # A candidate's key is its architecture's content key, so the architecture columns
    # are the same on all its rows: grouping by the key alone and taking them from its
    # first row gives what grouping by them too would, without hashing lists per row.
    grouped = done.groupby(CANDIDATE, dropna=False, sort=False)
    stats = grouped.agg(
        test_error_mean=("test_error", "mean"),
        test_error_std=("test_error", "std"),  # ddof=1; NaN for one seed, made 0 below
        seeds=("test_error", "size"),
        test_top5_error_mean=("test_top5_error", "mean"),
        train_images_per_sec=("train_images_per_sec", "mean"),
        latency_ms=("latency_ms", "mean"),
    )
    # Groups come in order of first appearance, as drop_duplicates keeps rows.
    first = done.drop_duplicates(CANDIDATE)[[*CANDIDATE, *present]].reset_index(drop=True)
    out = first.assign(**{c: first[c].map(hashable) for c in present if _has_lists(first[c])},
                       **{c: stats[c].to_numpy() for c in stats.columns})
    out["test_error_std"] = out["test_error_std"].fillna(0.0)
    return out


def hashable(value: object) -> object:
    """Lists and arrays (depths, widths) as tuples, so that they can be grouped and counted."""
    if isinstance(value, list | np.ndarray):
        return tuple(value)
    return value


def _has_lists(column: pd.Series) -> bool:
    """Whether `hashable` would change any value of the column: only an object column can
    hold a list or an array (the store's reads hold tuples already, a test's frame lists).
    Mapping every value of a large frame's column through Python costs a second where
    this check costs milliseconds."""
    return column.dtype == object and any(issubclass(kind, list | np.ndarray)
                                          for kind in set(map(type, column.to_numpy())))


def missing(value: object) -> bool:
    """None, pd.NA or NaN: what a store frame holds where it has no value."""
    return value is None or value is pd.NA or value != value


def pareto_front(frame: pd.DataFrame, cost: str, error: str = "test_error_mean") -> pd.DataFrame:
    """The rows no other row beats on both `cost` and `error` (lower is better), by cost."""
    if frame.empty:
        return frame
    costs, errors = frame[cost], frame[error]
    if costs.notna().all() and errors.notna().all():
        # The order sort_values gives without missing values, on numpy arrays: a large
        # frame's screen sample takes its front on every chart.
        ordered = frame.iloc[np.lexsort((errors.to_numpy(dtype=float),
                                         costs.to_numpy(dtype=float)))]
    else:
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
    return out.assign(setting=setting_labels(out))


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
    bins: int = 10,
    tolerance: float | None = None,
    candidates: pd.DataFrame | None = None,
    quantile_grid: bool = False,
) -> pd.DataFrame:
    """Error EDFs per design space with bootstrap bands (Radosavovic et al. 2019).

    The unit is a candidate (its mean error over seeds). With `normalize_by`
    ("params" or "flops"), models are weighted so that every space has the same
    complexity distribution, uniform over the complexity bins they share
    (`stats.nds_weights`; raises stats.NoCommonComplexity when they share none).
    The EDFs are read at `points` errors evenly spaced over the range and, with
    `tolerance`, each also where it passes a multiple of it (`screen_grid`), so that
    the steps drawn from a space's rows (each held until the next) stay within
    `tolerance` of its exact EDF everywhere, however many models it has.
    `candidates`: the trials' means over seeds when already made.
    Returns long form: group, error, edf, low, high, models.

    The EDFs are evaluated on `points` evenly spaced errors; with `quantile_grid`
    also at each group's (weighted) quantiles 1/points, 2/points, ..., so that drawn
    as steps every group's EDF is within 1/points of the exact one at every error,
    however its models cluster (see `_edf_grid`).
    """
    done = by_candidate(trials) if candidates is None else candidates
    done = done[done["test_error_mean"].notna()] if not done.empty else done
    if done.empty:
        return pd.DataFrame(columns=[group, "error", "edf", "low", "high", "models"])
    grid = np.linspace(done["test_error_mean"].min(), done["test_error_mean"].max(), points)
    rng = np.random.default_rng(seed)
    parts = [(name, part) for name, part in done.groupby(group, sort=True)]
    weights = group_weights([part for _, part in parts], normalize_by, bins)
    if quantile_grid:
        grid = _edf_grid(grid, [part["test_error_mean"].to_numpy(dtype=float)
                               for _, part in parts], weights, points)
    frames = []
    for (name, part), weight in zip(parts, weights, strict=True):
        errors = part["test_error_mean"].to_numpy(dtype=float)
        at = grid if tolerance is None else np.union1d(
            grid, screen_grid(errors, weight, tolerance))  # this space's own steps
        low, high = stats.edf_band(errors, weight, at, draws=bootstrap, level=level, rng=rng)
        frames.append(pd.DataFrame({
            group: name, "error": at, "edf": weighted_edf(errors, weight, at),
            "low": low, "high": high, "models": errors.size,
        }))
    return pd.concat(frames, ignore_index=True)


def screen_grid(errors: np.ndarray, weights: np.ndarray, tolerance: float) -> np.ndarray:
    """The errors at which the weighted EDF of `errors` first reaches each multiple of
    `tolerance` (and the smallest error): read only there and held until the next,
    the EDF is never more than `tolerance` below the exact one, with at most
    1/tolerance + 1 points however many models there are."""
    if errors.size == 0:
        return errors
    order = np.argsort(errors, kind="stable")
    cumulative = np.cumsum(weights[order])
    total = cumulative[-1] if cumulative[-1] > 0 else 1.0
    level = np.floor(cumulative / total / tolerance)
    keep = np.r_[True, level[1:] > level[:-1]]
    return np.unique(errors[order][keep])


# A chart's plotting area divided into cells (about 14 by 12 pixels on a report's 1,200 by
# 520, under two 9-pixel markers across): points in one cell all but cover each other on
# the screen, so a large chart draws one per cell.
SCREEN_CELLS = (80, 40)
SCREEN_SAMPLE_FROM = 2000  # charts of this many points or fewer draw every one


def screen_sample(frame: pd.DataFrame, x: str, y: str, *, log_x: bool = True,
                  cells: tuple[int, int] = SCREEN_CELLS, group: str = "space",
                  at_most: int = SCREEN_SAMPLE_FROM) -> pd.DataFrame:
    """The rows a scatter of `y` against `x` shows apart on a screen: per `group` (a
    trace's colour), the first row in each cell of a grid of `cells` over the data's
    range, and every row of the Pareto front of (x, y). Rows without x or y are left
    out, as a chart leaves them; a frame of at most `at_most` plottable rows is kept
    whole. The exact values stay in the export."""
    data = frame.dropna(subset=[x, y]) if not frame.empty else frame
    if len(data) <= at_most:
        return data
    xs = data[x].to_numpy(dtype=float)
    if log_x:
        xs = np.log10(np.maximum(xs, np.finfo(float).tiny))
    ys = data[y].to_numpy(dtype=float)
    column = _cell(xs, cells[0])
    row = _cell(ys, cells[1])
    groups = pd.factorize(data[group].astype(str))[0] if group in data.columns \
        else np.zeros(len(data), dtype=np.int64)
    cell = (groups.astype(np.int64) * cells[0] + column) * cells[1] + row
    _, first = np.unique(cell, return_index=True)
    front = data.index.get_indexer(pareto_front(data, x, y).index)
    keep = np.union1d(first, front)
    return data.iloc[keep]


def _cell(values: np.ndarray, count: int) -> np.ndarray:
    """Each value's cell among `count` equal ones spanning the values' range."""
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.size, dtype=np.int64)
    return np.minimum(((values - low) / (high - low) * count).astype(np.int64), count - 1)


def _edf_grid(grid: np.ndarray, errors: Sequence[np.ndarray], weights: Sequence[np.ndarray],
             points: int) -> np.ndarray:
    """`grid` with every group's weighted quantiles k/points (k = 1 .. points - 1) added.

    Between two neighbouring values of the result a group's EDF rises by at most
    1/points short of the right one, where the step shows its jump: its quantiles
    k/points and (k+1)/points bound any such interval.
    """
    levels = np.arange(1, points) / points
    extra = []
    for values, weight in zip(errors, weights, strict=True):
        order = np.argsort(values)
        cumulative = np.cumsum(weight[order])
        at = np.minimum(np.searchsorted(cumulative, levels * cumulative[-1] - 1e-12),
                        len(values) - 1)
        extra.append(values[order][at])
    return np.unique(np.concatenate([grid, *extra]))


def group_weights(parts: Sequence[pd.DataFrame], normalize_by: str | None,
                  bins: int = 10, span: tuple[float, float] | None = None) -> list[np.ndarray]:
    """Per group of candidates, the weights of its models: equal, or NDS-normalised by a
    complexity column over the log bins the groups share, or (with `span`) over NDS's
    linear bins of that fixed range, each group on its own (stats.EmptyBin if one is empty)."""
    if not normalize_by:
        return [np.full(len(part), 1.0 / len(part)) for part in parts]
    columns = [part[normalize_by].to_numpy(dtype=float) for part in parts]
    if span is not None:
        return [stats.linear_bin_weights(c, span[0], span[1], bins) for c in columns]
    return stats.nds_weights(columns, bins)


def complexity_weights(values: np.ndarray, bins: int = 10) -> np.ndarray:
    """Weights making one space's complexity histogram flat: 1 / (models in the same log bin)."""
    if values.size == 0:
        return values
    return stats.nds_weights([values], bins)[0]


def curves(epochs: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """Training curves in long form (trial, label, epoch, split, error) for chosen trials."""
    if epochs.empty:
        return pd.DataFrame(columns=["trial_id", "label", "epoch", "split", "error"])
    # Labels for the chosen trials only: a large experiment's every trial would cost seconds.
    chosen = trials[trials["trial_id"].isin(epochs["trial_id"].unique())]
    labels = chosen.drop_duplicates("trial_id").set_index("trial_id")
    label = setting_labels(labels) + " seed " + labels["seed"].astype(str)
    long = epochs.melt(id_vars=["trial_id", "epoch"], value_vars=["train_error", "test_error"],
                       var_name="split", value_name="error")
    long["split"] = long["split"].str.replace("_error", "", regex=False)
    long["label"] = long["trial_id"].map(label)
    return long.dropna(subset=["error"]).sort_values(["trial_id", "split", "epoch"])


def filter_trials(
    trials: pd.DataFrame,
    *,
    experiments: Sequence[str] = (),
    spaces: Sequence[str] = (),
    statuses: Sequence[str] = (),
    seeds: Sequence[int] = (),
    cardinalities: Sequence[int] = (),
    bottleneck_widths: Sequence[int] = (),
    depths: Sequence[str] = (),
    ranges: Mapping[str, tuple[float, float]] | None = None,
) -> pd.DataFrame:
    """The dashboard's filters; an empty selection means "all", and a missing value matches
    no choice.

    `depths` are labels as `tuple_label` writes them ('3-3-3'). Works on trials and on
    `by_candidate` frames alike (only the chosen columns must be present).
    """
    mask = pd.Series(True, index=trials.index)
    for column, chosen in (("experiment", experiments), ("space", spaces), ("status", statuses),
                           ("seed", seeds), ("cardinality", cardinalities),
                           ("bottleneck_width", bottleneck_widths)):
        if chosen:
            mask &= _known(trials[column].isin(list(chosen)))
    if depths:
        mask &= trials["depths"].map(tuple_label).isin(list(depths))
    for column, (low, high) in (ranges or {}).items():
        mask &= _known(trials[column].between(low, high))
    return trials[mask]


def _known(mask: pd.Series) -> pd.Series:
    """A comparison's mask with missing (pd.NA, from nullable columns) read as False."""
    return mask.fillna(False).astype(bool)


# --- labels and tables ---------------------------------------------------------------------
#
# Readable text for rows (architectures, spaces) and the tables the dashboard and the report
# list; the charts take their labels from here too.


def tuple_label(value: object) -> str:
    """(3, 3, 3) -> '3-3-3'; missing -> '?'."""
    if isinstance(value, tuple):
        return _tuple_label(value)
    if isinstance(value, list | np.ndarray):
        return _tuple_label(tuple(value))
    return "?" if missing(value) else str(value)


# Sized for a sampled space's distinct depths (10,000 at 100,000 trials): a cache smaller
# than a page's distinct values misses on every call of every rerun.
@functools.lru_cache(maxsize=1 << 16)
def _tuple_label(value: tuple[Any, ...]) -> str:  # few distinct shapes, many rows
    return "-".join(str(int(v)) for v in value)


def setting_labels(frame: pd.DataFrame) -> pd.Series:
    """The paper's C×d name (`arch.setting_label`) per row; missing where C or d is."""
    labels = [None if missing(c) or missing(d) else setting_label(c, d)
              for c, d in zip(frame["cardinality"], frame["bottleneck_width"], strict=True)]
    return pd.Series(labels, index=frame.index, dtype=str)


def arch_labels(frame: pd.DataFrame) -> pd.Series:
    """'8×14d depths 3-3-3 widths 256-512-1024' per row: the full architecture in words,
    with '?' for what is missing."""
    def text(value: object) -> str:
        return "?" if missing(value) else str(value)

    labels = [f"{setting_label(text(c), text(d))} depths {tuple_label(depths)} "
              f"widths {tuple_label(widths)}"
              for c, d, depths, widths in zip(frame["cardinality"], frame["bottleneck_width"],
                                              frame["depths"], frame["widths"], strict=True)]
    return pd.Series(labels, index=frame.index, dtype=object)


def with_space_labels(trials: pd.DataFrame) -> pd.DataFrame:
    """Prefix each space with its experiment when several experiments are shown together,
    so that equally named spaces of different experiments stay apart."""
    if trials.empty or trials["experiment"].nunique() < 2:
        return trials
    space = trials["space"].astype("string").fillna("(no space)")
    return trials.assign(space=(trials["experiment"].astype("string") + " / " + space))


def space_kinds(candidates: pd.DataFrame) -> dict[str, str]:
    """What each space varies, for Fig. 7's legend: 'cardinality', 'depth', 'width',
    several joined by '+' (e.g. 'cardinality+depth'), or 'fixed'.

    d varying with C is part of a cardinality space (at preserved complexity
    d shrinks as C grows); d varying alone is width.
    """
    kinds: dict[str, str] = {}
    for space, part in candidates.groupby("space", sort=True):
        def varies(column: str, part: pd.DataFrame = part) -> bool:
            return bool(part[column].map(hashable).nunique(dropna=False) > 1)

        axes = [name for name, vary in (
            ("cardinality", varies("cardinality")),
            ("depth", varies("depths")),
            ("width", varies("widths") or (varies("bottleneck_width")
                                           and not varies("cardinality"))),
        ) if vary]
        kinds[str(space)] = "+".join(axes) or "fixed"
    return kinds


def kind_label(kind: str) -> str:
    """'cardinality' -> 'more cardinality', 'cardinality+depth' -> 'cardinality and depth'."""
    if kind == "fixed":
        return "a single network"
    axes = kind.split("+")
    return f"more {axes[0]}" if len(axes) == 1 else " and ".join(axes)


def trial_table(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per trial (spaces joined) with readable columns, for the table and its CSV."""
    columns = {
        "experiment": "experiment", "version": "version", "space": "space",
        "trial_id": "trial", "key": "key", "cardinality": "C", "bottleneck_width": "d",
        "depths": "depths", "widths": "widths", "params": "params", "flops": "flops",
        "seed": "seed", "status": "status", "test_error": "test error %",
        "test_top5_error": "top-5 error %", "epochs_completed": "epochs",
        "train_images_per_sec": "images/s", "latency_ms": "latency ms", "error": "error message",
        # What ran (explorer/metrics.py's Provenance), and how many attempts it took.
        "attempts": "attempts", "device": "device", "gpu_name": "GPU", "precision": "precision",
        "channels_last": "channels last", "compiled": "compiled", "torch_version": "torch",
        "node": "node", "resumed_from_epoch": "resumed from epoch",
        "trial_key": "trial key",
    }
    present = [c for c in columns if c in trials.columns]
    if trials.empty:
        return pd.DataFrame(columns=[columns[c] for c in present])
    frame = trials[present].copy()
    frame["depths"] = frame["depths"].map(tuple_label)
    frame["widths"] = frame["widths"].map(tuple_label)
    frame["space"] = frame["space"].astype("string").fillna("")
    # Only a trial in several spaces needs its spaces joined (a Python call per group):
    # most trials have one, so the join runs over the few that do not.
    shared = frame["trial_id"].duplicated(keep=False).to_numpy()
    joined = frame[shared].groupby("trial_id", sort=False)["space"].agg(
        lambda s: ", ".join(sorted(s)))
    frame = frame.drop_duplicates("trial_id")
    spaces = frame["space"].astype(object)
    frame["space"] = frame["trial_id"].map(joined).astype(object).where(
        frame["trial_id"].isin(joined.index), spaces)
    return frame[present].rename(columns=columns).reset_index(drop=True)


def failed_table(trials: pd.DataFrame) -> pd.DataFrame:
    """The failed trials with their error text, one row per trial."""
    failed = trials[trials["status"] == Status.FAILED] if not trials.empty else trials
    table = trial_table(failed)
    keep = ["experiment", "space", "trial", "C", "d", "depths", "widths", "seed",
            "epochs", "error message", "trial key"]
    return table[[c for c in keep if c in table.columns]]


def summary_table(trials: pd.DataFrame, candidates: pd.DataFrame) -> pd.DataFrame:
    """Per space: trials by status, candidates with results, the best candidate."""
    rows = []
    if trials.empty:
        return pd.DataFrame(columns=["space", "trials", *SHOWN_STATUSES, "candidates", "best",
                                     "best test error %"])
    per_trial = trials.drop_duplicates(["space", "trial_id"])
    for space, part in per_trial.groupby("space", sort=True, dropna=False):
        counts = part["status"].value_counts()
        done = candidates[candidates["space"] == space] if not candidates.empty else candidates
        best = done.nsmallest(1, "test_error_mean") if not done.empty else done
        row: dict[str, object] = {
            "space": "(no space)" if missing(space) else str(space),
            "trials": len(part),
            **{s: int(counts.get(s, 0)) for s in SHOWN_STATUSES},
            "candidates": len(done),
            "best": arch_labels(best).iloc[0] if not best.empty else "",
            "best test error %": (f"{best['test_error_mean'].iloc[0]:.2f} ± "
                                  f"{best['test_error_std'].iloc[0]:.2f}"
                                  if not best.empty else "–"),
        }
        rows.append(row)
    return pd.DataFrame(rows)


def best_trials(trials: pd.DataFrame, n: int = 5) -> list[int]:
    """Default trials for the curves: running ones first (live), then the best finished."""
    if trials.empty:
        return []
    per_trial = trials.drop_duplicates("trial_id")
    running = per_trial[per_trial["status"] == Status.RUNNING]["trial_id"].head(n).tolist()
    done = finished(per_trial).nsmallest(max(n - len(running), 0), "test_error")
    return [int(t) for t in [*running, *done["trial_id"].tolist()]]


# --- proxy fidelity -----------------------------------------------------------------------
#
# How far can a cheap sweep be trusted? Rank the same candidates by a cheap proxy (a shorter
# run, or an early epoch of the full run) and by the full run, and compare the rankings with
# Kendall's tau: 1 is the same order, 0 no relation, -1 reversed.

_PROXY_COLUMNS = ["key", "space", "cardinality", "bottleneck_width", "depths", "widths", "params",
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
        return pd.DataFrame(columns=_PROXY_COLUMNS)
    short = proxy.groupby("key", sort=False)["test_error_mean"].mean().rename("proxy_error")
    arch = [c for c in _PROXY_COLUMNS[1:8] if c in full.columns]
    long = (full.assign(**{c: full[c].map(hashable) for c in arch if _has_lists(full[c])})
            .groupby("key", sort=False)
            .agg(**{c: (c, "first") for c in arch}, full_error=("test_error_mean", "mean")))
    table = long.join(short, how="inner").reset_index()
    if table.empty:
        return pd.DataFrame(columns=_PROXY_COLUMNS)
    table["proxy_rank"] = table["proxy_error"].rank(method="min").astype(int)
    table["full_rank"] = table["full_error"].rank(method="min").astype(int)
    present = [c for c in _PROXY_COLUMNS if c in table.columns]
    return table.sort_values(["full_error", "key"])[present].reset_index(drop=True)


def kendall_tau(table: pd.DataFrame) -> float:
    """Kendall's tau-b between a `proxy_table`'s proxy and full errors; NaN under 3 candidates
    (two points always agree or disagree perfectly, which says nothing)."""
    if len(table) < 3:
        return float("nan")
    return float(table["proxy_error"].astype(float).corr(table["full_error"].astype(float),
                                                           method="kendall"))
