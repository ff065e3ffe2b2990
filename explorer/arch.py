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

Template = Literal["cifar", "imagenet"]
BlockForm = Literal["grouped", "concat", "split"]

TEMPLATES: tuple[Template, ...] = ("cifar", "imagenet")
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
    """The first stage keeps the stem's resolution; every later one halves it."""
    return (1,) + (2,) * (num_stages - 1)


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
