"""Candidates of a spec's design spaces, with exact complexity, before any training.

Per named space: the grid product of its axes applied to the base model; a
`solve` picks the solved field per candidate so its params or flops come
closest to the base model's; `tolerance` and the absolute `constraints` drop
the rest, each with a reason. Needs neither torch nor ray.

Two engines give the same candidates in the same order: `enumerate_per_point`
realises one point at a time with `count` (the reference the tests hold the
other to); `CandidateStream` does the same steps on numpy columns with
`count_stages`, a chunk of points at a time, for spaces of millions of points.
`enumerate_spec` collects the stream's batches as records.
A sampled space has no grid: both take its drawn candidates from explorer.sampling.

The package, by concept: `records` (Candidate, Dropped, Enumeration, Batch, and every
drop reason's wording), `point` (the per-point engine), `stream` (the columnar engine),
`keys` (content keys of many networks at once). This module re-exports what callers use.
"""

from __future__ import annotations

from explorer.space.keys import canonical_keys, distinct_rows
from explorer.space.point import (
    AXIS_FIELDS,
    base_candidate,
    build_arch,
    enumerate_per_point,
    grid,
    grid_size,
    realise,
    valid_widths,
)
from explorer.space.records import Batch, Candidate, Dropped, Enumeration
from explorer.space.stream import CandidateStream, enumerate_spec

__all__ = [
    "AXIS_FIELDS",
    "Batch",
    "Candidate",
    "CandidateStream",
    "Dropped",
    "Enumeration",
    "base_candidate",
    "build_arch",
    "canonical_keys",
    "distinct_rows",
    "enumerate_per_point",
    "enumerate_spec",
    "grid",
    "grid_size",
    "realise",
    "valid_widths",
]
