"""CandidateStream (chunks of grid points on numpy columns) and enumerate_spec (its batches
as records) equal enumerate_per_point, exactly.

enumerate_per_point realises one point at a time with count() (the reference,
independent of the numpy engine); enumerate_spec is checked against the paper
in test_space.py; here random specs (both templates, two to
four stages, every solvable field, solved fields that are also axes, repeated
axis values, block axes, tolerances and constraint bands that drop points)
are enumerated both ways, in chunks of odd sizes, and must give the same
candidates, the same rows, the same drops with the same reasons, in the same order.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from explorer.arch import BLOCK_FORMS
from explorer.space import (
    CandidateStream,
    Dropped,
    canonical_keys,
    distinct_rows,
    enumerate_per_point,
    enumerate_spec,
    grid_size,
)
from explorer.spec import Spec, SpecError, load_spec, parse_spec, with_overrides

SOLVABLE = ("bottleneck_width", "cardinality", "stem_width")
SPACES = Path(__file__).resolve().parents[1] / "spaces"


def pick(rng: np.random.Generator, values: list[int], k: int) -> list[int]:
    return [int(v) for v in rng.choice(values, size=k)]  # with replacement: repeats happen


def random_spec(rng: np.random.Generator) -> Spec | None:
    stages = int(rng.integers(2, 5))
    widths = pick(rng, [8, 16, 24, 32, 48, 64, 128], stages)
    widths = sorted(widths) if rng.random() < 0.7 else widths  # narrower later stages: d -> 0
    model = {"template": str(rng.choice(["cifar", "imagenet"])), "depths": pick(rng, [1, 2, 3],
             stages), "stem_width": int(rng.integers(4, 33)), "widths": widths,
             "cardinality": int(rng.choice([1, 2, 4])), "bottleneck_width": int(rng.integers(2, 9)),
             "block": str(rng.choice(BLOCK_FORMS))}
    axes: dict[str, object] = {}
    for name in ("cardinality", "bottleneck_width", "stem_width"):
        if rng.random() < 0.5:
            axes[name] = pick(rng, [1, 2, 3, 4, 6, 8, 16], int(rng.integers(1, 5)))
    if rng.random() < 0.5:
        axes["depths"] = [pick(rng, [1, 2, 3, 4], stages) for _ in range(int(rng.integers(1, 4)))]
    if rng.random() < 0.5:
        axes["widths"] = [pick(rng, [4, 8, 16, 24, 40, 64], stages) for _ in range(2)]
    if rng.random() < 0.4:
        axes["block"] = [str(b) for b in rng.choice(BLOCK_FORMS, size=int(rng.integers(1, 4)))]
    space: dict[str, object] = {"axes": axes}
    if rng.random() < 0.7:
        low = int(rng.integers(1, 4))
        space["solve"] = {"field": str(rng.choice(SOLVABLE)),
                          "preserve": str(rng.choice(["params", "flops"])),
                          "tolerance": float(rng.choice([0.001, 0.02, 0.1, 0.5])),
                          "low": low, "high": int(rng.choice([2, 8, 64, 300])) + low - 1}
    doc: dict[str, object] = {"name": "random", "model": model, "spaces": {"a": space, "b": {}},
                              "data": {"dataset": "cifar10", "resolution": int(
                                  rng.choice([8, 15, 32]))}}
    if rng.random() < 0.5:
        doc["constraints"] = {"params": [float(rng.integers(0, 20_000)) or None, None],
                              "flops": [None, float(rng.integers(100_000, 5_000_000))],
                              "acts": [None, float(rng.integers(10_000, 200_000))]}
    try:
        return parse_spec(json.dumps(doc), "<random>")  # JSON is YAML
    except SpecError:
        return None  # e.g. a d that rounds to 0 in the base model: refused before enumerating


def drops(dropped: list[Dropped] | tuple[Dropped, ...]) -> list[tuple[str, dict, str]]:
    return [(d.space, dict(d.values), d.reason) for d in dropped]


def check_same(spec: Spec, chunk_points: int) -> tuple[int, set[str]]:
    ref = enumerate_per_point(spec)
    assert enumerate_spec(spec) == ref
    stream = CandidateStream(spec, chunk_points=chunk_points, keep_dropped=None)
    batches = list(stream)
    rows = [r for b in batches for r in b.rows()]
    for row, c in zip(rows, ref.candidates, strict=True):
        assert row["cardinalities"] == list(c.arch.cardinalities)
        assert row["bottleneck_widths"] == list(c.arch.bottleneck_widths)
    assert rows == [c.row() for c in ref.candidates]
    assert [c for b in batches for c in b.candidates(ref.base.complexity)] == list(ref.candidates)
    assert drops(stream.dropped) == drops(ref.dropped)
    assert (stream.candidates, stream.dropped_count) == (len(ref.candidates), len(ref.dropped))
    assert stream.points_done == stream.total_points == len(ref.candidates) + len(ref.dropped)
    return len(ref.candidates), {" ".join(r.split()[:2]) for r in stream.dropped_by_reason}


def test_random_specs_stream_exactly_as_the_per_point_reference() -> None:
    rng = np.random.default_rng(2026)
    kept = specs = 0
    reasons: set[str] = set()
    while specs < 80:
        spec = random_spec(rng)
        if spec is None:
            continue
        k, why = check_same(spec, chunk_points=int(rng.choice([1, 3, 7, 64])))
        kept, reasons, specs = kept + k, reasons | why, specs + 1
    # The generator must exercise every outcome, or the comparison proves little.
    assert kept > 200
    assert reasons == {"no valid", "a stage's", "params beyond", "flops beyond", "same network",
                       "params below", "flops above", "acts above"}


def test_anynet_template_specs_stream_exactly_as_the_per_point_reference() -> None:
    # The anynet stem (3x3/2) and all-stride-2 stages, on the random specs' other shapes.
    rng = np.random.default_rng(21)
    specs = 0
    while specs < 15:
        spec = random_spec(rng)
        if spec is None:
            continue
        check_same(with_overrides(spec, model={"template": "anynet"}), chunk_points=5)
        specs += 1


@pytest.mark.parametrize("name", ["resnext50_table2.yaml", "cifar10_fig7_small.yaml",
                                  "cpu/cifar10_preserved.yaml", "regnetx_zoo.yaml",
                                  "anynetx.yaml"])
def test_ready_made_specs_stream_exactly_as_the_per_point_reference(name: str) -> None:
    check_same(load_spec(SPACES / name), chunk_points=2)


def test_grid_size_is_the_number_of_points() -> None:
    rng = np.random.default_rng(5)
    for _ in range(20):
        spec = random_spec(rng)
        if spec is not None:
            ref = enumerate_per_point(spec, ["a"])
            assert grid_size(spec.spaces["a"]) == len(ref.candidates) + len(ref.dropped)


def test_canonical_keys_are_the_arch_keys() -> None:
    spec = load_spec(SPACES / "resnext50_table2.yaml")
    ref = enumerate_per_point(spec).candidates
    archs = [c.arch for c in ref]
    cols = {k: np.array([getattr(a, k) for a in archs]) for k in
            ("depths", "widths", "cardinalities", "bottleneck_widths")}
    keys = canonical_keys("imagenet", [a.block for a in archs],
                          np.array([a.stem_width for a in archs]), cols)
    assert keys == tuple(a.key for a in archs)


def test_only_the_first_drops_are_kept_whole_and_all_are_counted() -> None:
    rng = np.random.default_rng(9)
    while True:
        spec = random_spec(rng)
        if spec is not None and len(enumerate_per_point(spec).dropped) > 10:
            break
    ref = enumerate_per_point(spec)
    stream = CandidateStream(spec, chunk_points=4, keep_dropped=5)
    for _ in stream:
        pass
    assert drops(stream.dropped) == drops(ref.dropped[:5])
    assert stream.dropped_count == len(ref.dropped)


@pytest.mark.parametrize(("shape", "high"), [((1000, 4), 5), ((5000, 3), 10**9), ((1, 1), 3),
                                             ((300, 2), 2**40), ((100, 70), 3), ((0, 3), 2)])
def test_distinct_rows_are_numpys_unique_rows(shape: tuple[int, int], high: int) -> None:
    values = np.random.default_rng(1).integers(0, high, size=shape)
    unique, inverse = distinct_rows(values)
    assert np.array_equal(unique[inverse], values)
    expected = np.unique(values, axis=0)
    assert np.array_equal(unique[np.lexsort(unique.T[::-1])], expected)
