"""count_stages (whole columns of networks at once) equals count (one record at a time), exactly.

count is the reference: it mirrors explorer.models layer by layer and is held
equal to fvcore in test_complexity_vs_fvcore.py. Here 151,200 random records,
the three templates, all three block forms, two to four stages with their own
depth, width, cardinality and bottleneck width each, stems of many widths and
odd resolutions, are counted both ways and must agree on every figure.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from explorer.arch import BLOCK_FORMS, TEMPLATES, Arch, Stage, stage_strides
from explorer.complexity import count, count_stages

# 3 templates x 3 blocks x 3 stage counts x 5,600 = 151,200 records; the quick run checks 7,560.
FULL, QUICK = 5_600, 280
RESOLUTIONS = (32, 224, 17, 64, 9, 40)


def random_columns(rng: np.random.Generator, n: int, stages: int) -> dict[str, np.ndarray]:
    return {
        "stem_width": rng.integers(1, 129, size=n),
        "depths": rng.integers(1, 9, size=(n, stages)),
        "widths": rng.integers(1, 2049, size=(n, stages)),
        "cardinalities": rng.integers(1, 65, size=(n, stages)),
        "bottleneck_widths": rng.integers(1, 65, size=(n, stages)),
    }


def reference_counts(template: str, block: str, cols: dict[str, np.ndarray],
                     resolution: int, classes: int) -> list[tuple[int, int, int]]:
    """count() of each record, built as explorer.arch.Stage / Arch from plain ints."""
    strides = stage_strides(template, cols["depths"].shape[1])  # type: ignore[arg-type]
    per_stage = zip(*(cols[k].tolist() for k in
                      ("depths", "widths", "cardinalities", "bottleneck_widths")), strict=True)
    out = []
    for stem, rows in zip(cols["stem_width"].tolist(), per_stage, strict=True):
        stages = tuple(Stage(depth=n, width=w, cardinality=c, bottleneck_width=d, stride=s)
                       for n, w, c, d, s in zip(*rows, strides, strict=True))
        ref = count(Arch(template=template, stem_width=stem,  # type: ignore[arg-type]
                         stages=stages, block=block), resolution, classes)  # type: ignore[arg-type]
        out.append((ref.params, ref.flops, ref.acts))
    return out


def check_random_records(per_group: int, seed: int) -> int:
    """Count per_group random records of every group both ways; returns how many were checked."""
    rng = np.random.default_rng(seed)
    checked = 0
    groups = itertools.product(TEMPLATES, BLOCK_FORMS, (2, 3, 4))
    for g, (template, block, stages) in enumerate(groups):
        cols = random_columns(rng, per_group, stages)
        resolution, classes = RESOLUTIONS[g % len(RESOLUTIONS)], int(rng.integers(1, 1001))
        params, flops, acts = count_stages(
            template=template, block=block, resolution=resolution, num_classes=classes, **cols)
        assert params.shape == flops.shape == acts.shape == (per_group,)
        assert params.dtype == flops.dtype == acts.dtype == np.int64
        expected = np.array(reference_counts(template, block, cols, resolution, classes))
        got = np.stack([params, flops, acts], axis=1)
        bad = np.flatnonzero((got != expected).any(axis=1))
        assert bad.size == 0, (template, block, resolution, {k: v[bad[0]] for k, v in cols.items()},
                               got[bad[0]], expected[bad[0]])
        checked += per_group
    return checked


@pytest.mark.slow
def test_vectorised_counts_equal_the_reference_on_100k_random_records() -> None:
    assert check_random_records(FULL, seed=11) >= 100_000


def test_vectorised_counts_equal_the_reference_on_5k_random_records() -> None:
    assert check_random_records(QUICK, seed=12) >= 5_000


def test_a_scalar_stem_width_is_the_same_as_a_column_of_it() -> None:
    rng = np.random.default_rng(3)
    cols = random_columns(rng, 500, 4)
    cols["stem_width"] = np.full(500, 64)
    column = count_stages(template="imagenet", block="grouped", resolution=224,
                          num_classes=1000, **cols)
    cols_scalar = {**cols, "stem_width": 64}
    scalar = count_stages(template="imagenet", block="grouped", resolution=224,
                          num_classes=1000, **cols_scalar)  # type: ignore[arg-type]
    for a, b in zip(column, scalar, strict=True):
        assert np.array_equal(a, b)


def test_resnet50_from_columns_matches_torchvision_figures() -> None:
    # torchvision's published figures for resnet50 (docs/CONVENTIONS.md).
    params, flops, _ = count_stages(
        template="imagenet", stem_width=64, block="grouped",
        depths=np.array([[3, 4, 6, 3]]), widths=np.array([[256, 512, 1024, 2048]]),
        cardinalities=np.ones((1, 4), dtype=np.int64),
        bottleneck_widths=np.array([[64, 128, 256, 512]]), resolution=224, num_classes=1000)
    assert (int(params[0]), int(flops[0])) == (25_557_032, 4_089_184_256)


def test_long_inputs_counted_in_blocks_equal_short_calls() -> None:
    """Over 16,384 rows count_stages works block by block: the seams must not show."""
    rng = np.random.default_rng(8)
    cols = random_columns(rng, 40_000, 3)
    whole = count_stages(template="cifar", block="split", resolution=32, num_classes=10, **cols)
    pieces = [count_stages(template="cifar", block="split", resolution=32, num_classes=10,
                           **{k: v[s:s + 997] for k, v in cols.items()})
              for s in range(0, 40_000, 997)]
    for j, column in enumerate(whole):
        assert np.array_equal(column, np.concatenate([p[j] for p in pieces]))


def test_stages_given_as_b_and_g_count_the_same_both_ways() -> None:
    # The AnyNet parametrisation's stages (C = (w/b)/g, d = g, made compatible) are ordinary
    # stages: count_stages on them equals count, on the anynet template and the others.
    from explorer.arch import anynet_columns

    rng = np.random.default_rng(17)
    for template in TEMPLATES:
        n, stages = 500, 4
        widths, cards, ds = anynet_columns(rng.integers(8, 1025, size=(n, stages)),
                                           rng.choice([1, 2, 4], size=(n, stages)),
                                           rng.choice([1, 2, 4, 8, 16, 32], size=(n, stages)))
        cols = {"stem_width": np.full(n, 32), "depths": rng.integers(1, 5, size=(n, stages)),
                "widths": widths, "cardinalities": cards, "bottleneck_widths": ds}
        params, flops, acts = count_stages(template=template, block="grouped", resolution=64,
                                           num_classes=1000, **cols)
        expected = reference_counts(template, "grouped", cols, 64, 1000)
        assert list(zip(params.tolist(), flops.tolist(), acts.tolist(), strict=True)) == expected


INT64_MAX = 2**63 - 1  # numpy's int64, written out


def huge_columns(rng: np.random.Generator, n: int, stages: int) -> dict[str, np.ndarray]:
    """Networks from ordinary to far past int64: widths and bottleneck widths up to 2**22,
    depths up to 1,000, so the counts spread over about 1e4 ... 1e25."""
    return {
        "stem_width": rng.integers(1, 2**12, size=n),
        "depths": rng.integers(1, 1001, size=(n, stages)),
        "widths": 2 ** rng.integers(0, 23, size=(n, stages)),
        "cardinalities": 2 ** rng.integers(0, 11, size=(n, stages)),
        "bottleneck_widths": 2 ** rng.integers(0, 23, size=(n, stages)),
    }


@pytest.mark.parametrize("template", TEMPLATES)
def test_counts_past_int64_are_exact_or_refused_never_wrapped(template: str) -> None:
    """Against count's Python ints: every count that fits int64 is exact (also between 2**62
    and 2**63, where int64 sums sit near wrapping), and one that does not is refused
    (CountTooLarge naming the field and count's exact value), or with saturate pinned
    to INT64_MAX - never a wrapped (negative or small) number."""
    from explorer.complexity import CountTooLarge

    rng = np.random.default_rng(19)
    cols = huge_columns(rng, 3_000, 2)
    kwargs: dict[str, object] = {"template": template, "block": "grouped", "resolution": 224,
                                 "num_classes": 1000}
    expected = np.array(reference_counts(template, "grouped", cols, 224, 1000), dtype=object)
    past = expected > INT64_MAX
    near = (expected > 2**62) & ~past
    assert past.any(axis=1).sum() > 100 and near.any() and (~past).all(axis=1).sum() > 100
    got = np.stack(count_stages(**kwargs, **cols, saturate=True), axis=1)  # type: ignore[arg-type]
    assert (got.astype(object) == np.where(past, INT64_MAX, expected)).all()

    fits = (~past).all(axis=1)
    exact = np.stack(count_stages(**kwargs, **{k: v[fits] for k, v in cols.items()}),  # type: ignore[arg-type]
                     axis=1)
    assert (exact.astype(object) == expected[fits]).all()
    first = int(np.flatnonzero(~fits)[0])
    with pytest.raises(CountTooLarge) as refused:
        count_stages(**kwargs, **{k: v[first:first + 1] for k, v in cols.items()})  # type: ignore[arg-type]
    field = ("params", "flops", "acts")[int(np.flatnonzero(past[first])[0])]
    assert refused.value.field == field
    assert refused.value.value == expected[first][("params", "flops", "acts").index(field)]


def test_the_issues_network_is_refused_with_counts_exact_value() -> None:
    """cifar, stem 64, 224 px, 1000 classes, depths [1, 1], widths [64, 2097152], C 64, d 64:
    int64 wrapped its flops to -1,584,834,229,778,579,456, inside any flops band."""
    from explorer.arch import make_arch
    from explorer.complexity import CountTooLarge

    arch = make_arch(template="cifar", stem_width=64, depths=(1, 1), widths=(64, 2097152),
                     cardinality=64, bottleneck_width=64, block="grouped")
    exact = count(arch, 224, 1000)
    assert exact.flops > INT64_MAX
    stages = arch.stages
    with pytest.raises(CountTooLarge) as refused:
        count_stages(template="cifar", stem_width=64, block="grouped", resolution=224,
                     num_classes=1000, depths=np.array([[s.depth for s in stages]]),
                     widths=np.array([[s.width for s in stages]]),
                     cardinalities=np.array([[s.cardinality for s in stages]]),
                     bottleneck_widths=np.array([[s.bottleneck_width for s in stages]]))
    assert (refused.value.field, refused.value.value) == ("flops", exact.flops)
    assert f"flops {exact.flops:,}" in str(refused.value)
