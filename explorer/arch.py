"""The architecture record: what a candidate network is, as plain data.

An `Arch` holds primitives only (ints and strings in tuples), so it can be
hashed, compared, serialised and sent to a Ray worker without torch. Its
`key` is a stable content hash of the canonical form: two records that
describe the same network have the same key, in any process, on any machine.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = [
    "BLOCK_FORMS",
    "TEMPLATES",
    "Arch",
    "BlockForm",
    "Stage",
    "Template",
    "anynet_columns",
    "anynet_stage",
    "canonical_json",
    "content_key",
    "make_arch",
    "regnet_arch",
    "regnet_stage_counts",
    "regnet_stages",
    "resnet50",
    "resnext29",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "setting_label",
    "stage_bottleneck_widths",
    "stage_strides",
]

Template = Literal["cifar", "imagenet", "anynet"]
BlockForm = Literal["grouped", "concat", "split"]

# cifar: 3x3 stem, stages at strides 1, 2, 2, ...; imagenet: 7x7/2 stem + 3x3/2 max-pool,
# the same strides (ResNe(X)t); anynet: 3x3/2 stem, every stage at stride 2 (the AnyNet
# and RegNet networks of "Designing Network Design Spaces", pycls's simple_stem_in).
TEMPLATES: tuple[Template, ...] = ("cifar", "imagenet", "anynet")
BLOCK_FORMS: tuple[BlockForm, ...] = ("grouped", "concat", "split")


def setting_label(cardinality: object, bottleneck_width: object) -> str:
    """The paper's name for a setting of C and d, e.g. ``32×4d`` (Table 2's column heads)."""
    return f"{cardinality}×{bottleneck_width}d"


@dataclass(frozen=True)
class Stage:
    """One stage: `depth` bottleneck blocks of output width `width`.

    The grouped 3x3 convolution has `cardinality` groups of
    `bottleneck_width` channels each; its width is their product. `stride`
    applies to the 3x3 convolution (and the projection) of the first block.
    """

    depth: int
    width: int
    cardinality: int
    bottleneck_width: int
    stride: int

    @property
    def group_width(self) -> int:
        return self.cardinality * self.bottleneck_width


@dataclass(frozen=True)
class Arch:
    """A whole ResNeXt network: stem, stages and the block form."""

    template: Template
    stem_width: int
    stages: tuple[Stage, ...]
    block: BlockForm = "grouped"

    @property
    def depths(self) -> tuple[int, ...]:
        return tuple(s.depth for s in self.stages)

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(s.width for s in self.stages)

    @property
    def cardinalities(self) -> tuple[int, ...]:
        return tuple(s.cardinality for s in self.stages)

    @property
    def bottleneck_widths(self) -> tuple[int, ...]:
        return tuple(s.bottleneck_width for s in self.stages)

    @property
    def group_widths(self) -> tuple[int, ...]:
        return tuple(s.group_width for s in self.stages)

    @property
    def num_layers(self) -> int:
        """Weighted layers as the papers count them (ResNet-50 is 50)."""
        return 3 * sum(self.depths) + 2

    def canonical(self) -> dict[str, object]:
        """The record as JSON-ready primitives, in a fixed field order."""
        return {
            "template": self.template,
            "stem_width": self.stem_width,
            "block": self.block,
            "stages": [
                {"depth": s.depth, "width": s.width, "cardinality": s.cardinality,
                 "bottleneck_width": s.bottleneck_width, "stride": s.stride}
                for s in self.stages
            ],
        }

    @functools.cached_property
    def key(self) -> str:
        return content_key(self.canonical())

    def label(self) -> str:
        """A short human name in the paper's style, e.g. ``32×4d [3, 4, 6, 3]``."""
        c, d = self.stages[0].cardinality, self.stages[0].bottleneck_width
        return f"{setting_label(c, d)} {list(self.depths)}"

    @classmethod
    def from_canonical(cls, record: dict[str, object]) -> Arch:
        stages = record["stages"]
        assert isinstance(stages, list)
        return cls(
            template=record["template"],  # type: ignore[arg-type]
            stem_width=int(record["stem_width"]),  # type: ignore[call-overload]
            block=record.get("block", "grouped"),  # type: ignore[arg-type]
            stages=tuple(Stage(**s) for s in stages),
        )


def canonical_json(record: object) -> str:
    """Canonical JSON (sorted keys, no whitespace): the same data is always the same text.
    What content keys hash, what the store writes, what Optuna's list choices read."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"))


def content_key(record: object, length: int = 16) -> str:
    """A stable hash of JSON-serialisable data: the sha256 of its canonical JSON."""
    return hashlib.sha256(canonical_json(record).encode()).hexdigest()[:length]


def stage_strides(template: Template, num_stages: int) -> tuple[int, ...]:
    """The first stage keeps the stem's resolution and every later one halves it; in the
    anynet template every stage halves it."""
    if template == "anynet":
        return (2,) * num_stages
    return (1,) + (2,) * (num_stages - 1)


def anynet_stage(width: int, bottleneck_ratio: int, group_width: int) -> tuple[int, int, int]:
    """(width, cardinality C, bottleneck width d) of a stage given as w, b and g.

    The block's inner width is w/b and its 3x3 convolution has groups of g channels, so
    C = (w/b)/g and d = g. pycls's AnyNet makes the three compatible
    (adjust_block_compatibility) and so does this, with its float arithmetic (b enters as
    the multiplier 1/b, as pycls's bot_mul): the inner width is int(w·(1/b)), at least 1;
    g is cut to at most the inner width; the inner width is rounded (half to even) to a
    multiple of g, at least g; and w becomes int(inner/(1/b)).
    """
    multiplier = 1.0 / bottleneck_ratio
    inner = int(max(1, width * multiplier))
    g = min(group_width, inner)
    inner = max(g, int(round(inner / g) * g))
    return int(inner / multiplier), inner // g, g


def anynet_columns(widths: np.ndarray, bottleneck_ratios: np.ndarray, group_widths: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`anynet_stage` on int64 arrays of equal shape, element by element: (widths,
    cardinalities, bottleneck widths). The same float64 steps, so the same integers."""
    multiplier = 1.0 / bottleneck_ratios
    inner = np.floor(np.maximum(1.0, widths * multiplier)).astype(np.int64)
    g = np.minimum(group_widths, inner)
    inner = np.maximum(g, (np.round(inner / g) * g).astype(np.int64))
    return np.trunc(inner / multiplier).astype(np.int64), inner // g, g


def regnet_stages(depth: int, w_0: int, w_a: float, w_m: float, quantum: int
                  ) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """RegNet's per-stage widths and depths (Radosavovic et al. 2020, eqs. 2-4).

    Block j of `depth` has the linear width u_j = w_0 + w_a·j; it is quantised to
    w_0·w_m^k with k = round(log(u_j/w_0)/log(w_m)), then to a multiple of `quantum`;
    blocks of equal width form a stage. The arithmetic is numpy's float64, step by step
    as pycls's generate_regnet does it, so the widths are pycls's to the last bit.
    """
    continuous = np.arange(depth) * w_a + w_0
    ks = np.round(np.log(continuous / w_0) / np.log(w_m))
    widths = np.round(np.divide(w_0 * np.power(w_m, ks), quantum)).astype(np.int64) * quantum
    stage_widths, stage_depths = np.unique(widths, return_counts=True)
    return tuple(int(w) for w in stage_widths), tuple(int(n) for n in stage_depths)


def regnet_stage_counts(depth: np.ndarray, w_0: np.ndarray, w_a: np.ndarray, w_m: np.ndarray,
                        quantum: int) -> np.ndarray:
    """len(regnet_stages(...)) of many RegNets at once (1-D arrays of equal length): the
    same float64 steps, block by block; a block's width never falls, so the stages are
    one more than the blocks wider than the block before."""
    j = np.arange(int(depth.max(initial=1)))
    continuous = j[None, :] * w_a[:, None] + w_0[:, None]
    ks = np.round(np.log(continuous / w_0[:, None]) / np.log(w_m)[:, None])
    widths = np.round(np.divide(w_0[:, None] * np.power(w_m[:, None], ks), quantum))
    steps = (np.diff(widths, axis=1) != 0) & (j[None, 1:] < depth[:, None])
    return 1 + steps.sum(axis=1)


def regnet_arch(*, template: Template, stem_width: int, depth: int, w_0: int, w_a: float,
                w_m: float, group_width: int, bottleneck_ratio: int, quantum: int,
                block: BlockForm = "grouped") -> Arch:
    """The network a RegNet's parameters describe: pycls's generate_regnet widths and
    depths, each stage's w, b and g made compatible as `anynet_stage` says."""
    widths, depths = regnet_stages(depth, w_0, w_a, w_m, quantum)
    strides = stage_strides(template, len(widths))
    stages = []
    for n, w, s in zip(depths, widths, strides, strict=True):
        width, c, d = anynet_stage(w, bottleneck_ratio, group_width)
        stages.append(Stage(depth=n, width=width, cardinality=c, bottleneck_width=d, stride=s))
    return Arch(template=template, stem_width=stem_width, stages=tuple(stages), block=block)


def stage_bottleneck_widths(d: int, widths: tuple[int, ...]) -> tuple[int, ...]:
    """d of the first stage scaled with each stage's width, rounded down.

    With widths 256·2^k this is torchvision's int(planes · d / 64).
    """
    return tuple((d * w) // widths[0] for w in widths)


def make_arch(
    *,
    template: Template,
    stem_width: int,
    depths: tuple[int, ...],
    widths: tuple[int, ...],
    cardinality: int,
    bottleneck_width: int,
    block: BlockForm = "grouped",
) -> Arch:
    """Build the record the way the spec describes a model: one C and one d."""
    ds = stage_bottleneck_widths(bottleneck_width, widths)
    strides = stage_strides(template, len(depths))
    stages = tuple(
        Stage(depth=n, width=w, cardinality=cardinality, bottleneck_width=d, stride=s)
        for n, w, d, s in zip(depths, widths, ds, strides, strict=True)
    )
    return Arch(template=template, stem_width=stem_width, stages=stages, block=block)


def resnet50(block: BlockForm = "grouped") -> Arch:
    """torchvision's resnet50 (ResNeXt with cardinality 1 and d = 64)."""
    return make_arch(
        template="imagenet", stem_width=64, depths=(3, 4, 6, 3),
        widths=(256, 512, 1024, 2048), cardinality=1, bottleneck_width=64, block=block,
    )


def resnext50_32x4d(block: BlockForm = "grouped") -> Arch:
    return make_arch(
        template="imagenet", stem_width=64, depths=(3, 4, 6, 3),
        widths=(256, 512, 1024, 2048), cardinality=32, bottleneck_width=4, block=block,
    )


def resnext101_32x8d(block: BlockForm = "grouped") -> Arch:
    return make_arch(
        template="imagenet", stem_width=64, depths=(3, 4, 23, 3),
        widths=(256, 512, 1024, 2048), cardinality=32, bottleneck_width=8, block=block,
    )


def resnext29(cardinality: int, d: int, block: BlockForm = "grouped") -> Arch:
    """The official CIFAR ResNeXt-29 (e.g. 8x64d, 16x64d)."""
    return make_arch(
        template="cifar", stem_width=64, depths=(3, 3, 3), widths=(256, 512, 1024),
        cardinality=cardinality, bottleneck_width=d, block=block,
    )
