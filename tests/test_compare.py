"""`explorer compare`: design spaces as distributions, the verdict on doubling C and the
sample-size planner, checked against scipy and against computations written here.

The stores are written through the store's Writer API, as the sweep does, from real
specs and candidates (exact complexity); only the errors are synthetic, seeded.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fixtures_store import make_fixture_store, write_population
from scipy import stats as scipy_stats
from typer.testing import CliRunner

from explorer import analysis, compare, stats
from explorer.cli import app as cli_app
from explorer.space import Candidate
from explorer.store import Reader

runner = CliRunner()

# Two spaces of overlapping flops: ResNets (C = 1) and ResNeXts (C = 2, 4, 8) over the same
# widths and depths, so the normalisation has bins in common and bins it must drop.
SPEC = """\
name: {name}
model:
  template: cifar
  depths: [1, 1, 1]
  stem_width: 16
  widths: [64, 128, 256]
  cardinality: 1
  bottleneck_width: 8
spaces:
  resnet:
    axes:
      widths: [[64, 128, 256], [96, 192, 384], [128, 256, 512], [192, 384, 768]]
      depths: [[1, 1, 1], [2, 2, 2], [3, 3, 3]]
  resnext:
    axes:
      cardinality: [2, 4, 8]
      widths: [[64, 128, 256], [96, 192, 384], [128, 256, 512]]
      depths: [[1, 1, 1], [2, 2, 2]]
  preserved:
    axes: {{cardinality: [1, 2, 4, 8, 16]}}
    solve: {{field: bottleneck_width, preserve: params, tolerance: 0.1}}
data: {{dataset: cifar10, resolution: 16}}
train: {{epochs: 2, seeds: {seeds}}}
"""


def write_store(url: str, name: str, *, seeds: int, slope: float, noise: float,
                seed: int = 0) -> None:
    """Every candidate of SPEC trained for every seed, finished, with error
    40 - 2·log10(flops/1e6) + slope·log2(C) + a seed offset + noise."""
    rng = np.random.default_rng(seed)
    offsets = rng.normal(0.0, 1.0, seeds)  # a seed effect the pairing must remove

    def error(candidate: Candidate, run_seed: int) -> float:
        return float(40.0 - 2.0 * math.log10(candidate.complexity.flops / 1e6)
                     + slope * math.log2(candidate.arch.stages[0].cardinality)
                     + offsets[run_seed] + rng.normal(0.0, noise))

    write_population(url, SPEC.format(name=name, seeds=list(range(seeds))), error)


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('compare') / 'explorer.db'}"
    write_store(url, "trend", seeds=3, slope=-0.5, noise=0.1)
    write_store(url, "noise", seeds=2, slope=0.0, noise=1.5, seed=1)
    make_fixture_store(url, experiments=("fixture",), seeds=2)
    return url


def run(*args: str) -> Any:
    result = runner.invoke(cli_app, ["compare", *args])
    return result


def last_json(output: str) -> dict[str, Any]:
    value = json.loads(output.strip().splitlines()[-1])
    assert isinstance(value, dict)
    return value


def exported_means(db: str, experiment: str, tmp_path: Path) -> pd.DataFrame:
    """Each candidate's mean final test error over finished seeds, from `explorer export`."""
    output = tmp_path / "trials.csv"
    result = runner.invoke(cli_app, ["export", experiment, "--store", db, "-o", str(output)])
    assert result.exit_code == 0, result.output
    trials = pd.read_csv(output)
    done = trials[(trials["status"] == "finished") & trials["test_error"].notna()]
    return done.groupby(["space", "key"], as_index=False).agg(
        error=("test_error", "mean"), flops=("flops", "first"), params=("params", "first"),
        cardinality=("cardinality", "first"))


# --- KS against scipy, on the exported errors ------------------------------------------------


def test_unnormalised_ks_is_scipy_ks_2samp_on_exported_errors(db: str, tmp_path: Path) -> None:
    result = run("trend", "--store", db, "--normalize", "none", "--json")
    assert result.exit_code == 0, result.output
    out = last_json(result.output)
    means = exported_means(db, "trend", tmp_path)
    errors = {s: part["error"].to_numpy() for s, part in means.groupby("space")}
    assert set(out["spaces"]) == set(errors) == {"preserved", "resnet", "resnext"}
    for name, values in errors.items():
        got = out["spaces"][name]
        assert got["n"] == values.size
        assert got["min"] == pytest.approx(values.min(), abs=1e-9)
        assert got["mean"] == pytest.approx(values.mean(), abs=1e-9)
    assert len(out["pairs"]) == 3
    for pair in out["pairs"]:
        expected = scipy_stats.ks_2samp(errors[pair["a"]], errors[pair["b"]])
        assert pair["ks_statistic"] == pytest.approx(expected.statistic, abs=1e-12)
        assert pair["p_value"] == pytest.approx(expected.pvalue, abs=1e-12)


def test_json_has_the_contract_shape(db: str) -> None:
    out = last_json(run("trend", "--store", db, "--json", "--space", "resnet",
                        "--space", "resnext").output)
    assert set(out["spaces"]) == {"resnet", "resnext"}
    assert {"n", "min", "mean"} <= set(out["spaces"]["resnet"])
    assert [(p["a"], p["b"]) for p in out["pairs"]] == [("resnet", "resnext")]
    assert {"a", "b", "ks_statistic", "p_value"} <= set(out["pairs"][0])
    assert out["normalize"] == "flops"  # the default, as in NDS


# --- complexity normalisation, computed independently -----------------------------------------


def independent_weights(flops: dict[str, np.ndarray], bins: int) -> dict[str, np.ndarray]:
    """Uniform over the log-flops bins every space occupies, written out longhand."""
    logs = {s: np.log(v.astype(float)) for s, v in flops.items()}
    low = min(v.min() for v in logs.values())
    width = (max(v.max() for v in logs.values()) + 1e-9 - low) / bins
    which = {s: np.minimum(((v - low) // width).astype(int), bins - 1) for s, v in logs.items()}
    shared = set.intersection(*(set(w.tolist()) for w in which.values()))
    assert shared, "the test's spaces must share a bin"
    out = {}
    for s, w in which.items():
        weights = np.array([1.0 / np.sum(w == b) if b in shared else 0.0 for b in w])
        out[s] = weights / weights.sum()
    return out


def independent_edf(errors: np.ndarray, weights: np.ndarray, at: np.ndarray) -> np.ndarray:
    return np.array([weights[errors <= x].sum() for x in at])


def test_normalised_edfs_and_ks_match_an_independent_computation(db: str,
                                                                  tmp_path: Path) -> None:
    result = run("trend", "--store", db, "--json", "--space", "resnet", "--space", "resnext",
                 "--normalize", "flops", "--bins", "6")
    assert result.exit_code == 0, result.output
    out = last_json(result.output)
    means = exported_means(db, "trend", tmp_path)
    parts = {s: means[means["space"] == s] for s in ("resnet", "resnext")}
    weights = independent_weights({s: p["flops"].to_numpy() for s, p in parts.items()}, 6)
    assert any((w == 0).any() for w in weights.values())  # some models fall outside
    errors = {s: p["error"].to_numpy() for s, p in parts.items()}
    pooled = np.concatenate(list(errors.values()))
    edfs = {s: independent_edf(errors[s], weights[s], pooled) for s in errors}
    pair = out["pairs"][0]
    assert pair["ks_statistic"] == pytest.approx(np.max(np.abs(edfs["resnet"] - edfs["resnext"])))
    kish = {s: w.sum() ** 2 / (w ** 2).sum() for s, w in weights.items()}
    assert pair["n_a"] == pytest.approx(kish["resnet"])
    en = round(kish["resnet"] * kish["resnext"] / (kish["resnet"] + kish["resnext"]))
    assert pair["p_value"] == pytest.approx(scipy_stats.kstwo.sf(pair["ks_statistic"], en))
    for s in errors:
        got = out["spaces"][s]
        assert got["weighted_mean"] == pytest.approx(np.sum(weights[s] * errors[s]))
        assert got["n_effective"] == pytest.approx(kish[s])
        # The EDF summary: the smallest error whose weighted EDF reaches the level.
        order = np.argsort(errors[s])
        median = errors[s][order][np.argmax(np.cumsum(weights[s][order]) >= 0.5 - 1e-12)]
        assert got["edf"]["q50"] == pytest.approx(median)
    # The dashboard's and the report's EDF curves are the same weighted EDFs.
    with Reader.open(db) as store:
        trials = store.trials_frame(["trend"])
    chosen = trials[trials["space"].isin(["resnet", "resnext"])]
    table = analysis.edf_table(chosen, normalize_by="flops", bins=6, points=25, bootstrap=0)
    for s in errors:
        curve = table[table["space"] == s]
        assert curve["edf"].to_numpy() == pytest.approx(
            independent_edf(errors[s], weights[s], curve["error"].to_numpy()))


def test_weighted_ks_with_equal_weights_is_scipys_asymptotic_test() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(0, 1, 40), rng.normal(0.5, 1, 55)
    got = stats.ks_test(a, b, np.full(a.size, 1.0), np.full(b.size, 1.0))
    expected = scipy_stats.ks_2samp(a, b, method="asymp")
    assert got.statistic == pytest.approx(expected.statistic)
    assert got.p_value == pytest.approx(expected.pvalue)
    assert (got.n_a, got.n_b) == (pytest.approx(40), pytest.approx(55))


def test_spaces_without_a_common_bin_are_one_clear_error(db: str) -> None:
    # "deeper" and "preserved" of the fixture share only the base network's params bin at
    # 10 bins; at 200 bins even that bin is theirs alone only if they share the network,
    # so compare two spaces whose params never meet: resnet's smallest vs preserved.
    trials = pd.DataFrame({
        "experiment": "e", "space": ["x", "x", "y", "y"], "key": ["a", "b", "c", "d"],
        "cardinality": 1, "bottleneck_width": 8, "depths": [(1, 1, 1)] * 4,
        "widths": [(64, 128, 256)] * 4, "params": [10, 20, 1000, 2000],
        "flops": [10, 20, 1000, 2000], "acts": 1, "seed": 0, "status": "finished",
        "test_error": [1.0, 2.0, 3.0, 4.0], "test_top5_error": 0.1, "trial_id": [1, 2, 3, 4],
        "train_images_per_sec": 1.0, "latency_ms": 1.0})
    with pytest.raises(compare.CompareError, match="share none of the 10 log-spaced flops"):
        compare.compare_spaces(trials, normalize="flops")
    assert compare.compare_spaces(trials, normalize="none").pairs[0].ks_statistic == 1.0


def test_bootstrap_bands_are_seeded_and_hold_the_edf(db: str) -> None:
    with Reader.open(db) as store:
        trials = store.trials_frame(["trend"])
    trials = trials[trials["space"] != "preserved"]
    one = analysis.edf_table(trials, normalize_by="flops", bootstrap=50, seed=4)
    two = analysis.edf_table(trials, normalize_by="flops", bootstrap=50, seed=4)
    pd.testing.assert_frame_equal(one, two)
    assert (one["low"] <= one["high"] + 1e-12).all()
    assert (one["high"] > one["low"]).any()


# --- the verdict -------------------------------------------------------------------------------


def fe_slope(x: np.ndarray, y: np.ndarray, seeds: np.ndarray) -> float:
    """Least squares with a dummy column per seed (no shared intercept): the slope on x."""
    levels = np.unique(seeds)
    design = np.column_stack([x, *[(seeds == s).astype(float) for s in levels]])
    return float(np.linalg.lstsq(design, y, rcond=None)[0][0])


def independent_bootstrap(runs: pd.DataFrame, draws: int, seed: int) -> tuple[float, float]:
    """Candidates drawn with replacement, each with all of its seeds, refitted; 95%."""
    keys = sorted(runs["key"].unique())
    rng = np.random.default_rng(seed)
    slopes = []
    for _ in range(draws):
        picked = [keys[i] for i in rng.integers(0, len(keys), len(keys))]
        sample = pd.concat([runs[runs["key"] == k] for k in picked])
        if sample["cardinality"].nunique() < 2:
            continue
        slopes.append(fe_slope(np.log2(sample["cardinality"].to_numpy(float)),
                               sample["test_error"].to_numpy(float), sample["seed"].to_numpy()))
    low, high = np.quantile(slopes, [0.025, 0.975])
    return float(low), float(high)


def preserved_runs(db: str, experiment: str) -> pd.DataFrame:
    with Reader.open(db) as store:
        trials = store.trials_frame([experiment])
    done = analysis.finished(trials)
    return done[done["space"] == "preserved"]


def test_verdict_slope_and_interval_match_an_independent_bootstrap(db: str) -> None:
    runs = preserved_runs(db, "trend")
    verdicts = compare.cardinality_verdicts(runs, draws=300, seed=7)
    assert [v.space for v in verdicts] == ["preserved"]  # resnet and resnext are not at
    trend = verdicts[0].trend                               # preserved complexity
    assert trend is not None
    x = np.log2(runs["cardinality"].to_numpy(float))
    assert trend.slope == pytest.approx(fe_slope(x, runs["test_error"].to_numpy(float),
                                                 runs["seed"].to_numpy()))
    low, high = independent_bootstrap(runs, draws=300, seed=7)
    assert (trend.low, trend.high) == (pytest.approx(low), pytest.approx(high))
    assert trend.seeds == 3 and trend.candidates == 4  # C = 8 is beyond the tolerance
    # The true slope is -0.5 (plus a flops term); the sentence states it.
    assert trend.detected and trend.high < 0
    assert verdicts[0].sentence.startswith(
        f"preserved: error falls by {-trend.slope:.2f} points per doubling of C, 95% CI "
        f"[{-trend.high:.2f}, {-trend.low:.2f}]")
    tau = scipy_stats.kendalltau(
        runs.groupby("key")["cardinality"].first(), runs.groupby("key")["test_error"].mean())
    assert trend.tau == pytest.approx(tau.statistic)
    # Four cardinalities: Kendall's exact test cannot reach 5% (its smallest p is 2/24), so
    # the slope is stated, and said not to be confirmed.
    assert tau.pvalue >= 0.05
    assert "but the trend test does not confirm it" in verdicts[0].sentence


def test_verdict_without_a_trend_says_how_many_seeds_would_show_one(db: str) -> None:
    result = run("noise", "--store", db, "--space", "preserved")
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if x.startswith("verdict:"))
    runs = preserved_runs(db, "noise")
    trend = compare.cardinality_verdicts(runs)[0].trend
    assert trend is not None and not trend.detected
    # Power from the observed spread, written out: SE = sigma / sqrt(S · Σ(x - x̄)²).
    x = np.log2(np.sort(runs["cardinality"].unique()).astype(float))
    z = scipy_stats.norm.ppf(0.975) + scipy_stats.norm.ppf(0.8)
    seeds = (z * trend.residual_std / abs(trend.slope)) ** 2 / np.sum((x - x.mean()) ** 2)
    if seeds <= compare.MANY_SEEDS:
        assert f"no trend detectable with 2 seeds; about {max(math.ceil(seeds), 2)} seeds " \
               f"would detect {abs(trend.slope):.2f} points" in line
    else:
        assert "no trend detectable with 2 seeds: the observed slope" in line


def test_verdict_is_honest_with_too_few_points(db: str) -> None:
    runs = preserved_runs(db, "trend")
    two = runs[runs["cardinality"].isin([1, 2])]
    verdict = compare.cardinality_verdicts(two)[0]
    assert verdict.trend is None
    assert "too few points to say: finished runs at 2 cardinalities" in verdict.sentence


# --- the planner ------------------------------------------------------------------------------


@pytest.mark.parametrize("ks", [0.1, 0.2, 0.05])
def test_plan_is_the_closed_form(db: str, ks: float) -> None:
    result = run("trend", "--store", db, "--plan", "--ks", str(ks), "--json",
                 "--normalize", "none")
    assert result.exit_code == 0, result.output
    plan = last_json(result.output)["plan"]
    # Smirnov's limit: the two-sample test at 5% flags D once D > K·sqrt(2/n), K the
    # Kolmogorov distribution's 95% point.
    k = scipy_stats.kstwobign.isf(0.05)
    n = plan["per_space"]
    assert k * math.sqrt(2 / n) <= ks < k * math.sqrt(2 / (n - 1))
    assert plan["needed"]["resnet"] == n  # equal weights lose nothing
    for pair in plan["detectable_now"]:
        sizes = last_json(result.output)["spaces"]
        na, nb = sizes[pair["a"]]["n"], sizes[pair["b"]]["n"]
        assert pair["ks"] == pytest.approx(k * math.sqrt((na + nb) / (na * nb)), rel=1e-4)


def test_plan_printed_with_its_rule(db: str) -> None:
    result = run("trend", "--store", db, "--plan")
    assert result.exit_code == 0, result.output
    assert "plan: to detect a KS difference of 0.1 at α = 0.05, each space needs about 369" \
        in result.output
    assert "rule: n = m = ceil(2·c(α)²/D²)" in result.output


def test_simulated_plan_comes_near_the_closed_form_for_continuous_errors() -> None:
    errors = np.random.default_rng(0).normal(0, 1, 5000)
    n = stats.simulated_samples_needed(errors, 0.2, draws=300, seed=1)
    assert n is not None and 0.7 * stats.ks_samples_needed(0.2) <= n <= 1.4 * \
        stats.ks_samples_needed(0.2)


# --- the command's errors -----------------------------------------------------------------------


@pytest.mark.parametrize(("args", "message"), [
    (["nope"], "no experiment 'nope' in the store"),
    (["trend", "--space", "wider"], "--space 'wider' is not a space of 'trend'"),
    (["trend", "--normalize", "acts"], "--normalize 'acts': use none, params, flops"),
    (["trend", "--ks", "0"], "--ks 0: a KS difference is between 0 and 1"),
    (["trend", "--bins", "0"], "--bins 0: use 1 or more bins"),
])
def test_errors_are_one_line_exit_2(db: str, args: list[str], message: str) -> None:
    result = run(*args, "--store", db)
    assert result.exit_code == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output + result.stderr


def test_missing_store_is_exit_2(tmp_path: Path) -> None:
    result = run("trend", "--runs-dir", str(tmp_path / "nothing"))
    assert result.exit_code == 2
    assert "Traceback" not in result.output + result.stderr


def test_default_normalisation_falls_back_with_a_notice(db: str) -> None:
    # preserved sits in a flops bin that resnet and resnext do not both reach.
    result = run("trend", "--store", db, "--json")
    assert result.exit_code == 0, result.output
    assert "share none of the 10 log-spaced flops bins" in result.stderr
    assert "compared without normalisation" in result.stderr
    assert last_json(result.stdout)["normalize"] == "none"
    asked = run("trend", "--store", db, "--normalize", "flops")
    assert asked.exit_code == 2 and "share none" in asked.stderr


def test_human_output(db: str) -> None:
    result = run("fixture", "--store", db)
    assert result.exit_code == 0, result.output
    assert "two-sample Kolmogorov–Smirnov tests" in result.output
    assert "verdict: preserved: error falls by" in result.output


@pytest.mark.parametrize("experiment", ["trend", "noise"])
def test_cli_means_from_the_narrow_read_are_the_databases(db: str, experiment: str) -> None:
    """`explorer compare` makes the means over seeds from its one narrow read (MEANS_COLUMNS,
    analysis.by_candidate): the same JSON as the whole trials frame compared with the
    database's means (Reader.candidate_means)."""
    result = run(experiment, "--json", "--plan", "--equivalence", "0.2", "--store", db)
    assert result.exit_code == 0, result.output
    with Reader.open(db) as reader:
        trials = reader.trials_frame([experiment])
        means = reader.candidate_means([experiment])
    expected, _ = compare.compare_or_plain(trials, candidates=means, margin=0.2)
    expected = dataclasses.replace(expected, plan=compare.plan_samples(expected, trials,
                                                                       candidates=means))
    # The database averages in SQL, pandas in numpy: the same to rounding (1e-15).
    got, want = flat(last_json(result.output)), flat(json.loads(json.dumps(expected.to_json())))
    assert got.keys() == want.keys()
    for path, value in want.items():
        assert got[path] == (pytest.approx(value, rel=1e-12, abs=1e-12)
                             if isinstance(value, float) else value), path


def flat(value: Any, path: str = "") -> dict[str, Any]:
    """A JSON value as {path: scalar}."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in flat(item, f"{path}/{key}").items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in flat(item, f"{path}[{i}]").items()}
    return {path: value}
