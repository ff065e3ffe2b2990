"""Exact complexity of an architecture record, by formula, without torch.

Conventions (docs/CONVENTIONS.md): flops are multiply-adds of convolutions and linear
layers for one image; params are all trainable parameters, batch-norm affine
included; acts are the output elements of every convolution and linear layer.
Each function mirrors one layer of explorer.models so the two can be checked
against each other (tests compare with fvcore on the built model).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from explorer.arch import Arch, Stage, stage_strides
from explorer.errors import SetupError

__all__ = [
    "FIELDS",
    "INT64_MAX",
    "Complexity",
    "Cost",
    "CountTooLarge",
    "bottleneck",
    "check_fits",
    "conv",
    "count",
    "count_stages",
    "linear",
    "stem",
]

# What a count may be: the columns of enumerate's tables, the store and numpy's fast path
# are int64. A network past it (9.2e18 multiply-adds) is refused, never wrapped.
INT64_MAX = int(np.iinfo(np.int64).max)
FIELDS = ("params", "flops", "acts")


@dataclass(frozen=True)
class Complexity:
    params: int
    flops: int
    acts: int

    def __add__(self, other: Complexity) -> Complexity:
        return Complexity(
            self.params + other.params, self.flops + other.flops, self.acts + other.acts
        )


class CountTooLarge(SetupError):
    """A network whose params, flops or acts are past INT64_MAX: one line naming it."""

    def __init__(self, field: str, value: int, network: str, where: str = "") -> None:
        self.field, self.value, self.network = field, value, network
        super().__init__(
            f"{where}{network} has {field} {value:,}, more than the {INT64_MAX:,} a count "
            "holds (int64); use smaller widths, depths, cardinality or bottleneck width, or "
            "a lower resolution")

    def within(self, where: str) -> CountTooLarge:
        """The same refusal, saying where the network is (a space, the base model)."""
        return CountTooLarge(self.field, self.value, self.network, f"{where}: ")


def check_fits(cost: Complexity, arch: Arch) -> Complexity:
    """`cost`, or CountTooLarge when a field is past INT64_MAX (count() itself is exact)."""
    for field in FIELDS:
        value = getattr(cost, field)
        if value > INT64_MAX:
            stages = arch.stages
            raise CountTooLarge(field, value, _network(
                [s.depth for s in stages], [s.width for s in stages],
                [s.cardinality for s in stages], [s.bottleneck_width for s in stages]))
    return cost


def _network(depths: list[int], widths: list[int], cards: list[int], ds: list[int]) -> str:
    return f"the network of depths {depths}, widths {widths}, C {cards}, d {ds}"


# Internally a cost is a plain (params, flops, acts) triple: counting 100,000
# candidates a second leaves no room for an object per layer.
Cost = tuple[int, int, int]


def _sum(*costs: Cost) -> Cost:
    params = flops = acts = 0
    for p, f, a in costs:
        params += p
        flops += f
        acts += a
    return (params, flops, acts)


def _conv_out_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def conv(
    size: int, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1
) -> tuple[Cost, int]:
    """A bias-free 'same'-padded convolution; returns its cost and output size."""
    out = _conv_out_size(size, kernel, stride, kernel // 2)
    weights = c_out * (c_in // groups) * kernel * kernel
    return (weights, weights * out * out, c_out * out * out), out


def _batch_norm(channels: int) -> Cost:
    return (2 * channels, 0, 0)


def linear(c_in: int, c_out: int) -> Cost:
    return (c_in * c_out + c_out, c_in * c_out, c_out)


def stem(arch: Arch, resolution: int) -> tuple[Cost, int]:
    """The stem: 7x7/2 conv + 3x3/2 max-pool (imagenet), a 3x3/2 conv (anynet) or a 3x3
    conv (cifar)."""
    if arch.template == "imagenet":
        cost, size = conv(resolution, 3, arch.stem_width, 7, stride=2)
        size = _conv_out_size(size, 3, 2, 1)  # max-pool: no cost by convention
    elif arch.template == "anynet":
        cost, size = conv(resolution, 3, arch.stem_width, 3, stride=2)
    else:
        cost, size = conv(resolution, 3, arch.stem_width, 3)
    return _sum(cost, _batch_norm(arch.stem_width)), size


@functools.lru_cache(maxsize=65536)
def bottleneck(size: int, c_in: int, stage: Stage, stride: int, block: str) -> tuple[Cost, int]:
    """One bottleneck block in the given form; the forms differ only in acts.

    grouped and concat compute the same outputs; split runs each branch's last
    1x1 to the full width and sums, so it writes C times that output.
    """
    c, g, w = stage.cardinality, stage.group_width, stage.width
    reduce, _ = conv(size, c_in, g, 1)
    spatial, out = conv(size, g, g, 3, stride=stride, groups=c)
    expand, _ = conv(out, g, w, 1)
    if block == "split":
        expand = (expand[0], expand[1], c * expand[2])
    cost = _sum(reduce, spatial, expand, _batch_norm(g), _batch_norm(g), _batch_norm(w))
    if stride != 1 or c_in != w:
        shortcut, _ = conv(size, c_in, w, 1, stride=stride)
        cost = _sum(cost, shortcut, _batch_norm(w))
    return cost, out


@functools.lru_cache(maxsize=65536)
def count(arch: Arch, resolution: int, num_classes: int) -> Complexity:
    """params, flops and acts of the network built by explorer.models.

    Blocks after a stage's first are identical, so each is counted once and
    multiplied; the cache serves the solver, which revisits the same records.
    """
    total, size = stem(arch, resolution)
    c_in = arch.stem_width
    for stage in arch.stages:
        first, size = bottleneck(size, c_in, stage, stage.stride, arch.block)
        rest, _ = bottleneck(size, stage.width, stage, 1, arch.block)
        n = stage.depth - 1
        total = _sum(total, first, (n * rest[0], n * rest[1], n * rest[2]))
        c_in = stage.width
    return Complexity(*_sum(total, linear(c_in, num_classes)))


def count_stages(*, template: str, stem_width: int | np.ndarray, block: str,
                 depths: np.ndarray, widths: np.ndarray, cardinalities: np.ndarray,
                 bottleneck_widths: np.ndarray, resolution: int, num_classes: int,
                 saturate: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """params, flops, acts (int64 arrays of shape (N,)) of N networks; per-stage
    arrays are (N, S), each stage with its own depth, width, cardinality and
    bottleneck width (the values of explorer.arch.Stage); stem_width scalar or (N,).

    The same formula as `count`, layer for layer, on whole columns: spatial
    sizes depend only on the template, resolution and stage index, so they are
    scalars, and everything else is an exact int64 product. Long inputs are
    counted in blocks of rows that stay in cache.

    Never a wrapped number: a network past INT64_MAX raises CountTooLarge, or with
    `saturate` (a solver's probes, where "too large" is all it needs) counts as INT64_MAX.
    """
    depth, width, card, d = (np.asarray(a, dtype=np.int64)
                             for a in (depths, widths, cardinalities, bottleneck_widths))
    n = depth.shape[0]
    stem_channels = np.broadcast_to(np.asarray(stem_width, dtype=np.int64), (n,))
    args = (template, block, resolution, num_classes)
    # One bound for all rows first: ordinary spaces take the int64 path without more checks.
    fits = _fits_int64(stem_channels, depth, width, card, d, *args)
    exactly = functools.partial(_count_exactly, saturate=saturate, checked=fits)
    if n <= _ROWS_PER_BLOCK:
        return exactly(stem_channels, depth, width, card, d, *args)
    parts = [exactly(stem_channels[at], depth[at], width[at], card[at], d[at], *args)
             for at in (slice(s, s + _ROWS_PER_BLOCK) for s in range(0, n, _ROWS_PER_BLOCK))]
    params, flops, acts = (np.concatenate(column) for column in zip(*parts, strict=True))
    return params, flops, acts


# Below this bound int64 arithmetic is exact: the float64 bound's rounding (about 1e-15 of
# it) is far inside the factor of two between it and INT64_MAX.
_FAST_BOUND = float(2**62)


def _fits_int64(stem_channels: np.ndarray, depth: np.ndarray, width: np.ndarray,
                card: np.ndarray, d: np.ndarray, template: str, block: str, resolution: int,
                num_classes: int) -> bool:
    """Whether int64 counts every row exactly.

    Every term of the formula is a sum of products of non-negative inputs, so it grows with
    each of them: the network built from each column's largest value (with every shortcut
    projecting) bounds every row's counts, and every partial sum, from above. Counting that
    one network in float64 costs one row: the int64 path pays a maximum per input. (One
    maximum over all stages, not one per stage: a looser bound, but numpy's maximum over a
    whole array is ten times faster than per column.)"""
    if not depth.shape[0]:
        return True
    shape = (1, depth.shape[1])
    stem_max, depth_max, width_max, card_max, d_max = (
        np.full(shape if a.ndim == 2 else (1,), a.max(), dtype=np.float64)
        for a in (stem_channels, depth, width, card, d))
    bound = _count_block(template, stem_max, block, depth_max, width_max, card_max, d_max,
                         resolution, num_classes, every_shortcut=True)
    return max(float(b[0]) for b in bound) < _FAST_BOUND


def _count_exactly(stem_channels: np.ndarray, depth: np.ndarray, width: np.ndarray,
                   card: np.ndarray, d: np.ndarray, template: str, block: str,
                   resolution: int, num_classes: int, *, saturate: bool, checked: bool
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`_count_block` in int64 when no row can pass it (`checked`: known for all rows),
    else in Python ints (exact), each row then checked against INT64_MAX."""
    args = (template, block, resolution, num_classes)
    if checked or _fits_int64(stem_channels, depth, width, card, d, *args):
        return _count_block(template, stem_channels, block, depth, width, card, d,
                            resolution, num_classes)
    exact = _count_block(template, stem_channels.astype(object), block, depth.astype(object),
                         width.astype(object), card.astype(object), d.astype(object),
                         resolution, num_classes)
    columns = []
    for field, column in zip(FIELDS, exact, strict=True):
        past = np.flatnonzero(column > INT64_MAX)
        if past.size and not saturate:
            i = int(past[0])
            raise CountTooLarge(field, int(column[i]), _network(
                depth[i].tolist(), width[i].tolist(), card[i].tolist(), d[i].tolist()))
        column[past] = INT64_MAX
        columns.append(column.astype(np.int64))
    return columns[0], columns[1], columns[2]


# Rows per block: a stage's column of a (n, stages) array is strided, and whole-array
# steps over millions of rows spend their time in cache misses.
_ROWS_PER_BLOCK = 16_384


def _count_block(template: str, stem_channels: np.ndarray, block: str, depth: np.ndarray,
                 width: np.ndarray, card: np.ndarray, d: np.ndarray, resolution: int,
                 num_classes: int, every_shortcut: bool = False
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n, num_stages = depth.shape
    if template == "imagenet":
        size = _conv_out_size(resolution, 7, 2, 3)
        stem_weights = stem_channels * (3 * 7 * 7)
        stem_out = size
        size = _conv_out_size(size, 3, 2, 1)  # max-pool: no cost by convention
    elif template == "anynet":
        size = _conv_out_size(resolution, 3, 2, 1)
        stem_weights = stem_channels * (3 * 3 * 3)
        stem_out = size
    else:
        size = resolution
        stem_weights = stem_channels * (3 * 3 * 3)
        stem_out = size
    params = stem_weights + 2 * stem_channels
    flops = stem_weights * (stem_out * stem_out)
    acts = stem_channels * (stem_out * stem_out)

    c_in = stem_channels
    strides = stage_strides(template, num_stages)  # type: ignore[arg-type]
    for s, stride in enumerate(strides):
        c, g, w, blocks = card[:, s], card[:, s] * d[:, s], width[:, s], depth[:, s]
        out = _conv_out_size(size, 3, stride, 1)
        expand_acts = w * (c if block == "split" else 1)
        # Every block: reduce 1x1 (c_in -> g), grouped 3x3 (g -> g, g/c per group),
        # expand 1x1 (g -> w), three batch norms; only c_in, size and stride differ
        # between the first block and the rest.
        spatial_w = g * d[:, s] * 9
        expand_w = w * g
        norms = 4 * g + 2 * w
        # the first block
        reduce_w = g * c_in
        p = reduce_w + spatial_w + expand_w + norms
        f = reduce_w * (size * size) + (spatial_w + expand_w) * (out * out)
        a = g * (size * size) + (g + expand_acts) * (out * out)
        projects = (c_in != w) if stride == 1 and not every_shortcut else np.ones(n, dtype=bool)
        shortcut_w = np.where(projects, w * c_in, 0)
        p = p + shortcut_w + np.where(projects, 2 * w, 0)
        f = f + shortcut_w * (out * out)
        a = a + np.where(projects, w * (out * out), 0)
        # the depth - 1 blocks after it: c_in = w, stride 1, at the output size
        rest = blocks - 1
        rest_reduce = g * w
        rp = rest_reduce + spatial_w + expand_w + norms
        rf = (rest_reduce + spatial_w + expand_w) * (out * out)
        ra = (2 * g + expand_acts) * (out * out)
        params = params + p + rest * rp
        flops = flops + f + rest * rf
        acts = acts + a + rest * ra
        c_in, size = w, out
    params = params + c_in * num_classes + num_classes
    flops = flops + c_in * num_classes
    acts = acts + num_classes
    return params, flops, acts
