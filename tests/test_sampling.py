"""Sampled design spaces (docs/CONVENTIONS.md, "Sampled design spaces"): what a draw promises.

n distinct candidates, the same for a seed and others for another, inside the band,
per-stage draws with the distribution the docs state (chi-square tests against
probabilities computed here, not by the sampler), shared fields equal across stages,
non-decreasing fields in order, balanced strata, and exit 2 with the count when a
space is too small.
"""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from explorer.sampling import sample_space
from explorer.space import enumerate_spec
from explorer.spec import parse_spec

REPO = Path(__file__).resolve().parents[1]

BASE = """\
name: t
model: {depths: [1, 1, 1], widths: [64, 128, 256], stem_width: 16, bottleneck_width: 16}
data: {dataset: cifar10, resolution: 16}
"""


def spec_text(sample: str, constraints: str = "", base: str = BASE) -> str:
    body = "\n".join("      " + line for line in sample.strip().splitlines())
    return base + "spaces:\n  s:\n    sample:\n" + body + "\n" + constraints


BANDED = spec_text("""\
n: 40
seed: 3
stages:
  depths: {low: 1, high: 3}
  widths: {low: 32, high: 256, step: 16}
  cardinality: [1, 2, 4]
  bottleneck_width: {low: 2, high: 32, log: true}
shared: [cardinality]
non_decreasing: [widths]
stratify: {by: flops, bins: 4}
""", "constraints:\n  flops: [5.0e6, 40.0e6]\n  params: [null, 1.0e6]\n")

# A space so large that n = 3000 draws almost never repeat: the kept candidates are the draws.
WIDE = """\
n: 3000
seed: 11
stages:
  depths: {low: 1, high: 10}
  widths: {low: 16, high: 1024, step: 16}
  cardinality: [1, 2, 4, 8]
  bottleneck_width: {low: 1, high: 64, log: true}
shared: [cardinality]
"""


@pytest.fixture(scope="module")
def wide():
    return sample_space(parse_spec(spec_text(WIDE)), "s")


def per_stage(drawn, field: str, stage: int) -> np.ndarray:
    return np.array([getattr(a, field)[stage] for a in drawn.archs])


def chisquare_p(values: np.ndarray, support: list[int], probabilities: list[float]) -> float:
    observed = np.array([np.sum(values == v) for v in support])
    assert observed.sum() == len(values)  # nothing drawn outside the support
    expected = len(values) * np.array(probabilities)
    return float(stats.chisquare(observed, expected * observed.sum() / expected.sum()).pvalue)


def test_n_distinct_candidates_inside_the_band() -> None:
    spec = parse_spec(BANDED)
    result = enumerate_spec(spec)
    assert len(result.candidates) == 40
    assert len({c.key for c in result.candidates}) == 40
    assert len(set(c.arch for c in result.candidates)) == 40
    for c in result.candidates:
        assert 5.0e6 <= c.complexity.flops <= 40.0e6
        assert c.complexity.params <= 1.0e6
        assert all(1 <= n <= 3 for n in c.arch.depths)
        assert all(w % 16 == 0 and 32 <= w <= 256 for w in c.arch.widths)


def test_the_complexity_is_the_formulas() -> None:
    from explorer.complexity import count

    spec = parse_spec(BANDED)
    drawn = sample_space(spec, "s")
    for arch, cost in zip(drawn.archs, drawn.complexities, strict=True):
        assert count(arch, 16, 10) == cost


def test_same_seed_same_candidates_in_order_other_seed_others() -> None:
    first = [c.key for c in enumerate_spec(parse_spec(BANDED)).candidates]
    again = [c.key for c in enumerate_spec(parse_spec(BANDED)).candidates]
    other = [c.key for c in enumerate_spec(parse_spec(BANDED.replace("seed: 3", "seed: 4")))
             .candidates]
    assert first == again
    assert len(set(first) & set(other)) < 5


def test_a_smaller_n_is_a_prefix_without_strata() -> None:
    text = spec_text(WIDE)
    big = [a.canonical() for a in sample_space(parse_spec(text), "s").archs]
    small = [a.canonical() for a in
             sample_space(parse_spec(text.replace("n: 3000", "n: 25")), "s").archs]
    assert small == big[:25]


def test_report_counts_every_draw() -> None:
    result = enumerate_spec(parse_spec(BANDED))
    (report,) = result.samples
    assert report.space == "s" and report.n == 40
    assert report.draws == 40 + sum(report.rejected.values())
    assert report.acceptance == pytest.approx(40 / report.draws)
    assert report.rejected["out of order"] > 0 and report.rejected["outside the constraints"] > 0


def test_uniform_range_draws_per_stage(wide) -> None:
    depths = per_stage(wide, "depths", 1)
    assert chisquare_p(depths, list(range(1, 11)), [0.1] * 10) > 0.01
    widths = per_stage(wide, "widths", 2)
    support = list(range(16, 1025, 16))
    assert chisquare_p(widths, support, [1 / len(support)] * len(support)) > 0.01


def test_log_uniform_draws(wide) -> None:
    """P(v) = log((v + 1) / v) / log(65): the continuous log-uniform on [1, 65) rounded down."""
    ds = np.concatenate([per_stage(wide, "bottleneck_widths", s) for s in range(3)])
    support = list(range(1, 65))
    log_uniform = [math.log((v + 1) / v) / math.log(65) for v in support]
    assert chisquare_p(ds, support, log_uniform) > 0.01
    # The test has power: the same draws are far from uniform.
    assert chisquare_p(ds, support, [1 / 64] * 64) < 1e-6
    assert np.median(ds) < 12  # log-uniform's median is sqrt(65) ≈ 8, uniform's 32


def test_shared_field_is_drawn_once_per_candidate_and_uniform_over_its_list(wide) -> None:
    for arch in wide.archs:
        assert len(set(arch.cardinalities)) == 1
    assert len({a.bottleneck_widths for a in wide.archs}) > 100  # unshared fields do vary
    firsts = per_stage(wide, "cardinalities", 0)
    assert chisquare_p(firsts, [1, 2, 4, 8], [0.25] * 4) > 0.01


def test_non_decreasing_holds_and_is_uniform_over_ordered_sequences() -> None:
    """Rejection keeps the uniform distribution over non-decreasing sequences; its
    first-stage marginal is counted here by listing every such sequence."""
    widths = [32, 64, 96, 128, 160, 192]
    text = spec_text(WIDE.replace("widths: {low: 16, high: 1024, step: 16}",
                                  f"widths: {widths}") + "non_decreasing: [widths]\n")
    drawn = sample_space(parse_spec(text), "s")
    for arch in drawn.archs:
        assert list(arch.widths) == sorted(arch.widths)
    ordered = list(itertools.combinations_with_replacement(widths, 3))
    firsts = Counter(seq[0] for seq in ordered)
    p = chisquare_p(per_stage(drawn, "widths", 0), widths,
                    [firsts[w] / len(ordered) for w in widths])
    assert p > 0.01
    # Sorting independent draws instead would give the minimum of three uniforms.
    minimum = [((6 - i) ** 3 - (5 - i) ** 3) / 216 for i in range(6)]
    assert chisquare_p(per_stage(drawn, "widths", 0), widths, minimum) < 1e-3


def test_strata_are_balanced() -> None:
    spec = parse_spec(BANDED)
    flops = [c.complexity.flops for c in enumerate_spec(spec).candidates]
    counts, _ = np.histogram(flops, bins=np.linspace(5.0e6, 40.0e6, 5))
    assert list(counts) == [10, 10, 10, 10]


def test_strata_remainder_goes_to_the_lowest_bins() -> None:
    spec = parse_spec(BANDED.replace("n: 40", "n: 42"))
    flops = [c.complexity.flops for c in enumerate_spec(spec).candidates]
    counts, _ = np.histogram(flops, bins=np.linspace(5.0e6, 40.0e6, 5))
    assert list(counts) == [11, 11, 10, 10]


def test_rows_carry_per_stage_lists() -> None:
    result = enumerate_spec(parse_spec(BANDED))
    row = result.candidates[0].row()
    arch = result.candidates[0].arch
    assert row["cardinalities"] == list(arch.cardinalities)
    assert row["bottleneck_widths"] == list(arch.bottleneck_widths)
    assert row["depths"] == list(arch.depths) and row["widths"] == list(arch.widths)
    assert row["group_widths"] == [c * d for c, d in zip(arch.cardinalities,
                                                          arch.bottleneck_widths, strict=True)]


def test_undrawn_fields_keep_the_base_models_per_stage_values() -> None:
    text = spec_text("n: 2\nstages:\n  cardinality: [1, 2]\nshared: [cardinality]\n")
    archs = sample_space(parse_spec(text), "s").archs
    assert {a.cardinalities for a in archs} == {(1, 1, 1), (2, 2, 2)}
    for a in archs:
        assert (a.depths, a.widths, a.bottleneck_widths) == ((1, 1, 1), (64, 128, 256),
                                                             (16, 32, 64))


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "explorer.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_cli_prints_the_draws_and_writes_list_columns(tmp_path: Path) -> None:
    path, out = tmp_path / "s.yaml", tmp_path / "c.csv"
    path.write_text(BANDED)
    result = run_cli("enumerate", str(path), "--output", str(out))
    assert result.returncode == 0, result.stderr
    assert "s: sampled 40 candidates in " in result.stdout and "acceptance" in result.stdout
    frame = pd.read_csv(out)
    assert len(frame) == 40
    assert all(c.startswith("[") and len(c.split(",")) == 3 for c in frame["cardinalities"])
    assert all(len(d.split(",")) == 3 for d in frame["bottleneck_widths"])


def test_cli_space_too_small_exits_2_with_the_count(tmp_path: Path) -> None:
    path, out = tmp_path / "s.yaml", tmp_path / "c.csv"
    path.write_text(spec_text("n: 5\nstages:\n  cardinality: [1, 2]\nshared: [cardinality]\n"))
    result = run_cli("enumerate", str(path), "--output", str(out))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "spaces.s.sample.n: the space yielded 2 distinct candidates" in result.stderr
    assert "fewer than n = 5" in result.stderr
    assert not out.exists()


def test_a_space_without_sample_dumps_as_before_so_recorded_hashes_hold() -> None:
    spec = parse_spec(BASE + "spaces:\n  c:\n    axes:\n      cardinality: [1, 2]\n")
    assert set(spec.model_dump(mode="json")["spaces"]["c"]) == {"axes", "solve"}


def test_a_sampled_spec_survives_its_dump() -> None:
    from explorer.spec import Spec

    spec = parse_spec(BANDED)
    again = Spec.model_validate(spec.model_dump(mode="json", by_alias=True))
    assert again == spec and again.hash == spec.hash
    assert sample_space(again, "s").archs == sample_space(spec, "s").archs


def test_run_refuses_a_space_too_small_with_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    text = spec_text("n: 3\nstages:\n  cardinality: [1, 2]\nshared: [cardinality]\n")
    path.write_text(text.replace("dataset: cifar10", "dataset: synthetic"))  # nothing to fetch
    result = run_cli("run", str(path), "--runs-dir", str(tmp_path / "runs"), "--dry-run")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "yielded 2 distinct candidates" in result.stderr and "Traceback" not in result.stderr


def test_the_stream_gives_the_per_point_enumerations_sampled_candidates() -> None:
    from explorer.space import CandidateStream, enumerate_per_point

    spec = parse_spec(BANDED)
    reference = enumerate_per_point(spec)
    stream = CandidateStream(spec)
    assert stream.sizes == {"s": 40}
    rows = [row for batch in stream for row in batch.rows()]
    assert rows == [c.row() for c in reference.candidates]
    assert stream.samples == list(reference.samples)
    assert enumerate_spec(spec) == reference


def test_the_terminal_table_shows_each_stages_c_and_d_and_the_draw_count() -> None:
    """A sampled space draws C and d per stage: the table shows the lists, not stage 1's."""
    import os
    import tempfile

    from explorer.space import enumerate_per_point

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.yaml"
        path.write_text(BANDED.replace("      shared: [cardinality]\n", ""))  # C per stage
        env = {**os.environ, "COLUMNS": "250"}
        result = subprocess.run([sys.executable, "-m", "explorer.cli", "enumerate", str(path),
                                 "--limit", "40"], cwd=REPO, capture_output=True, text=True,
                                timeout=300, env=env)
        expected = enumerate_per_point(parse_spec(path.read_text())).candidates
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "t: 40 candidates to draw (s n=40)"
    assert "C per stage" in result.stdout and "d per stage" in result.stdout
    varied = 0
    for c in expected:
        (line,) = [x for x in lines if c.key in x]
        cells = [cell.strip() for cell in line.split("│")]
        listed = [cell for cell in cells if cell.startswith("[")]
        as_text = [",".join(map(str, v)).join("[]") for v in
                   (c.arch.depths, c.arch.widths, c.arch.cardinalities,
                    c.arch.bottleneck_widths, c.arch.group_widths)]
        assert listed == as_text, line
        varied += len(set(c.arch.cardinalities)) > 1
    assert varied > 0  # else the lists and stage 1's values could not be told apart


@pytest.mark.parametrize("command", [["train", "--key", "0"], ["cost", "--device", "cpu"]])
def test_train_and_cost_refuse_a_space_too_small_in_one_line(tmp_path: Path,
                                                             command: list[str]) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(spec_text("n: 5\nstages:\n  cardinality: [1, 2]\nshared: [cardinality]\n")
                    .replace("dataset: cifar10", "dataset: synthetic"))
    result = run_cli(command[0], str(path), *command[1:])
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.strip()]
    assert line.startswith(f"error: {path}: ") and "yielded 2 distinct candidates" in line


def test_run_prints_each_sampled_spaces_draws_in_its_plan(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(BANDED.replace("dataset: cifar10", "dataset: synthetic"))  # nothing to fetch
    result = run_cli("run", str(path), "--runs-dir", str(tmp_path / "runs"), "--dry-run")
    assert result.returncode == 0, result.stdout + result.stderr
    report = enumerate_spec(parse_spec(BANDED)).samples[0]
    assert report.draws > report.n  # the band and the order reject some: a rate below 100%
    assert f"  {report.summary()}" in result.stdout.splitlines()


# --- The AnyNet parametrisation: b and g per stage -------------------------------------------

ANYNET = """\
name: t
model: {template: anynet, stem_width: 32, depths: [1, 1, 1, 1], widths: [32, 64, 128, 256],
        bottleneck_width: 8}
data: {dataset: imagenet, resolution: 64}
"""


BG = spec_text("""\
n: 400
seed: 5
stages:
  depths: {low: 1, high: 4}
  widths: {low: 8, high: 1024, step: 8}
  bottleneck_ratio: [1, 2, 4]
  group_width: [1, 2, 4, 8, 16, 32]
""", base=ANYNET)


def longhand_compatible(w: int, b: int, g: int) -> tuple[int, int, int]:
    """(w, C, d) by pycls's rule in exact integers (b a power of two): inner = w // b (at
    least 1), g cut to it, inner rounded half to even to a multiple of g (at least g)."""
    inner = max(1, w // b)
    g = min(g, inner)
    quotient, rest = divmod(inner, g)
    if 2 * rest > g or (2 * rest == g and quotient % 2 == 1):
        quotient += 1
    inner = max(g, quotient * g)
    return inner * b, inner // g, g


def test_b_and_g_draws_are_the_documented_draws_made_compatible() -> None:
    """The first candidates are the first draws, redrawn here from the same generator as
    SPEC.md states (a batch of 4,096 per field, in the order depths, widths, cardinality,
    bottleneck_width, bottleneck_ratio, group_width; undrawn fields draw nothing), then made
    compatible by pycls's rule, stage by stage."""
    drawn = sample_space(parse_spec(BG), "s")
    rng = np.random.default_rng(5)
    depths = 1 + rng.integers(0, 4, (4096, 4))
    widths = 8 + 8 * rng.integers(0, 128, (4096, 4))
    b = np.array([1, 2, 4])[rng.integers(0, 3, (4096, 4))]
    g = np.array([1, 2, 4, 8, 16, 32])[rng.integers(0, 6, (4096, 4))]
    expected = []
    for row in range(4096):
        stages = [longhand_compatible(int(widths[row, s]), int(b[row, s]), int(g[row, s]))
                  for s in range(4)]
        network = (tuple(int(n) for n in depths[row]), tuple(stages))
        if network not in expected:
            expected.append(network)
    found = [(a.depths, tuple(zip(a.widths, a.cardinalities, a.bottleneck_widths, strict=True)))
             for a in drawn.archs]
    assert found == expected[:400]


def test_b_and_g_networks_are_compatible_and_counted_exactly() -> None:
    from explorer.complexity import count

    drawn = sample_space(parse_spec(BG), "s")
    ratios = set()
    for arch, cost in zip(drawn.archs, drawn.complexities, strict=True):
        assert count(arch, 64, 1000) == cost  # count_stages on columns = count per record
        for s in arch.stages:
            inner = s.cardinality * s.bottleneck_width
            assert s.width % inner == 0
            ratio = s.width // inner  # b = w / (C·d)
            ratios.add(ratio)
            assert s.bottleneck_width in (1, 2, 4, 8, 16, 32) or s.cardinality == 1  # g, or cut
            assert s.stride == 2
    assert ratios == {1, 2, 4}


def test_shared_b_and_g_are_one_per_network() -> None:
    text = BG.replace("{low: 8, high: 1024", "{low: 256, high: 1024").replace(
        "  group_width: [1, 2, 4, 8, 16, 32]\n",
        "  group_width: [1, 2, 4, 8, 16, 32]\n      shared: [bottleneck_ratio, group_width]\n")
    drawn = sample_space(parse_spec(text), "s")
    gs, bs = Counter(), Counter()
    for arch in drawn.archs:  # inner widths >= 64 >= g: nothing is cut
        ratios = {s.width // (s.cardinality * s.bottleneck_width) for s in arch.stages}
        assert len(ratios) == 1 and len(set(arch.bottleneck_widths)) == 1
        bs.update(ratios)
        gs[arch.bottleneck_widths[0]] += 1
    assert set(bs) == {1, 2, 4} and set(gs) == {1, 2, 4, 8, 16, 32}


def test_non_decreasing_widths_and_depths_hold_in_the_network() -> None:
    text = BG.replace("  group_width: [1, 2, 4, 8, 16, 32]\n",
                      "  group_width: [1, 2, 4, 8, 16, 32]\n      shared: [bottleneck_ratio]\n"
                      "      non_decreasing: [widths, depths]\n").replace("n: 400", "n: 60")
    drawn = sample_space(parse_spec(text), "s")
    assert len(drawn.archs) == 60 and drawn.report.rejected["out of order"] > 0
    for arch in drawn.archs:
        assert list(arch.widths) == sorted(arch.widths)
        assert list(arch.depths) == sorted(arch.depths)
    assert len({a.depths for a in drawn.archs}) > 10


def test_b_with_cardinality_groups_the_inner_width_into_c() -> None:
    text = BG.replace("  group_width: [1, 2, 4, 8, 16, 32]\n", "  cardinality: [1, 2, 4, 8]\n")
    drawn = sample_space(parse_spec(text), "s")
    for arch in drawn.archs:
        for s in arch.stages:
            inner = s.cardinality * s.bottleneck_width
            assert s.width % inner == 0 and s.width // inner in (1, 2, 4)
            assert s.cardinality in (1, 2, 4, 8) or s.bottleneck_width == 1  # C, or cut
