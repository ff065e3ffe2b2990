"""`explorer compare --binning linear --range LO HI` (NDS's own weights) and
`explorer compare --equivalence D`, through the CLI on a store written by the Writer.

NDS's weights are checked against a longhand implementation of its compute_norm_ws
(notebooks/complexity.ipynb of facebookresearch/nds) written here: keep the models
strictly inside (LO, HI), cut the range into equal linear bins, give each model
1 / (models in its bin) / bins.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fixtures_store import write_population
from typer.testing import CliRunner

from explorer import stats
from explorer.cli import app as cli_app
from explorer.space import Candidate

runner = CliRunner()

SPEC = """\
name: nds
model: {template: cifar, depths: [1, 1, 1], stem_width: 16, widths: [64, 128, 256],
        cardinality: 1, bottleneck_width: 16}
spaces:
  resnet:
    sample:
      n: 80
      seed: 0
      stages:
        depths: {low: 1, high: 2}
        widths: {low: 32, high: 256, step: 32}
        cardinality: [1]
        bottleneck_width: {low: 8, high: 64, step: 8}
      non_decreasing: [widths]
  resnext:
    sample:
      n: 80
      seed: 1
      stages:
        depths: {low: 1, high: 2}
        widths: {low: 32, high: 256, step: 32}
        cardinality: [2, 4, 8]
        bottleneck_width: {low: 1, high: 16, log: true}
      shared: [cardinality]
      non_decreasing: [widths]
constraints: {flops: [1.5e6, 4.5e6]}
data: {dataset: cifar10, resolution: 16}
train: {epochs: 1, seeds: [0]}
"""
LO, HI = 1.6e6, 4.4e6


def error_of(candidate: Candidate, seed: int) -> float:
    """Lower with flops, a little lower for ResNeXts; a deterministic wobble per network."""
    arch = candidate.arch
    wobble = (int(candidate.key[:8], 16) % 1000) / 1000.0
    return (30.0 - 3.0 * np.log(candidate.complexity.flops / 1e6)
            - 0.4 * (arch.stages[0].cardinality > 1) + 2.0 * wobble)


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('nds') / 'explorer.db'}"
    write_population(url, SPEC, error_of)
    return url


def compare_json(db: str, *args: str) -> dict[str, Any]:
    result = runner.invoke(cli_app, ["compare", "nds", "--store", db, "--json", *args])
    assert result.exit_code == 0, result.output
    value = json.loads(result.stdout.strip().splitlines()[-1])
    assert isinstance(value, dict)
    return value


def exported(db: str, tmp_path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(errors, flops) per space, from `explorer export`."""
    import pandas as pd

    path = tmp_path / "t.csv"
    result = runner.invoke(cli_app, ["export", "nds", "--store", db, "-o", str(path)])
    assert result.exit_code == 0, result.output
    trials = pd.read_csv(path)
    return {s: (p["test_error"].to_numpy(float), p["flops"].to_numpy(float))
            for s, p in trials.groupby("space")}


def longhand_norm_ws(flops: np.ndarray, bins: int, low: float, high: float) -> np.ndarray:
    """NDS's compute_norm_ws written out: the models strictly inside (low, high) only."""
    width = (high - low) / bins
    counts = [0] * bins
    which = []
    for f in flops:
        if not low < f < high:
            which.append(None)
            continue
        k = min(int((f - low) / width), bins - 1)
        which.append(k)
        counts[k] += 1
    assert all(counts), "the test's range must leave no bin empty"
    return np.array([0.0 if k is None else 1.0 / counts[k] / bins for k in which])


def longhand_ks(a: np.ndarray, wa: np.ndarray, b: np.ndarray, wb: np.ndarray) -> float:
    return max(abs(wa[a <= x].sum() - wb[b <= x].sum()) for x in np.concatenate([a, b]))


def test_linear_weights_are_nds_compute_norm_ws(db: str, tmp_path: Path) -> None:
    out = compare_json(db, "--binning", "linear", "--range", str(LO), str(HI), "--bins", "4")
    assert out["binning"] == "linear" and out["range"] == [LO, HI]
    data = exported(db, tmp_path)
    weights = {s: longhand_norm_ws(f, 4, LO, HI) for s, (_, f) in data.items()}
    for s, w in weights.items():
        assert w.sum() == pytest.approx(1.0)  # NDS asserts it: every bin holds a model
        assert (w == 0).any()  # models outside the range are left out
        errors = data[s][0]
        assert out["spaces"][s]["weighted_mean"] == pytest.approx(np.sum(w * errors))
        assert out["spaces"][s]["n_effective"] == pytest.approx(w.sum() ** 2 / (w ** 2).sum())
    pair = out["pairs"][0]
    assert pair["ks_statistic"] == pytest.approx(longhand_ks(
        data["resnet"][0], weights["resnet"], data["resnext"][0], weights["resnext"]))
    # The library's weights, model by model, on the exported flops.
    for s, (_, f) in data.items():
        assert stats.linear_bin_weights(f, LO, HI, 4) == pytest.approx(weights[s])


def test_linear_weights_differ_from_the_default(db: str) -> None:
    default = compare_json(db, "--bins", "4")
    linear = compare_json(db, "--binning", "linear", "--range", str(LO), str(HI), "--bins", "4")
    assert default["binning"] == "log"
    assert (default["spaces"]["resnet"]["weighted_mean"]
            != pytest.approx(linear["spaces"]["resnet"]["weighted_mean"]))


def test_an_empty_linear_bin_is_refused_in_one_line(db: str) -> None:
    # 200 bins of the band: some hold no model.
    result = runner.invoke(cli_app, ["compare", "nds", "--store", db, "--binning", "linear",
                                     "--range", str(LO), str(HI), "--bins", "200"])
    assert result.exit_code == 2
    assert "holds no model" in result.stderr and "widen --range" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(("args", "message"), [
    (["--binning", "linear"], "--binning linear needs --range LO HI"),
    (["--binning", "linear", "--range", "5", "1"], "--binning linear needs --range LO HI"),
    (["--range", "1", "5"], "add --binning linear"),
    (["--binning", "cubic"], "--binning 'cubic': use log or linear"),
    (["--binning", "linear", "--range", "1", "5", "--normalize", "none"],
     "use --normalize params or flops"),
    (["--equivalence", "0"], "--equivalence 0: a KS distance margin is between 0 and 1"),
])
def test_bad_options_are_one_line_exit_2(db: str, args: list[str], message: str) -> None:
    result = runner.invoke(cli_app, ["compare", "nds", "--store", db, *args])
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# --- equivalence through the CLI ------------------------------------------------------------


def test_equivalence_sentence_beside_the_ks_test(db: str) -> None:
    out = compare_json(db, "--equivalence", "0.2", "--normalize", "none")
    eq = out["pairs"][0]["equivalence"]
    assert out["equivalence_margin"] == 0.2
    assert eq["finding"] in {"better", "worse", "equivalent", "undecided"}
    assert eq["upper_bound"] >= out["pairs"][0]["ks_statistic"] * 0.5
    if eq["finding"] == "undecided":
        assert eq["needed"] >= stats.equivalence_samples_needed(0.2)
        assert "not enough models to say" in eq["sentence"]
    human = runner.invoke(cli_app, ["compare", "nds", "--store", db, "--equivalence", "0.2",
                                    "--normalize", "none"])
    assert human.exit_code == 0, human.output
    assert f"equivalence: {eq['sentence']}" in " ".join(human.stdout.split())


def test_a_far_margin_is_equivalent_and_a_tiny_one_needs_more_models(db: str) -> None:
    # Unnormalised, the two spaces' errors do not differ significantly (the sampled flops
    # spread, not C, drives them): the margin alone decides the sentence.
    far = compare_json(db, "--equivalence", "0.99", "--normalize", "none")["pairs"][0]
    assert far["p_value"] >= 0.05
    assert far["equivalence"]["finding"] == "equivalent"
    assert far["equivalence"]["upper_bound"] < 0.99
    tiny = compare_json(db, "--equivalence", "0.01", "--normalize", "none")["pairs"][0]
    assert tiny["equivalence"]["finding"] == "undecided"
    assert tiny["equivalence"]["upper_bound"] >= 0.01
    assert tiny["equivalence"]["needed"] == stats.equivalence_samples_needed(0.01)
    # NDS's weights expose the ResNeXts' edge at equal flops: a significant difference.
    linear = compare_json(db, "--equivalence", "0.3", "--binning", "linear", "--range",
                          str(LO), str(HI), "--bins", "4")["pairs"][0]
    assert linear["p_value"] < 0.05
    assert linear["equivalence"]["finding"] == "worse"  # resnet against resnext
