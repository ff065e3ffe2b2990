"""explorer.figures: each chart from small hand-made frames, checked against what they
must show by construction; every figure also passes plotly's validation. First, on the same
frames, the explorer.analysis labels, filters and tables that the charts and pages use."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from explorer import analysis, figures


def trial(key: str, error: float | None, *, space: str = "s", seed: int = 0, c: int = 1,
          d: int = 64, depths: tuple[int, ...] = (3, 3, 3),
          widths: tuple[int, ...] = (256, 512, 1024), params: int = 100, flops: int = 1000,
          status: str = "finished", trial_id: int | None = None, experiment: str = "e",
          **extra: Any) -> dict[str, Any]:
    return {"experiment": experiment, "version": 1, "space": space, "key": key,
            "trial_id": trial_id, "trial_key": f"{key}-{seed}", "cardinality": c,
            "bottleneck_width": d, "depths": depths, "widths": widths, "params": params,
            "flops": flops, "acts": 10, "seed": seed, "status": status, "test_error": error,
            "test_top5_error": None if error is None else error / 10,
            "train_images_per_sec": 100.0, "latency_ms": 1.0, "epochs_completed": 3,
            "error": "boom" if status == "failed" else None, **extra}


def frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    for i, row in enumerate(rows, start=1):
        if row["trial_id"] is None:
            row["trial_id"] = i
    out = pd.DataFrame(rows)
    for column in ("cardinality", "bottleneck_width", "params", "flops"):
        out[column] = out[column].astype("Int64")  # as the store hands them out
    return out


def validated(fig: go.Figure) -> go.Figure:
    """The figure, after rebuilding a copy with plotly's validation on (figures are built
    without it, for speed): a misspelt property or a bad value raises here."""
    go.Figure(fig.to_dict())
    return fig


def role(fig: go.Figure, name: str) -> list[Any]:
    return [t for t in fig.data if (t.meta or {}).get("role") == name]


# The paper's Table 3 regime as a space, a deeper and a wider space, two seeds each.
TABLE3 = [(1, 64, 23.9), (2, 40, 23.0), (4, 24, 22.6), (8, 14, 22.3), (32, 4, 22.2)]


@pytest.fixture
def trials() -> pd.DataFrame:
    rows = []
    for c, d, error in TABLE3:
        for seed, delta in ((0, -0.1), (1, 0.1)):
            rows.append(trial(f"c{c}", error + delta, space="preserved", c=c, d=d, seed=seed,
                              params=25_000_000 + c, flops=4_000_000_000 + 1000 * c))
    for blocks, error in ((2, 24.5), (4, 23.5)):
        rows.append(trial(f"deep{blocks}", error, space="deeper", depths=(blocks,) * 3,
                          params=20_000_000 * blocks, flops=3_000_000_000 * blocks))
    for width, error in ((128, 25.0), (512, 23.4)):
        rows.append(trial(f"wide{width}", error, space="wider",
                          widths=(width, 2 * width, 4 * width), params=100_000 * width,
                          flops=10_000_000 * width))
    rows.append(trial("oom", None, space="wider", status="failed", params=9, flops=9))
    rows.append(trial("live", None, space="deeper", status="running"))
    return frame(rows)


# --- labels, filters, tables (explorer.analysis) -------------------------------------------


def test_tuple_and_arch_labels() -> None:
    assert analysis.tuple_label((3, 4, 6)) == "3-4-6"
    assert analysis.tuple_label([1, 2]) == "1-2"
    assert analysis.tuple_label(None) == "?"
    rows = frame([trial("a", 1.0, c=32, d=4)])
    assert analysis.arch_labels(rows).tolist() == ["32×4d depths 3-3-3 widths 256-512-1024"]


def test_with_space_labels_only_for_several_experiments() -> None:
    one = frame([trial("a", 1.0, space="p")])
    assert analysis.with_space_labels(one)["space"].tolist() == ["p"]
    two = frame([trial("a", 1.0, space="p"), trial("a", 1.0, space="p", experiment="f")])
    assert analysis.with_space_labels(two)["space"].tolist() == ["e / p", "f / p"]


def test_filter_trials_filters(trials: pd.DataFrame) -> None:
    assert len(analysis.filter_trials(trials)) == len(trials)
    chosen = analysis.filter_trials(trials, cardinalities=[2, 4], seeds=[1])
    assert sorted(chosen["key"]) == ["c2", "c4"]
    assert set(analysis.filter_trials(trials, depths=["2-2-2"])["key"]) == {"deep2"}
    assert set(analysis.filter_trials(trials, bottleneck_widths=[40])["key"]) == {"c2"}
    assert set(analysis.filter_trials(trials, statuses=["failed"])["key"]) == {"oom"}
    assert analysis.filter_trials(trials, spaces=["nowhere"]).empty


def test_space_kinds(trials: pd.DataFrame) -> None:
    kinds = analysis.space_kinds(analysis.by_candidate(trials))
    assert kinds == {"preserved": "cardinality", "deeper": "depth", "wider": "width"}
    mixed = analysis.by_candidate(frame([trial("a", 1.0, c=1), trial("b", 1.0, c=4,
                                                                       depths=(2, 2, 2))]))
    assert analysis.space_kinds(mixed) == {"s": "cardinality+depth"}
    assert analysis.kind_label("cardinality") == "more cardinality"
    assert analysis.kind_label("cardinality+depth") == "cardinality and depth"


def test_trial_table_one_row_per_trial_spaces_joined() -> None:
    rows = frame([trial("a", 1.0, space="x", trial_id=1), trial("a", 1.0, space="y", trial_id=1),
                  trial("b", None, status="failed", trial_id=2)])
    table = analysis.trial_table(rows)
    assert table["trial"].tolist() == [1, 2]
    assert table["space"].tolist() == ["x, y", "s"]
    assert table["depths"].tolist() == ["3-3-3", "3-3-3"]
    assert list(table.columns[:3]) == ["experiment", "version", "space"]
    failed = analysis.failed_table(rows)
    assert failed["error message"].tolist() == ["boom"]


def test_summary_table(trials: pd.DataFrame) -> None:
    summary = analysis.summary_table(trials, analysis.by_candidate(trials)).set_index("space")
    assert summary.loc["preserved", "finished"] == 10
    assert summary.loc["preserved", "candidates"] == 5
    assert summary.loc["preserved", "best"].startswith("32×4d")
    assert summary.loc["preserved", "best test error %"] == "22.20 ± 0.14"
    assert summary.loc["wider", "failed"] == 1
    assert summary.loc["deeper", "running"] == 1


def test_best_trials_running_first_then_lowest_error(trials: pd.DataFrame) -> None:
    live = int(trials.loc[trials["key"] == "live", "trial_id"].iloc[0])
    best = analysis.best_trials(trials, 3)
    assert best[0] == live
    errors = trials.set_index("trial_id").loc[best[1:], "test_error"].tolist()
    assert errors == sorted(errors) and errors[0] == pytest.approx(22.1)


# --- error vs cost --------------------------------------------------------------------------


@pytest.mark.parametrize("cost", ["flops", "params"])
def test_error_vs_cost_one_point_per_candidate_with_mean_and_std(trials: pd.DataFrame,
                                                                 cost: str) -> None:
    candidates = analysis.by_candidate(trials)
    fig = validated(figures.error_vs_cost(candidates, cost))
    assert fig.layout.meta["chart"] == f"error_vs_{cost}"
    assert fig.layout.xaxis.type == "log"
    points = role(fig, "candidates")
    assert [t.name for t in points] == ["deeper", "preserved", "wider"]
    assert figures.points(fig) == len(candidates) == 9
    preserved = points[1]
    order = np.argsort(preserved.x)
    assert np.allclose(np.asarray(preserved.y)[order], [e for _, _, e in TABLE3])
    # Two seeds at ±0.1: sample std = 0.1 * sqrt(2).
    assert np.allclose(preserved.error_y.array, 0.1 * np.sqrt(2))
    # The hover: one template over per-point values (label and key in hovertext, the
    # numbers in customdata).
    assert "customdata" in preserved.hovertemplate and "hovertext" in preserved.hovertemplate
    hover = " ".join(preserved.hovertext)
    assert "c32" in hover and "32×4d" in hover
    numbers = np.asarray(preserved.customdata, dtype=float)
    assert np.allclose(numbers[:, 0], preserved.y)
    assert np.allclose(numbers[:, 3 if cost == "params" else 4], preserved.x)
    # Symbols by cardinality: C = 1, 2, 4, 8, 32 get five different symbols.
    symbols = dict(zip(np.asarray(preserved.x)[order], np.asarray(preserved.marker.symbol)[order],
                       strict=True))
    assert len(set(symbols.values())) == 5
    assert {t.name for t in role(fig, "legend")} == {f"C = {c}" for c, _, _ in TABLE3} | {
        "deeper", "preserved", "wider"}
    assert not any(t.showlegend for t in points)  # the legend entries stand in for them


def test_error_vs_cost_pareto_front_is_analysis_front(trials: pd.DataFrame) -> None:
    candidates = analysis.by_candidate(trials)
    fig = figures.error_vs_cost(candidates, "flops")
    (front,) = role(fig, "pareto")
    expected = analysis.pareto_front(candidates, "flops")
    assert np.allclose(front.x, expected["flops"].astype(float))
    assert np.allclose(front.y, expected["test_error_mean"])
    assert front.line.shape == "hv"
    # The cheapest network is on the front, and the errors along it only fall.
    assert front.x[0] == candidates["flops"].min()
    assert np.all(np.diff(front.y) < 0)


def test_error_vs_cost_uses_webgl_for_many_points() -> None:
    rng = np.random.default_rng(0)
    n = figures.WEBGL_THRESHOLD + 1
    rows = frame([trial(f"k{i}", float(e), params=int(p), flops=int(p))
                  for i, (e, p) in enumerate(zip(rng.normal(5, 1, n), rng.integers(1, 10**6, n),
                                                 strict=True))])
    fig = figures.error_vs_cost(analysis.by_candidate(rows), "flops")
    assert role(fig, "candidates")[0].type == "scattergl"
    assert figures.points(fig) == n
    validated(fig)


def test_error_vs_cost_empty() -> None:
    fig = validated(figures.error_vs_cost(analysis.by_candidate(frame([trial("a", None)]))))
    assert not fig.data
    assert fig.layout.meta["chart"] == "error_vs_flops"
    assert "no finished" in fig.layout.annotations[0].text


# --- tradeoff charts ------------------------------------------------------------------------


def test_cardinality_tradeoff_is_table3(trials: pd.DataFrame) -> None:
    fig = validated(figures.cardinality_tradeoff(analysis.by_candidate(trials)))
    (line,) = role(fig, "tradeoff")  # only the space that varies cardinality
    assert line.name == "preserved"
    assert list(line.x) == [1, 2, 4, 8, 32]
    assert list(line.text) == ["1×64d", "2×40d", "4×24d", "8×14d", "32×4d"]
    assert np.allclose(line.y, [e for _, _, e in TABLE3])
    assert list(fig.layout.xaxis.tickvals) == [1, 2, 4, 8, 32]


def test_cardinality_tradeoff_line_per_regime() -> None:
    rows = [trial(f"r50-{c}", 24 - c / 10, c=c, d=64 // c) for c in (1, 2, 4)]
    rows += [trial(f"r101-{c}", 22 - c / 10, c=c, d=64 // c, depths=(3, 4, 23)) for c in (1, 2, 4)]
    fig = figures.cardinality_tradeoff(analysis.by_candidate(frame(rows)))
    assert sorted(t.name for t in fig.data) == ["s (3-3-3 / 256-512-1024)",
                                                 "s (3-4-23 / 256-512-1024)"]
    assert all(list(t.x) == [1, 2, 4] for t in fig.data)


def test_cardinality_tradeoff_without_a_cardinality_space() -> None:
    rows = frame([trial("a", 1.0, depths=(2, 2, 2)), trial("b", 2.0)])
    fig = figures.cardinality_tradeoff(analysis.by_candidate(rows))
    assert not fig.data
    assert "cardinality" in fig.layout.annotations[0].text


def test_capacity_comparison_names_what_each_space_increases(trials: pd.DataFrame) -> None:
    fig = validated(figures.capacity_comparison(analysis.by_candidate(trials)))
    names = {t.meta["kind"]: t.name for t in role(fig, "capacity")}
    assert names == {"cardinality": "preserved: more cardinality",
                     "depth": "deeper: more depth", "width": "wider: more width"}
    for t in role(fig, "capacity"):
        assert list(t.x) == sorted(t.x)  # a line goes up in params
    assert fig.layout.xaxis.type == "log"


# --- curves, EDFs, cost ---------------------------------------------------------------------


def test_envelope_keeps_every_extreme_within_its_bucket() -> None:
    """A long noisy curve drawn with at most max_points of its own points: the first and
    last, and for every exact point a drawn point at most one bucket (n / (max_points / 4)
    rows) away that is as low and one as high. Checked against the exact curve, point by
    point."""
    rng = np.random.default_rng(3)
    n, max_points = 5000, 200
    exact = pd.DataFrame({"epoch": np.arange(n),
                          "error": 60 * np.exp(-np.arange(n) / 900) + rng.normal(0, 2, n)})
    exact.loc[1234, "error"] = 95.0  # a spike an even thinning would miss
    drawn = figures.envelope(exact.sample(frac=1, random_state=0), "epoch", "error", max_points)
    assert len(drawn) <= max_points
    assert drawn["epoch"].iloc[0] == 0 and drawn["epoch"].iloc[-1] == n - 1
    assert list(drawn["epoch"]) == sorted(drawn["epoch"])
    merged = drawn.merge(exact, on="epoch", suffixes=("", "_exact"))
    assert len(merged) == len(drawn) and np.array_equal(merged["error"], merged["error_exact"])
    assert 95.0 in set(drawn["error"])
    reach = int(np.ceil(n / (max_points // 4)))
    xs, ys = drawn["epoch"].to_numpy(), drawn["error"].to_numpy()
    for epoch, error in zip(exact["epoch"], exact["error"], strict=True):
        near = ys[np.abs(xs - epoch) <= reach]
        assert near.min() <= error <= near.max()
    short = exact.head(10)
    assert figures.envelope(short, "epoch", "error", 50).equals(short)


def test_training_curves_per_trial_and_split() -> None:
    long = pd.DataFrame({"trial_id": [1, 1, 1, 1, 2, 2], "label": ["a"] * 4 + ["b"] * 2,
                         "epoch": [0, 1, 0, 1, 0, 0], "split": ["test", "test", "train", "train",
                                                                "test", "train"],
                         "error": [60.0, 10.0, 50.0, 5.0, 70.0, 65.0]})
    fig = validated(figures.training_curves(long))
    curves = {(t.meta["trial_id"], t.meta["split"]): t for t in role(fig, "curve")}
    assert set(curves) == {(1, "test"), (1, "train"), (2, "test"), (2, "train")}
    assert list(curves[(1, "test")].y) == [60.0, 10.0]
    assert curves[(1, "train")].line.dash == "dot"
    assert curves[(1, "test")].line.dash == "solid"
    assert curves[(1, "test")].line.color == curves[(1, "train")].line.color
    long_run = pd.DataFrame({"trial_id": 1, "label": "a", "epoch": range(1000), "split": "test",
                             "error": np.linspace(60, 5, 1000)})
    thinned = figures.training_curves(long_run, max_points=100).data[0]
    assert len(thinned.x) <= 100 and thinned.x[0] == 0 and thinned.x[-1] == 999


def test_edf_figure_line_and_band_per_space(trials: pd.DataFrame) -> None:
    edf = analysis.edf_table(trials, points=20, bootstrap=20)
    fig = validated(figures.edf_figure(edf, normalize_by="params"))
    lines = role(fig, "edf")
    assert [t.name for t in lines] == ["deeper (n=2)", "preserved (n=5)", "wider (n=2)"]
    assert len(role(fig, "band")) == 3
    assert "params" in fig.layout.title.text
    assert all(np.all(np.diff(t.y) >= 0) for t in lines)  # an EDF never decreases
    assert lines[1].y[-1] == pytest.approx(1.0)


def test_cost_figure_skips_unmeasured(trials: pd.DataFrame) -> None:
    candidates = analysis.by_candidate(trials)
    candidates.loc[candidates["space"] == "wider", "latency_ms"] = np.nan
    fig = validated(figures.cost_figure(candidates, "latency_ms"))
    assert [t.name for t in role(fig, "cost")] == ["deeper", "preserved"]
    assert figures.points(fig, "cost") == 7
    empty = figures.cost_figure(candidates.assign(latency_ms=np.nan), "latency_ms")
    assert not empty.data


def test_all_figures_validate(trials: pd.DataFrame) -> None:
    epochs = pd.DataFrame({"trial_id": [1, 1], "epoch": [0, 1], "train_error": [50.0, 20.0],
                           "test_error": [55.0, 25.0]})
    drawn = figures.all_figures(trials, epochs, curve_trials=[1], bootstrap=10)
    assert set(drawn) == {"error_vs_flops", "error_vs_params", "cardinality_tradeoff",
                          "capacity_comparison", "error_edf", "training_curves",
                          "cost_latency_ms", "cost_train_images_per_sec"}
    for name, fig in drawn.items():
        assert validated(fig).layout.meta["chart"] == name


def test_proxy_figure_one_point_per_matched_candidate(trials: pd.DataFrame) -> None:
    full = analysis.by_candidate(trials)
    # A proxy that sees every candidate but the first, with errors in the reverse order.
    proxy = full.iloc[1:].assign(test_error_mean=-full["test_error_mean"].iloc[1:])
    table = analysis.proxy_table(proxy, full)
    fig = validated(figures.proxy_figure(table, analysis.kendall_tau(table), "epoch 1 of 4"))
    assert figures.points(fig) == full.iloc[1:]["key"].nunique()
    assert "Kendall τ = -1.00" in fig.layout.title.text
    assert fig.layout.xaxis.title.text == "test error (%), epoch 1 of 4"
    empty = figures.proxy_figure(table.iloc[0:0], float("nan"), "x")
    assert not empty.data


# --- down-sampled to what a screen shows ----------------------------------------------------


def _drawn(edf: pd.DataFrame, space: str, at: np.ndarray) -> np.ndarray:
    """The EDF as the chart draws it (steps, shape "hv"): the value at the last grid
    point at or below each error."""
    part = edf[edf["space"] == space]
    grid, values = part["error"].to_numpy(), part["edf"].to_numpy()
    index = np.searchsorted(grid, at, side="right") - 1
    return np.where(index >= 0, values[np.maximum(index, 0)], 0.0)


@pytest.mark.parametrize("normalize_by", [None, "params"])
def test_edf_on_a_quantile_grid_is_within_one_step_of_the_exact_edf(
        normalize_by: str | None) -> None:
    """6,000 candidates, most of them in a narrow cluster: drawn from 50 points a space's
    EDF is within 1/50 of the exact one (counted here, candidate by candidate) at every
    error; an evenly spaced grid alone misses the cluster's rise."""
    rng = np.random.default_rng(7)
    rows = []
    for space, n in (("A", 4000), ("B", 2000)):
        errors = np.concatenate([rng.normal(5.0, 0.01, n - n // 10),
                                 rng.uniform(3.0, 40.0, n // 10)])
        params = rng.integers(10**5, 10**7, n)
        rows += [trial(f"{space}{i}", float(e), space=space, params=int(p))
                 for i, (e, p) in enumerate(zip(errors, params, strict=True))]
    trials = frame(rows)
    points = 50
    edf = analysis.edf_table(trials, points=points, bootstrap=0, normalize_by=normalize_by,
                             quantile_grid=True)
    plain = analysis.edf_table(trials, points=points, bootstrap=0, normalize_by=normalize_by)
    means = analysis.by_candidate(trials)
    parts = [part for _, part in means.groupby("space", sort=True)]
    weights = analysis.group_weights(parts, normalize_by)
    worst_plain = 0.0
    for part, weight in zip(parts, weights, strict=True):
        space = str(part["space"].iloc[0])
        errors = part["test_error_mean"].to_numpy(dtype=float)
        at = np.sort(np.concatenate([errors, errors + 1e-6, np.linspace(2, 41, 500)]))
        # The exact (weighted) EDF, longhand: the weight of the candidates at or below x.
        exact = np.array([weight[errors <= x].sum() for x in at]) / weight.sum()
        drawn = _drawn(edf, space, at)
        assert np.all(drawn <= exact + 1e-9)
        assert np.max(exact - drawn) <= 1 / points + 1e-9
        worst_plain = max(worst_plain, float(np.max(exact - _drawn(plain, space, at))))
    assert len(edf) <= 2 * (points + 2 * (points - 1))
    assert worst_plain > 10 / points  # what the quantiles are for


def test_error_vs_cost_bins_hold_every_candidate_once() -> None:
    """Above the threshold: a heatmap of bins per space (no WebGL, no marker per bin) whose
    cells hold exactly that space's candidates (recounted here over the trace's own cell
    edges), empty cells left out (gaps), and the exact Pareto front."""
    rng = np.random.default_rng(5)
    n = 3000
    rows = [trial(f"k{i}", float(e), space="AB"[i % 2], params=int(p), flops=int(p))
            for i, (e, p) in enumerate(zip(rng.normal(5, 1, n), rng.integers(10**4, 10**9, n),
                                           strict=True))]
    candidates = analysis.by_candidate(frame(rows))
    fig = validated(figures.error_vs_cost(candidates, "flops", bin_above=n - 1))
    bins = role(fig, "bins")
    assert [t.name for t in bins] == ["A", "B"] and figures.points(fig) == 0
    assert all(t.type == "heatmap" and t.hovertext is None for t in bins)
    for trace in bins:
        part = candidates[candidates["space"] == trace.name]
        z = np.asarray(trace.z, dtype=float)
        x_edges, y_edges = np.asarray(trace.x, dtype=float), np.asarray(trace.y, dtype=float)
        assert z.shape == (len(y_edges) - 1, len(x_edges) - 1)  # edges, not centres
        recount, _, _ = np.histogram2d(part["test_error_mean"].astype(float),
                                       part["flops"].astype(float), bins=[y_edges, x_edges])
        assert recount.sum() == len(part)  # the edges hold every candidate
        assert np.array_equal(np.nan_to_num(z), recount)
        assert np.isnan(z[recount == 0]).all()  # an empty cell is a gap, not a zero
    (front,) = role(fig, "pareto")
    expected = analysis.pareto_front(candidates, "flops")
    assert np.allclose(front.x, expected["flops"].astype(float))
    exact = figures.error_vs_cost(candidates, "flops", bin_above=n)
    assert figures.points(exact) == n and not role(exact, "bins")
    assert all(t.type == "scattergl" and t.customdata is not None
               for t in role(exact, "candidates"))


@pytest.mark.parametrize(("rows", "max_points"), [(10, 4), (1000, 40), (7, 1), (12345, 400),
                                                   (400, 399)])
def test_envelope_keeps_each_buckets_first_last_lowest_and_highest(rows: int,
                                                                   max_points: int) -> None:
    """figures.envelope, all buckets at once, keeps the rows a bucket-by-bucket longhand
    keeps: per bucket of rows sorted by x, its first, last, and the first row at its lowest
    and at its highest y (ties in x and y included)."""
    rng = np.random.default_rng(rows)
    frame = pd.DataFrame({"x": rng.integers(0, 50, rows), "y": np.round(rng.normal(size=rows), 1)})
    ordered = frame.sort_values("x", kind="stable")
    values = ordered["y"].to_numpy()
    edges = np.linspace(0, rows, max(max_points // 4, 1) + 1).round().astype(int)
    keep: set[int] = set()
    for start, stop in itertools.pairwise(edges):
        if stop > start:
            part = list(values[start:stop])
            keep |= {start, start + part.index(min(part)), start + part.index(max(part)),
                     stop - 1}
    expected = ordered.iloc[sorted(keep)] if rows > max_points else frame
    assert figures.envelope(frame, "x", "y", max_points).index.tolist() == \
        expected.index.tolist()
