"""count_stages (whole columns of networks at once) equals count (one record at a time), exactly.

count is the reference: it mirrors explorer.models layer by layer and is held
equal to fvcore in test_complexity_vs_fvcore.py. Here 100,800 random records,
both templates, all three block forms, two to four stages with their own
depth, width, cardinality and bottleneck width each, stems of many widths and
odd resolutions, are counted both ways and must agree on every figure.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from explorer.arch import BLOCK_FORMS, TEMPLATES, Arch, Stage, stage_strides
from explorer.complexity import count, count_stages

# 2 templates x 3 blocks x 3 stage counts x 5,600 = 100,800 records; the quick run checks 5,040.
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
