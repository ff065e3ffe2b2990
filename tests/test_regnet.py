"""The regnet family: pycls's RegNets, to the last parameter, flop and activation.

Golden numbers: pycls's own complexity counts of its RegNetX model zoo, from
dev/model_complexity.json of facebookresearch/pycls (commit 5719de6, 2023-08-26), the
source its MODEL_ZOO.md table is generated from (the table rounds them to 0.1 M / 0.1 B).
pycls counts the classifier's bias as one flop per class (linear_cx with bias=True);
explorer counts multiply-adds only, so explorer's flops are pycls's less 1,000.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections import Counter
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from explorer.arch import anynet_columns, anynet_stage, regnet_arch
from explorer.complexity import count
from explorer.space import enumerate_per_point, enumerate_spec
from explorer.spec import load_spec, parse_spec

REPO = Path(__file__).resolve().parents[1]
ZOO = REPO / "spaces" / "regnetx_zoo.yaml"
SAMPLED = REPO / "spaces" / "regnetx_sampled.yaml"

# name: (params, flops, acts) as pycls counts them (dev/model_complexity.json).
PYCLS_REGNETX = {
    "RegNetX-200MF": (2_684_792, 199_040_872, 2_164_056),
    "RegNetX-400MF": (5_157_512, 397_678_568, 3_143_272),
    "RegNetX-600MF": (6_196_040, 600_891_112, 3_975_096),
    "RegNetX-800MF": (7_259_656, 799_700_712, 5_148_744),
    "RegNetX-1.6GF": (9_190_136, 1_602_850_792, 7_933_512),
    "RegNetX-3.2GF": (15_296_552, 3_176_622_952, 11_367_432),
    "RegNetX-4.0GF": (22_118_248, 3_964_499_816, 12_201_608),
    "RegNetX-6.4GF": (26_209_256, 6_460_292_264, 16_369_744),
    "RegNetX-8.0GF": (39_572_648, 7_995_133_416, 14_059_688),
    "RegNetX-12GF": (46_106_056, 12_086_679_016, 21_366_568),
    "RegNetX-16GF": (54_278_536, 15_940_756_456, 25_515_496),
    "RegNetX-32GF": (107_811_560, 31_735_930_792, 36_302_160),
}
PYCLS_FC_BIAS_FLOPS = 1000  # one per class of ImageNet's 1,000


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_the_pycls_regnetx_zoo_through_explorer_enumerate(tmp_path: Path) -> None:
    out = tmp_path / "zoo.csv"
    done = subprocess.run([sys.executable, "-m", "explorer.cli", "enumerate", str(ZOO),
                           "-o", str(out)], cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(out).set_index("space")
    assert sorted(table.index) == sorted(PYCLS_REGNETX)
    for name, (params, flops, acts) in PYCLS_REGNETX.items():
        row = table.loc[name]
        explorer_counts = (row.params, row.flops + PYCLS_FC_BIAS_FLOPS, row.acts)
        assert explorer_counts == (params, flops, acts), name
        assert row.template == "anynet"


# The zoo's RegNet parameters (configs/dds_baselines/regnetx/*.yaml): DEPTH, W0, WA, WM.
ZOO_PARAMETERS = {
    "RegNetX-200MF": (13, 24, 36.44, 2.49), "RegNetX-400MF": (22, 24, 24.48, 2.54),
    "RegNetX-1.6GF": (18, 80, 34.01, 2.25), "RegNetX-32GF": (23, 320, 69.86, 2.0),
}


def _longhand_stages(depth: int, w_0: int, w_a: float, w_m: float) -> list[tuple[int, int]]:
    """The RegNet paper's eqs. 2-4 block by block with the math module, quantum 8:
    (width, blocks) per stage."""
    widths = []
    for j in range(depth):
        k = round(math.log((w_0 + w_a * j) / w_0) / math.log(w_m))
        widths.append(round(w_0 * w_m**k / 8) * 8)
    return sorted(Counter(widths).items())


@pytest.mark.parametrize("name", sorted(ZOO_PARAMETERS))
def test_regnet_stages_follow_the_papers_equations(name: str) -> None:
    depth, w_0, w_a, w_m = ZOO_PARAMETERS[name]
    arch = regnet_arch(template="anynet", stem_width=32, depth=depth, w_0=w_0, w_a=w_a,
                       w_m=w_m, group_width=8, bottleneck_ratio=1, quantum=8)
    assert list(zip(arch.widths, arch.depths, strict=True)) == _longhand_stages(
        depth, w_0, w_a, w_m)
    assert [s.stride for s in arch.stages] == [2] * len(arch.stages)


def _longhand_compatible(w: int, b: int, g: int) -> tuple[int, int, int]:
    """pycls's adjust_block_compatibility in exact arithmetic, for b a power of two (where
    its float steps are exact): inner = max(1, floor(w/b)), g cut to the inner width, the
    inner width rounded half to even to a multiple of g (at least g), w = inner·b."""
    inner = max(1, w // b)
    g = min(g, inner)
    inner = max(g, round(Fraction(inner, g)) * g)  # Fraction rounds half to even
    return inner * b, inner // g, g


def test_anynet_compatibility_is_pycls_rule() -> None:
    cases = [(w, b, g) for w in range(1, 130) for b in (1, 2, 4, 8) for g in (1, 3, 8, 24, 64)]
    for w, b, g in cases:
        assert anynet_stage(w, b, g) == _longhand_compatible(w, b, g), (w, b, g)
    w, b, g = (np.array(x, dtype=np.int64) for x in zip(*cases, strict=True))
    columns = anynet_columns(w, b, g)
    assert [tuple(int(c[i]) for c in columns) for i in range(len(cases))] == [
        anynet_stage(*case) for case in cases]


REGNET = """\
name: t
model: {family: regnet, depth: 13, w_0: 24, w_a: 36.44, w_m: 2.49, group_width: 8}
data: {dataset: imagenet, resolution: 224}
"""


def test_a_regnet_spec_defaults_to_regnets_stem_and_strides() -> None:
    spec = parse_spec(REGNET + "spaces: {base: {}}\n")
    assert (spec.model.template, spec.model.stem_width, spec.model.bottleneck_ratio,
            spec.model.quantum) == ("anynet", 32, 1, 8)
    # a resnext spec's record (and hash) does not name the regnet fields
    resnext = parse_spec("name: t\nspaces: {base: {}}\n")
    assert not {"depth", "w_0", "quantum"} & set(resnext.record()["model"])


def test_w_0_solved_for_flops_is_the_closest_multiple_of_the_quantum() -> None:
    spec = parse_spec(REGNET + """\
spaces:
  solved:
    axes: {depth: [12, 13, 14, 16], group_width: [8, 16]}
    solve: {field: w_0, preserve: flops, low: 8, high: 160, tolerance: 0.5}
""")
    target = count(regnet_arch(template="anynet", stem_width=32, depth=13, w_0=24, w_a=36.44,
                               w_m=2.49, group_width=8, bottleneck_ratio=1, quantum=8),
                   224, 1000).flops
    result = enumerate_spec(spec)
    assert len(result.candidates) + len(result.dropped) == 8
    for candidate in result.candidates:
        depth = sum(candidate.arch.depths)
        g = max(candidate.arch.bottleneck_widths)  # stage 1 may cut g to its inner width
        flops = {w_0: count(regnet_arch(template="anynet", stem_width=32, depth=depth, w_0=w_0,
                                        w_a=36.44, w_m=2.49, group_width=g, bottleneck_ratio=1,
                                        quantum=8), 224, 1000).flops
                 for w_0 in range(8, 161, 8)}
        best = min(flops.values(), key=lambda f: abs(f - target))
        assert candidate.complexity.flops == best
    # the per-point reference gives the same
    reference = enumerate_per_point(spec)
    assert [c.key for c in reference.candidates] == [c.key for c in result.candidates]


def test_axes_over_regnet_fields_enumerate_like_the_reference() -> None:
    spec = parse_spec(REGNET + """\
spaces:
  grid:
    axes:
      depth: [4, 13, 30]
      w_a: [0.0, 8.5, 36.44]
      w_m: [1.5, 2.49]
      group_width: [1, 8, 64]
      bottleneck_ratio: [1, 2, 4]
""")
    stream, reference = enumerate_spec(spec), enumerate_per_point(spec)
    assert [c.key for c in stream.candidates] == [c.key for c in reference.candidates]
    assert [c.complexity for c in stream.candidates] == [c.complexity for c in reference.candidates]
    # w_a = 0 gives one stage, others several: the stages' count varies within a space
    assert len({len(c.arch.stages) for c in stream.candidates}) > 1
    for c in stream.candidates:
        assert all(s.width % (s.cardinality * s.bottleneck_width) == 0 for s in c.arch.stages)


def test_the_sampled_regnetx_space_keeps_its_promises() -> None:
    spec = load_spec(SAMPLED)
    sample = spec.spaces["regnetx"].sample
    assert sample is not None and sample.regnet is not None
    result = enumerate_spec(spec)
    low, high = spec.constraints.flops  # type: ignore[misc]
    assert len(result.candidates) == sample.n
    for c in result.candidates:
        assert low <= c.complexity.flops <= high
        assert len(c.arch.stages) == 4
        assert all(s.width % 8 == 0 and s.stride == 2 for s in c.arch.stages)
        assert count(c.arch, 224, 1000) == c.complexity
    again = enumerate_spec(spec)
    assert [c.key for c in again.candidates] == [c.key for c in result.candidates]


@pytest.mark.parametrize("name", ["RegNetX-200MF", "RegNetX-400MF"])
def test_a_zoo_model_built_has_pycls_params(name: str) -> None:
    torch = pytest.importorskip("torch")
    from explorer.models import build_model
    from explorer.models.measure import measure
    spec = load_spec(ZOO)
    candidate = next(c for c in enumerate_spec(spec, [name]).candidates)
    model = build_model(candidate.arch, 1000)
    assert sum(p.numel() for p in model.parameters()) == PYCLS_REGNETX[name][0]
    torch.set_num_threads(1)
    measured = measure(model, 64)  # fvcore at 64x64: the formula holds at any resolution
    formula = count(candidate.arch, 64, 1000)
    assert (measured.params, measured.flops, measured.acts) == (
        formula.params, formula.flops, formula.acts)


def test_stage_counts_on_columns_are_the_generated_stages() -> None:
    rng = np.random.default_rng(7)
    n = 3000
    depth, w_0 = rng.integers(1, 65, n), rng.integers(1, 33, n) * 8
    w_a, w_m = np.round(rng.uniform(0, 256, n), 2), np.round(rng.uniform(1.01, 3, n), 3)
    from explorer.arch import regnet_stage_counts, regnet_stages
    counts = regnet_stage_counts(depth, w_0, w_a, w_m, 8)
    assert counts.tolist() == [len(regnet_stages(int(d), int(w), float(a), float(m), 8)[0])
                               for d, w, a, m in zip(depth, w_0, w_a, w_m, strict=True)]


def test_specs_without_the_new_keys_record_as_before() -> None:
    # Hashes of stored experiments hold: a spec that names no regnet field, b, g or regnet
    # draw records none of them.
    record = load_spec(REPO / "spaces" / "cpu" / "cifar10_nds.yaml").record()
    assert not set(record["model"]) & {"depth", "w_0", "w_a", "w_m", "group_width", "quantum",
                                        "bottleneck_ratio"}
    for space in record["spaces"].values():
        assert not {"bottleneck_ratio", "group_width"} & set(space["sample"]["stages"])
        assert "regnet" not in space["sample"]
    axes = load_spec(REPO / "spaces" / "quickstart.yaml").record()["spaces"]["preserved"]["axes"]
    assert set(axes) == {"cardinality", "bottleneck_width", "stem_width", "depths", "widths",
                         "block"}


def test_a_regnet_space_streams_its_drops_counted_by_kind() -> None:
    from explorer.space import CandidateStream

    spec = parse_spec(REGNET + """\
spaces:
  solved:
    axes: {depth: [6, 12, 13, 14, 16], group_width: [8, 8, 16]}
    solve: {field: w_0, preserve: flops, low: 8, high: 160, tolerance: 0.08}
constraints:
  params: [null, 2.6e6]
""")
    reference = enumerate_per_point(spec)
    stream = CandidateStream(spec, chunk_points=4, keep_dropped=2)
    keys = [c.key for batch in stream for c in batch.candidates(stream.base.complexity)]
    assert keys == [c.key for c in reference.candidates]
    assert stream.dropped_count == len(reference.dropped) == 15 - len(keys)
    assert [d.reason for d in stream.dropped] == [d.reason for d in reference.dropped[:2]]
    assert set(stream.dropped_by_reason) == {
        "flops beyond the tolerance of ±8%", "params above the constraint's 2.6e+06",
        "same network as an earlier candidate"}
