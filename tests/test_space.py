"""Enumerating design spaces, checked against the paper and docs/CONVENTIONS.md.

Golden numbers come from the paper (Xie et al., CVPR 2017) or torchvision's
published counts (docs/CONVENTIONS.md), never from the code under test. Where a search is checked,
the check is a brute force over every integer value with `count()`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from explorer.arch import make_arch, resnet50, resnext29, resnext50_32x4d
from explorer.complexity import Complexity, bottleneck, count
from explorer.space import Candidate, Dropped, enumerate_spec, realise
from explorer.spec import Spec, load_spec, parse_spec

REPO = Path(__file__).resolve().parents[1]
SPACES = REPO / "spaces"

# The paper's Table 2: C -> d of the conv2 template at ~70k parameters per block.
TABLE2_D = {1: 64, 2: 40, 4: 24, 8: 14, 32: 4}
TABLE2_GROUP_WIDTH = {1: 64, 2: 80, 4: 96, 8: 112, 32: 128}


@pytest.fixture(scope="module")
def table2() -> Spec:
    return load_spec(SPACES / "resnext50_table2.yaml")


def by_cardinality(candidates: tuple[Candidate, ...]) -> dict[int, Candidate]:
    out = {c.arch.stages[0].cardinality: c for c in candidates}
    assert len(out) == len(candidates)
    return out


# --- torchvision's published counts and the paper's figures (docs/CONVENTIONS.md) --------


def imagenet_r50_acts_longhand(group_width_of: dict[int, int]) -> int:
    """The output elements of every convolution and of the head of torchvision's resnet50
    layout at 224x224, 1000 classes, written out layer by layer (not from count()): the
    7x7/2 stem's 64x112x112, then per block the 1x1's, the strided 3x3's and the 1x1
    expansion's outputs, plus the projection's in a stage's first block."""
    acts = 64 * 112 * 112
    size = 56  # after the 3x3/2 max-pool, which has no acts by convention
    for stage, (planes, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3),
                                                 strict=True)):
        width, out = group_width_of[planes], 4 * planes
        for block in range(blocks):
            after = size // 2 if stage > 0 and block == 0 else size
            acts += width * size * size + width * after * after + out * after * after
            acts += out * after * after if block == 0 else 0
            size = after
    return acts + 1000  # the linear head


# pycls reports 11.1M activations for ResNet-50; the longhand gives the exact figure.
RESNET50_ACTS = imagenet_r50_acts_longhand({64: 64, 128: 128, 256: 256, 512: 512})
RESNEXT50_ACTS = imagenet_r50_acts_longhand({64: 128, 128: 256, 256: 512, 512: 1024})


def test_resnet50_and_resnext50_match_the_reference_table() -> None:
    assert count(resnet50(), 224, 1000) == Complexity(
        params=25_557_032, flops=4_089_184_256, acts=RESNET50_ACTS)
    r50 = count(resnet50(), 224, 1000)
    x50 = count(resnext50_32x4d(), 224, 1000)
    assert x50.acts == RESNEXT50_ACTS
    assert (r50.params, r50.flops) == (25_557_032, 4_089_184_256)
    assert (x50.params, x50.flops) == (25_028_904, 4_230_479_872)
    # torchvision's bottleneck widths: int(planes * d / 64) * C, planes 64 * 2^s.
    assert resnext50_32x4d().group_widths == (128, 256, 512, 1024)
    assert resnet50().group_widths == (64, 128, 256, 512)
    assert resnet50().num_layers == 50


@pytest.mark.parametrize(("cardinality", "millions"), [(8, 34.4), (16, 68.1)])
def test_resnext29_params_match_the_papers_table7(cardinality: int, millions: float) -> None:
    """Table 7 gives ResNeXt-29 8x64d 34.4M and 16x64d 68.1M (to 0.1M; it seems to leave
    batch norm out, which is 0.06M and 0.10M here)."""
    params = count(resnext29(cardinality, 64), 32, 10).params
    assert abs(params / 1e6 - millions) < 0.1


def test_table2_solves_the_papers_d_and_group_widths(table2: Spec) -> None:
    result = enumerate_spec(table2, ["preserved"])
    assert result.dropped == ()
    cands = by_cardinality(result.candidates)
    assert set(cands) == set(TABLE2_D)
    for c, cand in cands.items():
        assert cand.arch.stages[0].bottleneck_width == TABLE2_D[c], c
        assert cand.arch.stages[0].group_width == TABLE2_GROUP_WIDTH[c], c
        assert cand.solved == "bottleneck_width"
        # Later stages double C·d with their width (torchvision's int(planes·d/64)·C).
        assert cand.arch.group_widths == tuple(
            int(planes * TABLE2_D[c] / 64) * c for planes in (64, 128, 256, 512))
        assert cand.arch.depths == (3, 4, 6, 3)
        assert abs(cand.params_deviation) <= 5.0
    # The ends of the trade are torchvision's two reference models.
    assert (cands[1].complexity.params, cands[1].complexity.flops) == (25_557_032, 4_089_184_256)
    assert (cands[32].complexity.params, cands[32].complexity.flops) == (
        25_028_904, 4_230_479_872)


def test_table2_conv2_blocks_keep_about_70k_params(table2: Spec) -> None:
    """The paper: C·(256·d + 3·3·d·d + d·256) ≈ 70k for every row of Table 2."""
    reference = 256 * 64 + 9 * 64 * 64 + 64 * 256
    assert reference == 69_632
    for c, cand in by_cardinality(enumerate_spec(table2, ["preserved"]).candidates).items():
        d = cand.arch.stages[0].bottleneck_width
        formula = c * (256 * d + 9 * d * d + d * 256)
        assert abs(formula - reference) / reference < 0.03, (c, d, formula)
        # The counted block (a non-first conv2 block: no projection) is the formula's weights
        # plus its three batch norms' affine parameters.
        (params, _, _), _ = bottleneck(56, 256, cand.arch.stages[0], 1, "grouped")
        assert params == formula + 2 * (c * d + c * d + 256)


def test_base_model_has_zero_deviation(table2: Spec) -> None:
    result = enumerate_spec(table2)
    assert result.base.params_deviation == 0 and result.base.flops_deviation == 0
    assert result.base.arch == resnet50()
    base_like = [c for c in result.candidates if c.key == result.base.key]
    assert {c.space for c in base_like} == {"preserved", "preserved-flops"}
    for c in base_like:
        assert c.params_deviation == 0.0 and c.flops_deviation == 0.0
        assert c.row()["params_deviation_pct"] == 0 and c.row()["flops_deviation_pct"] == 0


# --- the solver: the closest value, checked by brute force --------------------------------


def brute_force(spec: Spec, values: dict, field: str, preserve: str, low: int, high: int) -> int:
    """The value of `field` in [low, high] whose `preserve` is closest to the base model's
    (ties to the smaller value), trying every integer."""
    m = spec.model
    fields = {"depths": m.depths, "widths": m.widths, "stem_width": m.stem_width,
              "cardinality": m.cardinality, "bottleneck_width": m.bottleneck_width,
              "block": m.block, **values}
    base = make_arch(template=m.template, depths=m.depths, widths=m.widths,
                     stem_width=m.stem_width, cardinality=m.cardinality,
                     bottleneck_width=m.bottleneck_width, block=m.block)
    goal = getattr(count(base, spec.data.resolution, spec.num_classes), preserve)
    best, best_gap = None, None
    for x in range(low, high + 1):
        arch = make_arch(template=m.template, **{**fields, field: x})
        if 0 in arch.bottleneck_widths:
            continue
        gap = abs(getattr(count(arch, spec.data.resolution, spec.num_classes), preserve) - goal)
        if best_gap is None or gap < best_gap:
            best, best_gap = x, gap
    assert best is not None
    return best


@pytest.mark.parametrize("space", ["preserved", "preserved-flops"])
def test_solver_picks_the_closest_d_not_the_largest_under_budget(table2: Spec, space: str) -> None:
    rule = table2.spaces[space].solve
    assert rule is not None
    base = enumerate_spec(table2, [space]).base.complexity
    goal = getattr(base, rule.preserve)
    differs = []
    for c, cand in by_cardinality(enumerate_spec(table2, [space]).candidates).items():
        d = cand.arch.stages[0].bottleneck_width
        assert d == brute_force(table2, {"cardinality": c}, "bottleneck_width", rule.preserve,
                                1, 160), c

        def quantity(x: int, c: int = c) -> int:
            arch = make_arch(template="imagenet", stem_width=64, depths=(3, 4, 6, 3),
                             widths=(256, 512, 1024, 2048), cardinality=c, bottleneck_width=x)
            return getattr(count(arch, 224, 1000), rule.preserve)

        under = max(x for x in range(1, 160) if quantity(x) <= goal)
        if under != d:
            differs.append((c, d, under))
    if space == "preserved":
        # 8x14d is 0.2% above ResNet-50's params; the largest d under budget would be 13.
        assert (8, 14, 13) in differs


CIFAR_SOLVE = """\
name: solve-check
model:
  template: cifar
  depths: [1, 1, 1]
  stem_width: 16
  widths: [64, 128, 256]
  cardinality: 1
  bottleneck_width: 16
spaces:
  d:
    axes: {{cardinality: [1, 2, 3, 4, 6, 8, 16]}}
    solve: {{field: bottleneck_width, preserve: {preserve}, tolerance: 100, low: 1, high: 64}}
  c:
    axes: {{bottleneck_width: [2, 4, 8, 16]}}
    solve: {{field: cardinality, preserve: {preserve}, tolerance: 100, low: 1, high: 64}}
  stem:
    axes: {{cardinality: [1, 2, 4]}}
    solve: {{field: stem_width, preserve: {preserve}, tolerance: 100, low: 1, high: 128}}
data: {{dataset: cifar10, resolution: 16}}
"""


@pytest.mark.parametrize("preserve", ["params", "flops"])
def test_solver_matches_brute_force_for_every_solvable_field(preserve: str) -> None:
    spec = parse_spec(CIFAR_SOLVE.format(preserve=preserve))
    result = enumerate_spec(spec)
    assert result.dropped == ()
    checked = 0
    for cand in result.candidates:
        rule = spec.spaces[cand.space].solve
        assert rule is not None and cand.solved == rule.field
        axis = "bottleneck_width" if rule.field == "cardinality" else "cardinality"
        given = {axis: cand.row()[axis]}
        expected = brute_force(spec, given, rule.field, preserve, rule.low, rule.high)
        assert cand.row()[rule.field] == expected, (cand.space, given)
        checked += 1
    assert checked == 7 + 4 + 3


def test_realise_agrees_with_enumerate(table2: Spec) -> None:
    enumerated = by_cardinality(enumerate_spec(table2, ["preserved"]).candidates)
    single = realise(table2, "preserved", {"cardinality": 8})
    assert isinstance(single, Candidate)
    assert single.key == enumerated[8].key
    assert single.complexity == enumerated[8].complexity


# --- tolerance, constraints, dedupe, impossible widths ------------------------------------


def test_tolerance_drops_candidates_with_a_reason(table2: Spec) -> None:
    """At ±1%, the closest d of some cardinalities is still too far: they are dropped."""
    text = (SPACES / "resnext50_table2.yaml").read_text().replace("tolerance: 0.05",
                                                                  "tolerance: 0.01")
    spec = parse_spec(text)
    result = enumerate_spec(spec, ["preserved"])
    base = result.base.complexity.params
    kept = by_cardinality(result.candidates)
    dropped = {d.values["cardinality"]: d for d in result.dropped}
    assert set(kept) | set(dropped) == set(TABLE2_D)
    assert kept and dropped
    for c in TABLE2_D:
        d = brute_force(spec, {"cardinality": c}, "bottleneck_width", "params", 1, 160)
        arch = make_arch(template="imagenet", stem_width=64, depths=(3, 4, 6, 3),
                         widths=(256, 512, 1024, 2048), cardinality=c, bottleneck_width=d)
        deviation = abs(count(arch, 224, 1000).params - base) / base
        if deviation <= 0.01:
            assert c in kept and kept[c].arch.stages[0].bottleneck_width == d
        else:
            assert c in dropped, c
            assert isinstance(dropped[c], Dropped) and dropped[c].space == "preserved"
            assert "tolerance" in dropped[c].reason and "params" in dropped[c].reason


def test_unreachable_reference_is_dropped_with_a_reason() -> None:
    """With d capped at 3, narrow cardinalities cannot come near 1x16d's params."""
    spec = parse_spec(CIFAR_SOLVE.format(preserve="params").replace(
        "cardinality: [1, 2, 3, 4, 6, 8, 16]", "cardinality: [1, 2]").replace(
        "tolerance: 100, low: 1, high: 64", "tolerance: 0.05, low: 1, high: 3", 1))
    result = enumerate_spec(spec, ["d"])
    assert result.candidates == ()
    assert sorted(d.values["cardinality"] for d in result.dropped) == [1, 2]
    assert all("tolerance" in d.reason and "params" in d.reason for d in result.dropped)


def test_constraints_drop_with_a_reason() -> None:
    """Fig. 7's cardinality axis grows params 4.9M, 9.1M, 17.6M, 34.4M, 68.1M; a 20M cap
    keeps the first three."""
    text = (SPACES / "resnext29_cifar_fig7.yaml").read_text() + (
        "constraints:\n  params: [null, 20.0e+6]\n  flops: [1.0e+8, null]\n")
    result = enumerate_spec(parse_spec(text), ["cardinality"])
    assert sorted(by_cardinality(result.candidates)) == [1, 2, 4]
    assert all(c.complexity.params <= 20e6 for c in result.candidates)
    assert sorted(d.values["cardinality"] for d in result.dropped) == [8, 16]
    for d in result.dropped:
        assert "params" in d.reason and "above" in d.reason

    floor = text.replace("flops: [1.0e+8, null]", "flops: [2.0e+9, null]")
    result = enumerate_spec(parse_spec(floor), ["cardinality"])
    assert sorted(by_cardinality(result.candidates)) == [4]
    reasons = {d.values["cardinality"]: d.reason for d in result.dropped}
    assert "flops" in reasons[1] and "below" in reasons[1]
    assert "params" in reasons[16] or "flops" in reasons[16]


def test_fig7_spaces_grow_complexity_along_both_axes() -> None:
    result = enumerate_spec(load_spec(SPACES / "resnext29_cifar_fig7.yaml"))
    card = result.in_space("cardinality")
    width = result.in_space("width")
    assert [c.arch.stages[0].cardinality for c in card] == [1, 2, 4, 8, 16]
    assert {c.arch.stages[0].bottleneck_width for c in card} == {64}
    assert [c.arch.stages[0].bottleneck_width for c in width] == [64, 128, 256, 512]
    assert {c.arch.stages[0].cardinality for c in width} == {1}
    for space in (card, width):
        params = [c.complexity.params for c in space]
        assert params == sorted(params) and len(set(params)) == len(params)
    assert card[0].key == width[0].key == result.base.key  # 1x64d is in both


def test_cifar_preserved_space_stays_within_tolerance() -> None:
    spec = load_spec(SPACES / "resnext29_cifar_preserved.yaml")
    result = enumerate_spec(spec)
    for cand in result.candidates:
        assert abs(cand.params_deviation) <= 5.0
        c = cand.arch.stages[0].cardinality
        assert cand.arch.stages[0].bottleneck_width == brute_force(
            spec, {"cardinality": c}, "bottleneck_width", "params", 1, 4096)
    kept = {c.arch.stages[0].cardinality for c in result.candidates}
    assert kept | {d.values["cardinality"] for d in result.dropped} == {1, 2, 4, 8, 16, 32}
    # The Table 2 trade carries over: 2x40d, 4x24d, 8x14d, 32x4d.
    ds = {c.arch.stages[0].cardinality: c.arch.stages[0].bottleneck_width
          for c in result.candidates}
    for c in (1, 2, 4, 8, 32):
        assert ds.get(c) == TABLE2_D[c]


DEDUPE = """\
name: dedupe
model: {template: cifar, depths: [1, 1], widths: [32, 64], stem_width: 8, bottleneck_width: 4}
data: {dataset: cifar10, resolution: 8}
spaces:
  a:
    axes:
      cardinality: [1, 2, 2, 1]
      depths: [[1, 1], [1, 1]]
  b:
    axes:
      cardinality: [2]
"""


def test_dedupe_by_key_within_a_space_only() -> None:
    result = enumerate_spec(parse_spec(DEDUPE))
    a, b = result.in_space("a"), result.in_space("b")
    assert sorted(c.arch.stages[0].cardinality for c in a) == [1, 2]
    assert len({c.key for c in a}) == 2
    dupes = [d for d in result.dropped if d.space == "a"]
    assert len(dupes) == 8 - 2
    kept_keys = {c.key for c in a}
    for d in dupes:
        assert "same network" in d.reason
        assert any(k in d.reason for k in kept_keys)
    # The same network in another space is kept there too: spaces are compared, not merged.
    assert len(b) == 1 and b[0].key in kept_keys


def test_keys_are_content_hashes() -> None:
    spec = parse_spec(DEDUPE)
    first, again = enumerate_spec(spec), enumerate_spec(parse_spec(DEDUPE))
    assert [c.key for c in first.candidates] == [c.key for c in again.candidates]
    one = realise(spec, "a", {"cardinality": 2})
    other = realise(spec, "a", {"cardinality": 1})
    assert isinstance(one, Candidate) and isinstance(other, Candidate)
    assert one.key != other.key


def test_stage_d_follows_design_rounding() -> None:
    """d_s = floor(d · widths[s] / widths[0]), here with widths that are not powers of two."""
    spec = parse_spec("name: r\nmodel: {depths: [1, 1, 1], widths: [96, 160, 250], "
                      "bottleneck_width: 10, cardinality: 3}\nspaces: {s: {}}\n")
    base = enumerate_spec(spec).base
    assert base.arch.bottleneck_widths == (10, 16, 26)  # 10·160/96 = 16.7, 10·250/96 = 26.04
    assert base.arch.group_widths == (30, 48, 78)


def test_a_stage_whose_d_rounds_to_zero_is_dropped() -> None:
    """A widths axis entry can make d·w/w0 < 1 for the base d: that point never trains."""
    spec = parse_spec("name: z\nmodel: {depths: [1, 1, 1], widths: [256, 512, 1024], "
                      "bottleneck_width: 8}\ndata: {dataset: cifar10}\nspaces:\n  s:\n"
                      "    axes:\n      widths: [[256, 512, 1024], [256, 512, 16]]\n")
    result = enumerate_spec(spec)
    assert [c.arch.widths for c in result.candidates] == [(256, 512, 1024)]
    assert len(result.dropped) == 1
    assert "rounds to 0" in result.dropped[0].reason


def test_solver_never_picks_a_d_that_rounds_to_zero() -> None:
    """Later stages narrower than the first need d >= 256/16 = 16; the solver respects it."""
    spec = parse_spec("name: n\nmodel: {depths: [1, 1, 1], widths: [256, 128, 16], "
                      "bottleneck_width: 32, stem_width: 16}\ndata: {dataset: cifar10}\n"
                      "spaces:\n  s:\n    axes: {cardinality: [1, 4, 16, 64]}\n"
                      "    solve: {tolerance: 10.0}\n")
    result = enumerate_spec(spec)
    assert len(result.candidates) + len(result.dropped) == 4
    for cand in result.candidates:
        assert min(cand.arch.bottleneck_widths) >= 1
        assert cand.arch.stages[0].bottleneck_width >= 16
    for dropped in result.dropped:
        assert dropped.reason


def test_enumeration_needs_neither_torch_nor_ray() -> None:
    code = (
        "import sys\n"
        "from explorer.spec import load_spec\n"
        "from explorer.space import enumerate_spec\n"
        f"r = enumerate_spec(load_spec({str(SPACES / 'resnext50_table2.yaml')!r}))\n"
        "assert len(r.candidates) == 10, len(r.candidates)\n"
        "heavy = sorted(m for m in ('torch', 'ray', 'fvcore') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)
