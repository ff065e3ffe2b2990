"""explorer.analysis on small hand-made frames whose answers are known by construction."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from explorer import analysis, stats
from explorer.arch import setting_label


def trial(key: str, error: float | None, *, space: str = "s", seed: int = 0, c: int = 1,
          d: int = 64, params: int = 100, flops: int = 1000, status: str = "finished",
          trial_id: int | None = None, experiment: str = "e", **extra: Any) -> dict[str, Any]:
    return {"experiment": experiment, "space": space, "key": key, "trial_id": trial_id,
            "cardinality": c, "bottleneck_width": d, "depths": (3, 3, 3),
            "widths": (256, 512, 1024), "params": params, "flops": flops, "acts": 10,
            "seed": seed, "status": status, "test_error": error,
            "test_top5_error": None if error is None else error / 10,
            "train_images_per_sec": 100.0, "latency_ms": 1.0, **extra}


def frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    for i, row in enumerate(rows, start=1):
        if row["trial_id"] is None:
            row["trial_id"] = i
    return pd.DataFrame(rows)


# --- finished / by_candidate ---------------------------------------------------------------


def test_finished_keeps_finished_trials_with_an_error() -> None:
    trials = frame([trial("a", 5.0), trial("b", None), trial("c", 4.0, status="failed"),
                    trial("d", 3.0, status="running")])
    assert analysis.finished(trials)["key"].tolist() == ["a"]


def test_by_candidate_mean_and_sample_std_over_seeds() -> None:
    trials = frame([trial("a", 4.0, seed=0), trial("a", 6.0, seed=1), trial("a", 8.0, seed=2),
                    trial("b", 5.0), trial("b", None, seed=1, status="failed")])
    out = analysis.by_candidate(trials).set_index("key")
    assert out.loc["a", "test_error_mean"] == pytest.approx(6.0)
    assert out.loc["a", "test_error_std"] == pytest.approx(2.0)  # ddof=1: sqrt((4+0+4)/2)
    assert out.loc["a", "seeds"] == 3
    # One seed: std 0 (drawable error bar), not NaN; the failed seed is not counted.
    assert out.loc["b", "test_error_std"] == 0.0
    assert out.loc["b", "seeds"] == 1
    assert out.loc["a", "test_top5_error_mean"] == pytest.approx(0.6)


def test_by_candidate_one_row_per_space_and_hashable_lists() -> None:
    trials = frame([trial("a", 4.0, space="x"), trial("a", 4.0, space="y"),
                    trial("b", 5.0, space="x", depths=[2, 2, 2])])
    out = analysis.by_candidate(trials)
    assert sorted(zip(out["space"], out["key"], strict=True)) == [
        ("x", "a"), ("x", "b"), ("y", "a")]
    assert (2, 2, 2) in out["depths"].tolist()


def test_by_candidate_empty() -> None:
    out = analysis.by_candidate(frame([trial("a", None, status="running")]))
    assert out.empty
    assert {"test_error_mean", "test_error_std", "seeds"} <= set(out.columns)


# --- Pareto front ---------------------------------------------------------------------------


def test_pareto_front_known_by_construction() -> None:
    # (cost, error): b and d are dominated; e ties c on error at a higher cost.
    points = pd.DataFrame({
        "key": ["a", "b", "c", "d", "e", "f"],
        "flops": [1, 2, 3, 4, 5, 6],
        "test_error_mean": [9.0, 9.5, 7.0, 8.0, 7.0, 5.0],
    })
    front = analysis.pareto_front(points, "flops")
    assert front["key"].tolist() == ["a", "c", "f"]


def test_pareto_front_same_cost_keeps_the_lower_error() -> None:
    points = pd.DataFrame({"key": ["hi", "lo"], "flops": [1, 1], "test_error_mean": [5.0, 4.0]})
    assert analysis.pareto_front(points, "flops")["key"].tolist() == ["lo"]


def test_pareto_front_of_shuffled_points_equals_brute_force() -> None:
    rng = np.random.default_rng(3)
    points = pd.DataFrame({"flops": rng.integers(1, 50, 200).astype(float),
                           "test_error_mean": rng.normal(5, 1, 200)})
    front = set(analysis.pareto_front(points, "flops").index)
    brute = {i for i, row in points.iterrows()
             if not ((points["flops"] <= row["flops"])
                     & (points["test_error_mean"] < row["test_error_mean"])).any()
             and not ((points["flops"] < row["flops"])
                      & (points["test_error_mean"] <= row["test_error_mean"])).any()}
    # Exact duplicates: the brute force keeps both, the front keeps one.
    assert front <= brute
    assert points.loc[list(brute)].drop_duplicates().shape[0] == len(front)


# --- tradeoff -------------------------------------------------------------------------------


def test_tradeoff_orders_by_space_then_cardinality_and_labels_c_by_d() -> None:
    candidates = analysis.by_candidate(frame([
        trial("c32", 22.2, c=32, d=4), trial("c1", 23.9, c=1, d=64), trial("c4", 22.6, c=4, d=24),
        trial("c2", 23.0, c=2, d=40), trial("c8", 22.3, c=8, d=14),
    ]))
    table = analysis.tradeoff(candidates)
    assert table["cardinality"].tolist() == [1, 2, 4, 8, 32]
    assert table["setting"].tolist() == ["1×64d", "2×40d", "4×24d", "8×14d", "32×4d"]
    # The paper's Table 3 (ResNet-50 regime): error falls as C rises.
    assert table["test_error_mean"].is_monotonic_decreasing


def test_tradeoff_empty_has_setting_column() -> None:
    empty = analysis.by_candidate(frame([trial("a", None)]))
    assert "setting" in analysis.tradeoff(empty).columns


# --- EDFs -----------------------------------------------------------------------------------


def test_error_edf_counts_models_at_or_below() -> None:
    grid = np.array([0.5, 1.0, 2.5, 4.0, 9.0])
    assert analysis.error_edf([1.0, 2.0, 3.0, 4.0], grid).tolist() == [0.0, 0.25, 0.5, 1.0, 1.0]
    assert analysis.error_edf([], grid).tolist() == [0.0] * 5


def test_weighted_edf_with_weights() -> None:
    errors = np.array([3.0, 1.0, 2.0])
    weights = np.array([0.5, 0.25, 0.25])
    out = analysis.weighted_edf(errors, weights, np.array([0.0, 1.0, 2.0, 3.0]))
    assert out.tolist() == [0.0, 0.25, 0.5, 1.0]


def test_complexity_weights_flatten_the_histogram() -> None:
    # Three models in the low bin, one in the high one: each bin gets half the weight.
    values = np.array([10.0, 10.0, 10.0, 1000.0])
    weights = analysis.complexity_weights(values, bins=2)
    assert weights.sum() == pytest.approx(1.0)
    assert weights[:3].sum() == pytest.approx(0.5)
    assert weights[3] == pytest.approx(0.5)


def test_edf_table_values_and_bands() -> None:
    trials = frame([trial(f"a{i}", e, space="A") for i, e in enumerate([1.0, 2.0, 3.0, 4.0])]
                   + [trial(f"b{i}", e, space="B") for i, e in enumerate([3.0, 4.0])])
    table = analysis.edf_table(trials, points=4, bootstrap=50)
    assert set(table["space"]) == {"A", "B"}
    a = table[table["space"] == "A"]
    assert a["error"].tolist() == [1.0, 2.0, 3.0, 4.0]  # the grid spans all models
    assert a["edf"].tolist() == [0.25, 0.5, 0.75, 1.0]
    b = table[table["space"] == "B"]
    assert b["edf"].tolist() == [0.0, 0.0, 0.5, 1.0]
    assert (table["low"] <= table["edf"] + 1e-12).all()
    assert (table["high"] >= table["edf"] - 1e-12).all()
    assert a["models"].iloc[0] == 4


def test_edf_table_complexity_normalised() -> None:
    # Space A: three cheap models with error 1 and one costly model with error 5.
    # Unweighted, 75% of A is at error 1; normalised by params, only half is.
    rows = [trial(f"a{i}", 1.0, space="A", params=10) for i in range(3)]
    rows.append(trial("a3", 5.0, space="A", params=1000))
    plain = analysis.edf_table(frame(rows), points=2, bootstrap=0)
    weighted = analysis.edf_table(frame(rows), points=2, bootstrap=0, normalize_by="params")
    assert plain["edf"].tolist() == [0.75, 1.0]
    assert weighted["edf"].tolist() == pytest.approx([0.5, 1.0])


def test_edf_table_empty() -> None:
    assert analysis.edf_table(frame([trial("a", None, status="failed")])).empty


# --- curves and filters ---------------------------------------------------------------------


def test_curves_long_form_with_labels() -> None:
    trials = frame([trial("a", 5.0, c=4, d=24, seed=1, trial_id=7),
                    trial("a", 5.0, c=4, d=24, seed=1, trial_id=7, space="other")])
    epochs = pd.DataFrame({"trial_id": [7, 7], "epoch": [0, 1], "train_error": [50.0, 20.0],
                           "test_error": [60.0, np.nan]})
    long = analysis.curves(epochs, trials)
    assert len(long) == 3  # the missing test error is dropped
    assert set(long["split"]) == {"train", "test"}
    assert set(long["label"]) == {"4×24d seed 1"}
    train = long[long["split"] == "train"]
    assert train["epoch"].tolist() == [0, 1]
    assert train["error"].tolist() == [50.0, 20.0]


def test_filter_trials_empty_selection_means_all() -> None:
    trials = frame([trial("a", 1.0, seed=0, c=1), trial("b", 2.0, seed=1, c=4),
                    trial("c", None, seed=2, c=8, status="failed", space="t")])
    assert len(analysis.filter_trials(trials)) == 3
    assert analysis.filter_trials(trials, seeds=[1, 2])["key"].tolist() == ["b", "c"]
    assert analysis.filter_trials(trials, statuses=["failed"])["key"].tolist() == ["c"]
    assert analysis.filter_trials(trials, spaces=["s"], ranges={"cardinality": (2, 8)}
                                  )["key"].tolist() == ["b"]


def test_filter_trials_by_architecture_with_missing_values() -> None:
    trials = frame([trial("a", 1.0, c=1, d=64), trial("b", 2.0, c=4, d=24, depths=[2, 2, 2]),
                    trial("c", None, c=8, d=14, status="failed")])
    trials["cardinality"] = pd.array([1, None, 8], dtype="Int64")  # as the store hands it out
    assert analysis.filter_trials(trials, cardinalities=[1, 8])["key"].tolist() == ["a", "c"]
    assert analysis.filter_trials(trials, ranges={"cardinality": (0, 9)})["key"].tolist() == [
        "a", "c"]
    assert analysis.filter_trials(trials, bottleneck_widths=[24], depths=["2-2-2"]
                                  )["key"].tolist() == ["b"]


def test_setting_labels_name_c_by_d_and_are_missing_where_c_or_d_is() -> None:
    rows = frame([trial("a", 1.0, c=8, d=14), trial("b", 1.0, c=4, d=24)])
    rows["cardinality"] = pd.array([8, None], dtype="Int64")
    labels = analysis.setting_labels(rows)
    assert labels.iloc[0] == setting_label(8, 14) == "8×14d"
    assert pd.isna(labels.iloc[1])
    assert analysis.arch_labels(rows).tolist() == ["8×14d depths 3-3-3 widths 256-512-1024",
                                                   "?×24d depths 3-3-3 widths 256-512-1024"]


# --- proxy fidelity -------------------------------------------------------------------------


def test_kendall_tau_of_a_hand_counted_ranking() -> None:
    # Proxy order a<b<c<d, full order a<c<b<d: of the 6 pairs only (b, c) is swapped,
    # so tau = (5 concordant - 1 discordant) / 6.
    proxy = analysis.by_candidate(frame([trial("a", 1.0), trial("b", 2.0), trial("c", 3.0),
                                         trial("d", 4.0)]))
    full = analysis.by_candidate(frame([trial("a", 10.0), trial("b", 30.0), trial("c", 20.0),
                                        trial("d", 40.0)]))
    table = analysis.proxy_table(proxy, full)
    assert analysis.kendall_tau(table) == pytest.approx(4 / 6)
    assert table["key"].tolist() == ["a", "c", "b", "d"]  # best full error first
    assert table.set_index("key")["proxy_rank"].to_dict() == {"a": 1, "b": 2, "c": 3, "d": 4}
    assert table.set_index("key")["full_rank"].to_dict() == {"a": 1, "c": 2, "b": 3, "d": 4}
    # A full run that ranks the candidates in exactly the proxy's reverse order: tau = -1.
    reversed_full = proxy.assign(test_error_mean=-proxy["test_error_mean"])
    assert analysis.kendall_tau(analysis.proxy_table(proxy, reversed_full)) == pytest.approx(-1)


def test_proxy_table_matches_on_key_across_spaces_and_experiments() -> None:
    # The proxy comes from another experiment with other space names; "x" is only in the
    # proxy and "y" only in the full run; "a" is in two spaces of the full run (counted once).
    proxy = analysis.by_candidate(frame([
        trial("a", 1.0, experiment="short", space="p"), trial("b", 2.0, experiment="short",
                                                              space="p", seed=0),
        trial("b", 4.0, experiment="short", space="p", seed=1),
        trial("x", 9.0, experiment="short", space="p")]))
    full = analysis.by_candidate(frame([
        trial("a", 5.0, space="s1"), trial("a", 5.0, space="s2"), trial("b", 6.0, space="s1"),
        trial("y", 1.0, space="s1")]))
    table = analysis.proxy_table(proxy, full).set_index("key")
    assert sorted(table.index) == ["a", "b"]
    assert table.loc["b", "proxy_error"] == pytest.approx(3.0)  # mean over its two seeds
    assert table.loc["a", "full_error"] == pytest.approx(5.0)
    assert np.isnan(analysis.kendall_tau(table.reset_index()))  # 2 candidates say nothing


def test_errors_at_epoch_takes_that_epochs_error_and_skips_short_trials() -> None:
    trials = frame([trial("a", 5.0, trial_id=1), trial("b", 6.0, trial_id=2),
                    trial("c", 7.0, trial_id=3, status="failed")])
    epochs = pd.DataFrame({"trial_id": [1, 1, 2, 3, 3], "epoch": [1, 2, 2, 1, 2],
                           "test_error": [50.0, 40.0, 45.0, 60.0, 55.0]})
    early = analysis.errors_at_epoch(trials, epochs, 1)
    assert early.set_index("key")["test_error"].to_dict() == {"a": 50.0}  # b has no epoch 1
    assert analysis.errors_at_epoch(trials, epochs.iloc[0:0], 1).empty
    assert analysis.proxy_table(analysis.by_candidate(early), analysis.by_candidate(trials)
                                )["key"].tolist() == ["a"]


@pytest.mark.parametrize("ties", [False, True])
def test_edf_band_is_the_longhand_bootstrap(ties: bool) -> None:
    """stats.edf_band reads each draw's EDF from how often the draw picked each model; the
    longhand: the same seeded draws' models resampled, weights renormalised, their weighted
    EDF read by counting (ties, zero weights and a draw of only zero weights included)."""
    rng = np.random.default_rng(5)
    errors = rng.normal(7.0, 1.0, 40)
    if ties:
        errors = np.round(errors, 0)
    weights = rng.random(40)
    weights[:30] = 0.0  # most models weightless: some draws pick none of the others
    weights /= weights.sum()
    grid = np.union1d(np.linspace(errors.min() - 1, errors.max() + 1, 15), errors[:5])
    low, high = stats.edf_band(errors, weights, grid, draws=300, level=0.8,
                               rng=np.random.default_rng(9))
    draws = np.random.default_rng(9)
    curves = []
    for _ in range(300):
        picked = draws.integers(0, errors.size, errors.size)
        e, w = errors[picked], weights[picked]
        total = w.sum()
        curves.append([w[e <= g].sum() / total if total > 0 else 0.0 for g in grid])
    np.testing.assert_allclose(low, np.quantile(curves, 0.1, axis=0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(high, np.quantile(curves, 0.9, axis=0), rtol=0, atol=1e-12)


def test_pareto_front_in_sort_values_order_with_ties_and_nullable_ints() -> None:
    """pareto_front sorts complete columns with numpy (lexsort): the rows and their order are
    those of pandas' stable sort on (cost, error), ties included, integer costs as Int64."""
    rng = np.random.default_rng(2)
    points = pd.DataFrame({
        "key": [f"k{i}" for i in range(300)],
        "flops": pd.array(rng.integers(1, 20, 300), dtype="Int64"),
        "test_error_mean": np.round(rng.normal(5.0, 1.0, 300), 1),
    })
    ordered = points.sort_values(["flops", "test_error_mean"], kind="mergesort")
    best = np.inf
    expected = []
    for index, error in zip(ordered.index, ordered["test_error_mean"], strict=True):
        if error < best:
            expected.append(index)
            best = error
    assert analysis.pareto_front(points, "flops").index.tolist() == expected
