"""Exact complexity of an architecture record, by formula, without torch.

Conventions (DESIGN.md): flops are multiply-adds of convolutions and linear
layers for one image; params are all trainable parameters, batch-norm affine
included; acts are the output elements of every convolution and linear layer.
Each function mirrors one layer of explorer.models so the two can be checked
against each other (tests compare with fvcore on the built model).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from explorer.arch import Arch, Stage


@dataclass(frozen=True)
class Complexity:
    params: int
    flops: int
    acts: int

    def __add__(self, other: Complexity) -> Complexity:
        return Complexity(
            self.params + other.params, self.flops + other.flops, self.acts + other.acts
        )


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


def conv_out_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def conv(
    size: int, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1
) -> tuple[Cost, int]:
    """A bias-free 'same'-padded convolution; returns its cost and output size."""
    out = conv_out_size(size, kernel, stride, kernel // 2)
    weights = c_out * (c_in // groups) * kernel * kernel
    return (weights, weights * out * out, c_out * out * out), out


def batch_norm(channels: int) -> Cost:
    return (2 * channels, 0, 0)


def linear(c_in: int, c_out: int) -> Cost:
    return (c_in * c_out + c_out, c_in * c_out, c_out)


def stem(arch: Arch, resolution: int) -> tuple[Cost, int]:
    """The stem: 7x7/2 conv + 3x3/2 max-pool (imagenet) or a 3x3 conv (cifar)."""
    if arch.template == "imagenet":
        cost, size = conv(resolution, 3, arch.stem_width, 7, stride=2)
        size = conv_out_size(size, 3, 2, 1)  # max-pool: no cost by convention
    else:
        cost, size = conv(resolution, 3, arch.stem_width, 3)
    return _sum(cost, batch_norm(arch.stem_width)), size


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
    cost = _sum(reduce, spatial, expand, batch_norm(g), batch_norm(g), batch_norm(w))
    if stride != 1 or c_in != w:
        shortcut, _ = conv(size, c_in, w, 1, stride=stride)
        cost = _sum(cost, shortcut, batch_norm(w))
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
