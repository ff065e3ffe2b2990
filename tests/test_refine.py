"""`explorer refine`: good regions by the RegNet paper's bootstrap, constraints read on the
drawn models, and the child spec, through the CLI on a synthetic population.

The population is a sampled AnyNet-like space written through the store's Writer
(tests/fixtures_store.write_population), every candidate finished with a planted
error: lowest at a stage-3 width of 192 (a planted good region), and 2 points worse
for any network whose widths decrease (a planted non-decreasing-width effect), plus
a deterministic wobble per network. No training.

The bootstrap is checked against a longhand implementation written here on the same
seeded draws, from `explorer export`'s rows.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from fixtures_store import write_population
from typer.testing import CliRunner

from explorer.cli import app as cli_app
from explorer.space import Candidate
from explorer.spec import SampleStages

runner = CliRunner()
DRAWS = 2000

SPEC = """\
name: anynet
model: {template: cifar, depths: [1, 1, 1], stem_width: 16, widths: [64, 128, 256],
        cardinality: 1, bottleneck_width: 16}
spaces:
  anynet:
    sample:
      n: 400
      seed: 0
      stages:
        depths: {low: 1, high: 3}
        widths: {low: 32, high: 256, step: 32}
        cardinality: [1, 2, 4]
        bottleneck_width: [4, 8, 16]
  listed:
    axes: {cardinality: [1, 2]}
data: {dataset: synthetic, num_classes: 10, resolution: 16}
train: {epochs: 1, seeds: [0]}
"""


def planted_error(candidate: Candidate, seed: int) -> float:
    widths = candidate.arch.widths
    wobble = (int(candidate.key[:8], 16) % 1000) / 1000.0
    decreasing = any(b < a for a, b in itertools.pairwise(widths))
    return 5.0 + 1.5 * abs(widths[2] - 192) / 32 + 2.0 * decreasing + 0.6 * wobble


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('refine') / 'explorer.db'}"
    write_population(url, SPEC, planted_error)
    return url


def invoke(*args: str) -> Any:
    return runner.invoke(cli_app, list(args))


def refine_json(db: str, *args: str) -> dict[str, Any]:
    result = invoke("refine", "anynet", "--space", "anynet", "--store", db, "--json", *args)
    assert result.exit_code == 0, result.output
    value = json.loads(result.stdout.strip().splitlines()[-1])
    assert isinstance(value, dict)
    return value


@pytest.fixture(scope="module")
def models(db: str, tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """The space's models from `explorer export`, in the order of their content keys."""
    path = tmp_path_factory.mktemp("export") / "trials.csv"
    result = invoke("export", "anynet", "--store", db, "-o", str(path))
    assert result.exit_code == 0, result.output
    trials = pd.read_csv(path)
    trials = trials[trials["space"] == "anynet"].sort_values("key").reset_index(drop=True)
    for column in ("depths", "widths", "cardinalities", "bottleneck_widths"):
        trials[column] = trials[column].map(json.loads)
    return trials


def longhand_parameters(models: pd.DataFrame) -> dict[str, list[list[float]]]:
    """Per parameter, each model's per-stage values: b = w/(C·d), g = d."""
    out: dict[str, list[list[float]]] = {p: [] for p in ("depth", "width", "C", "d", "b", "g")}
    for _, row in models.iterrows():
        out["depth"].append(list(row["depths"]))
        out["width"].append(list(row["widths"]))
        out["C"].append(list(row["cardinalities"]))
        out["d"].append(list(row["bottleneck_widths"]))
        out["b"].append([w / (c * d) for w, c, d in zip(row["widths"], row["cardinalities"],
                                                        row["bottleneck_widths"], strict=True)])
        out["g"].append(list(row["bottleneck_widths"]))
    return out


def longhand_point(values: list[float], level: float) -> float:
    """The smallest value whose EDF reaches `level`."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(level * len(ordered) - 1e-9) - 1)]


def test_bootstrap_matches_an_independent_implementation(db: str, models: pd.DataFrame) -> None:
    out = refine_json(db, "--seed", "7")
    errors = models["test_error"].to_list()
    n = len(errors)
    m = round(n / 4)
    # The same seeded draws: a quarter of the models, with replacement, per draw.
    picks = np.random.default_rng(7).integers(0, n, (DRAWS, m))
    best = []
    for row in picks:
        winner = row[0]
        for i in row[1:]:
            if errors[i] < errors[winner]:  # the first of equal errors stays
                winner = i
        best.append(int(winner))
    table = longhand_parameters(models)
    expected = {}
    for name, rows in table.items():
        stages = list(zip(*rows, strict=True))
        if all(len(set(s)) == 1 for s in stages) and len({v for r in rows for v in r}) == 1:
            continue
        shared = all(len(set(r)) == 1 for r in rows)
        columns = [(None, stages[0])] if shared else [
            (s + 1, stages[s]) for s in range(len(stages)) if len(set(stages[s])) > 1]
        for stage, column in columns:
            values = [column[i] for i in best]
            expected[(name, stage)] = (longhand_point(values, 0.025),
                                       longhand_point(values, 0.5),
                                       longhand_point(values, 0.975))
    got = {(r["parameter"], r["stage"]): (r["low"], r["median"], r["high"])
           for r in out["good_regions"]}
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value), key
    assert out["bootstrap"] == {"draws": DRAWS, "seed": 7, "fraction": 0.25, "level": 0.95}


def test_planted_good_region_is_found(db: str) -> None:
    regions = {(r["parameter"], r["stage"]): r for r in refine_json(db)["good_regions"]}
    last = regions[("width", 3)]
    assert last["median"] == 192
    assert 160 <= last["low"] <= 192 <= last["high"] <= 224
    # Widths of the other stages, and every other parameter, carry no planted optimum: their
    # intervals stay wide (the best models only need widths not above 192).
    assert regions[("depth", 1)]["high"] - regions[("depth", 1)]["low"] >= 1
    assert regions[("width", 1)]["high"] <= 192


def test_planted_non_decreasing_widths_ranks_first(db: str, models: pd.DataFrame) -> None:
    out = refine_json(db)
    proposals = {p["name"]: p for p in out["proposals"]}
    nd = proposals["nd-widths"]
    nondecreasing = sum(all(b >= a for a, b in itertools.pairwise(w))
                        for w in models["widths"])
    assert (nd["kept"], nd["total"]) == (nondecreasing, len(models))
    assert nd["equivalence"]["finding"] == "better"
    assert nd["rank"] == 1
    assert nd["child_mean"] < nd["parent_mean"] - 1.0
    # No planted effect of depth order: never "better", never "worse"; within a wide enough
    # margin, equivalent.
    assert proposals["nd-depths"]["equivalence"]["finding"] in {"equivalent", "undecided"}
    wide = {p["name"]: p for p in refine_json(db, "--equivalence", "0.3")["proposals"]}
    assert wide["nd-depths"]["equivalence"]["finding"] == "equivalent"
    assert wide["nd-depths"]["equivalence"]["upper_bound"] < 0.3
    assert wide["nd-widths"]["rank"] == 1 and wide["nd-depths"]["rank"] == 2
    assert [p["rank"] for p in out["proposals"]] == list(range(1, len(out["proposals"]) + 1))


def test_human_output_lists_regions_and_ranked_proposals(db: str) -> None:
    result = invoke("refine", "anynet", "--space", "anynet", "--store", db)
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert "good regions of 400 models" in text
    assert "1. the child (nd-widths) is better than the parent" in text


def child_of(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def test_write_child_validates_and_samples_as_is(db: str, tmp_path: Path) -> None:
    """Widths and depths constraints: today's spec syntax, no other branch needed."""
    child = tmp_path / "child.yaml"
    out = refine_json(db, "--write", str(child))
    assert out["written"]["constraints"] == ["nd-widths"]  # the default: the best-ranked
    data = child_of(child)
    assert data["name"] == "anynet-refined"
    assert list(data["spaces"]) == ["anynet", "listed", "anynet.nd-widths"]
    parent = data["spaces"]["anynet"]["sample"]
    new = data["spaces"]["anynet.nd-widths"]["sample"]
    assert new["non_decreasing"] == ["widths"]
    assert new["seed"] == 1 and parent["seed"] == 0  # a fresh, independent sample
    same = ("seed", "non_decreasing")
    assert ({k: v for k, v in new.items() if k not in same}
            == {k: v for k, v in parent.items() if k not in same})
    assert data["train"] == {"epochs": 1, "seeds": [0]}
    assert invoke("validate", str(child)).exit_code == 0
    dry = invoke("run", str(child), "--runs-dir", str(tmp_path / "runs"), "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "anynet.nd-widths: sampled 400 candidates" in dry.stdout
    assert "out of order" in dry.stdout  # the constraint rejected draws
    # Two constraints at once, and a name of one's own.
    both = tmp_path / "both.yaml"
    out = refine_json(db, "--write", str(both), "--constraint", "nd-depths", "--constraint",
                      "nd-widths", "--name", "anynet-e")
    data = child_of(both)
    assert data["name"] == "anynet-e"
    assert data["spaces"]["anynet.nd-depths.nd-widths"]["sample"]["non_decreasing"] == [
        "depths", "widths"]
    assert invoke("validate", str(both)).exit_code == 0
    assert invoke("run", str(both), "--runs-dir", str(tmp_path / "runs2"),
                  "--dry-run").exit_code == 0


def test_write_shared_g_and_a_cut_today(db: str, tmp_path: Path) -> None:
    """Shared g is shared d in the C-and-d parametrisation; a cut narrows the drawn range."""
    child = tmp_path / "g.yaml"
    refine_json(db, "--write", str(child), "--constraint", "shared-g", "--constraint",
                "cut-widths")
    sample = child_of(child)["spaces"]["anynet.shared-g.cut-widths"]["sample"]
    assert sample["shared"] == ["bottleneck_width"]
    widths = sample["stages"]["widths"]
    assert widths["step"] == 32 and 32 <= widths["low"] <= widths["high"] <= 224
    assert invoke("validate", str(child)).exit_code == 0
    assert invoke("run", str(child), "--runs-dir", str(tmp_path / "runs"),
                  "--dry-run").exit_code == 0


@pytest.mark.skipif("bottleneck_ratio" not in SampleStages.model_fields,
                    reason="needs the regnet branch: sample.stages.bottleneck_ratio and "
                           "group_width (the AnyNet parametrisation) are not in this spec yet")
def test_write_shared_b_in_the_anynet_parametrisation(tmp_path: Path) -> None:
    spec = SPEC.replace("        cardinality: [1, 2, 4]\n        bottleneck_width: [4, 8, 16]\n",
                        "        bottleneck_ratio: [1, 2, 4]\n"
                        "        group_width: [1, 2, 4, 8, 16]\n")
    url = f"sqlite:///{tmp_path / 'b.db'}"
    write_population(url, spec, planted_error)
    child = tmp_path / "b.yaml"
    result = invoke("refine", "anynet", "--space", "anynet", "--store", url, "--write",
                    str(child), "--constraint", "shared-b", "--constraint", "shared-g")
    assert result.exit_code == 0, result.output
    sample = child_of(child)["spaces"]["anynet.shared-b.shared-g"]["sample"]
    assert sample["shared"] == ["bottleneck_ratio", "group_width"]
    assert invoke("validate", str(child)).exit_code == 0
    assert invoke("run", str(child), "--runs-dir", str(tmp_path / "runs"),
                  "--dry-run").exit_code == 0


@pytest.mark.parametrize(("args", "message"), [
    (["--space", "nope"], "--space 'nope' is not a space of 'anynet'"),
    (["--space", "listed"], "--space 'listed' is not sampled"),
    (["--space", "anynet", "--draws", "100"], "--draws 100: the bootstrap needs at least 2000"),
    (["--space", "anynet", "--equivalence", "2"], "--equivalence 2: a KS distance margin"),
    (["--space", "anynet", "--write", "x.yaml", "--constraint", "shared-x"],
     "--constraint 'shared-x' is not a proposed constraint"),
    (["--space", "anynet", "--write", "x.txt"], "x.txt"),
    (["--space", "anynet", "--write", "no/such/x.yaml"], "the folder no/such does not exist"),
])
def test_errors_are_one_line_exit_2(db: str, args: list[str], message: str,
                                    tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke("refine", "anynet", "--store", db, *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.yaml").exists()  # nothing half-written


def test_shared_b_is_not_writable_for_a_c_and_d_space(db: str, models: pd.DataFrame) -> None:
    """In the C-and-d parametrisation b = w/(C·d) follows from three drawn fields: a spec
    cannot share it, and refine says so (the AnyNet parametrisation can)."""
    from explorer import refine
    from explorer.spec import parse_spec
    from explorer.store import Reader

    with Reader.open(db) as store:
        pop = refine.population(store.trials_frame(["anynet"]), "anynet")
    sample = parse_spec(SPEC).spaces["anynet"].sample
    assert sample is not None
    found = {c.name: c for c in refine.constraint_candidates(pop, sample, ())}
    shared_b = found["shared-b"]
    assert shared_b.writable is not None and "bottleneck_ratio" in shared_b.writable
    table = longhand_parameters(models)["b"]
    assert int(shared_b.mask.sum()) == sum(len(set(r)) == 1 for r in table)
    assert found["shared-g"].writable is None
    assert found["shared-g"].edit == ("shared", "bottleneck_width", None)
    # Fewer than two models share b here: too few to read, so it is listed as not read.
    out = refine_json(db)
    assert "shared-b" not in [p["name"] for p in out["proposals"]]
    assert any(n["name"] == "shared-b" for n in out["not_read"])


# --- the good regions drawn: the report and the dashboard --------------------------------------


def test_report_draws_the_good_regions(db: str, tmp_path: Path) -> None:
    import plotly.graph_objects as go

    from explorer import figures, refine
    from explorer.store import Reader

    output = tmp_path / "report.html"
    result = invoke("report", "anynet", "--store", db, "-o", str(output))
    assert result.exit_code == 0, result.output
    page = output.read_text(encoding="utf-8")
    assert 'id="section-good_regions"' in page and 'id="figure-good_regions-anynet"' in page
    assert "figure-good_regions-listed" not in page  # a grid space has no good regions
    out = refine_json(db)
    with Reader.open(db) as store:
        points, bands = refine.space_regions(store.trials_frame(["anynet"]), "anynet")
    assert bands[["low", "median", "high"]].to_numpy().tolist() == [
        [r["low"], r["median"], r["high"]] for r in out["good_regions"]]
    fig = figures.good_regions_figure(points, bands)
    go.Figure(fig.to_dict())  # every property valid
    models = [t for t in fig.data if t.meta["role"] == "models"]
    assert len(models) == len(out["good_regions"])
    assert all(len(t.x) == 400 for t in models)
    assert len(fig.layout.shapes) == 2 * len(models)  # the interval and the median


def test_dashboard_draws_the_good_regions(db: str) -> None:
    from test_dashboard_app import app, charts, ran

    at = app(db)
    at.session_state["view"] = "EDFs"
    ran(at)
    assert at.selectbox(key="regions_space").options == ["anynet"]
    drawn = charts(at)["good_regions"]
    roles = [t["meta"]["role"] for t in drawn["data"]]
    assert roles.count("models") == len(refine_json(db)["good_regions"])
