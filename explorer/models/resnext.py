"""ResNeXt networks built from an `Arch` record, in any of the paper's three block forms.

The grouped form mirrors torchvision's ResNet/ResNeXt module for module and name
for name (conv1, bn1, layer1..layerN, downsample.0/.1, fc), so a torchvision
state_dict loads into it unchanged. The concat and split forms (Fig. 3 b and a)
exist to check the paper's claim that the three forms are one function; their
batch norms sit where that equivalence holds exactly, and
`explorer.models.convert` maps weights between the forms.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from explorer.arch import BLOCK_FORMS, TEMPLATES, Arch, BlockForm, Stage

__all__ = [
    "Bottleneck",
    "Branch",
    "ConcatBottleneck",
    "GroupedBottleneck",
    "ResNeXt",
    "SplitBottleneck",
    "build_model",
    "init_weights",
]


def _conv(
    in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1
) -> nn.Conv2d:
    # Bias-free: every convolution feeds a batch norm, whose shift makes a bias redundant.
    return nn.Conv2d(
        in_channels, out_channels, kernel_size=kernel, stride=stride,
        padding=kernel // 2, groups=groups, bias=False,
    )


def _shortcut(in_channels: int, width: int, stride: int) -> nn.Sequential | None:
    """A projection where the identity cannot be added (torchvision's rule), else none.

    One rule for both templates: it yields the projection of ResNeXt-29's first
    block (64 → 256) as well as torchvision's.
    """
    if in_channels == width and stride == 1:
        return None
    return nn.Sequential(_conv(in_channels, width, 1, stride), nn.BatchNorm2d(width))


class Bottleneck(nn.Module):
    """The residual wrapper shared by the three forms; only `transform` differs.

    Subclasses register their layers before `relu` and `downsample` so that
    state_dict keys come out in torchvision's order.
    """

    bn3: nn.BatchNorm2d
    relu: nn.ReLU
    downsample: nn.Sequential | None

    def transform(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.transform(x) + identity)


class GroupedBottleneck(Bottleneck):
    """Fig. 3(c): one grouped 3x3 convolution; torchvision's `Bottleneck` exactly."""

    def __init__(
        self, in_channels: int, width: int, cardinality: int, bottleneck_width: int, stride: int
    ) -> None:
        super().__init__()
        group_width = cardinality * bottleneck_width
        self.conv1 = _conv(in_channels, group_width, 1)
        self.bn1 = nn.BatchNorm2d(group_width)
        # Stride on the 3x3, not the first 1x1: torchvision's "ResNet v1.5".
        self.conv2 = _conv(group_width, group_width, 3, stride, groups=cardinality)
        self.bn2 = nn.BatchNorm2d(group_width)
        self.conv3 = _conv(group_width, width, 1)
        self.bn3 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_channels, width, stride)

    def transform(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out))


class Branch(nn.Module):
    """One of the C paths of Fig. 3(a)/(b): 1x1 in→d, BN, ReLU, 3x3 d→d, BN, ReLU.

    Per-branch BNs over d channels are, together, exactly one BN over the C·d
    concatenated channels (BN is per channel). With `out_channels` (the split
    form) the path ends in its own 1x1 d→width and no BN: a BN there would not
    commute with the sum, so the split form normalises after summing.

    `cardinality` records how many branches share the fused layer, so that the
    initialisation can draw from the fused layer's distribution.
    """

    def __init__(
        self,
        in_channels: int,
        bottleneck_width: int,
        stride: int,
        cardinality: int,
        out_channels: int | None = None,
    ) -> None:
        super().__init__()
        self.cardinality = cardinality
        self.conv1 = _conv(in_channels, bottleneck_width, 1)
        self.bn1 = nn.BatchNorm2d(bottleneck_width)
        self.conv2 = _conv(bottleneck_width, bottleneck_width, 3, stride)
        self.bn2 = nn.BatchNorm2d(bottleneck_width)
        self.conv3 = None if out_channels is None else _conv(bottleneck_width, out_channels, 1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return out if self.conv3 is None else self.conv3(out)


class ConcatBottleneck(Bottleneck):
    """Fig. 3(b): C branches concatenated, then one 1x1 C·d→width and BN."""

    def __init__(
        self, in_channels: int, width: int, cardinality: int, bottleneck_width: int, stride: int
    ) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            Branch(in_channels, bottleneck_width, stride, cardinality)
            for _ in range(cardinality)
        )
        self.conv3 = _conv(cardinality * bottleneck_width, width, 1)
        self.bn3 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_channels, width, stride)

    def transform(self, x: Tensor) -> Tensor:
        out = torch.cat([branch(x) for branch in self.branches], dim=1)
        return self.bn3(self.conv3(out))


class SplitBottleneck(Bottleneck):
    """Fig. 3(a): C branches each ending in a 1x1 d→width, summed, then BN.

    The sum of the per-branch 1x1s equals one 1x1 over the concatenation, so
    this is the concat form with its last convolution split by input channels.
    """

    def __init__(
        self, in_channels: int, width: int, cardinality: int, bottleneck_width: int, stride: int
    ) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            Branch(in_channels, bottleneck_width, stride, cardinality, out_channels=width)
            for _ in range(cardinality)
        )
        self.bn3 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_channels, width, stride)

    def transform(self, x: Tensor) -> Tensor:
        branches = iter(self.branches)
        out = next(branches)(x)
        for branch in branches:
            out = out + branch(x)
        return self.bn3(out)


_BLOCKS: dict[BlockForm, type[Bottleneck]] = {
    "grouped": GroupedBottleneck,
    "concat": ConcatBottleneck,
    "split": SplitBottleneck,
}


def _stage(in_channels: int, stage: Stage, block: type[Bottleneck]) -> nn.Sequential:
    """`depth` blocks; only the first one strides or changes width."""
    blocks = [
        block(
            in_channels if i == 0 else stage.width,
            stage.width,
            stage.cardinality,
            stage.bottleneck_width,
            stage.stride if i == 0 else 1,
        )
        for i in range(stage.depth)
    ]
    return nn.Sequential(*blocks)


class ResNeXt(nn.Module):
    """Stem, `len(arch.stages)` stages named layer1..layerN, global pool, linear head."""

    def __init__(self, arch: Arch, num_classes: int) -> None:
        super().__init__()
        self.arch = arch
        if arch.template == "imagenet":
            self.conv1 = _conv(3, arch.stem_width, 7, stride=2)
        elif arch.template == "anynet":
            self.conv1 = _conv(3, arch.stem_width, 3, stride=2)
        else:
            self.conv1 = _conv(3, arch.stem_width, 3)
        self.bn1 = nn.BatchNorm2d(arch.stem_width)
        self.relu = nn.ReLU(inplace=True)
        # Identity keeps one forward for every template and adds no state.
        self.maxpool: nn.Module = (
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
            if arch.template == "imagenet"
            else nn.Identity()
        )
        block = _BLOCKS[arch.block]
        in_channels = arch.stem_width
        self.stage_names: tuple[str, ...] = tuple(
            f"layer{i}" for i in range(1, len(arch.stages) + 1)
        )
        for name, stage in zip(self.stage_names, arch.stages, strict=True):
            self.add_module(name, _stage(in_channels, stage, block))
            in_channels = stage.width
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(in_channels, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """The last stage's feature map, before the global pool."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for name in self.stage_names:
            x = self.get_submodule(name)(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(self.avgpool(self.features(x)), 1))


def init_weights(model: nn.Module, zero_init_residual: bool = False) -> None:
    """torchvision's initialisation, drawn from torch's global RNG.

    Convolutions: kaiming normal, fan_out, ReLU gain; batch norms: weight 1,
    bias 0; the linear head keeps nn.Linear's default (as torchvision does).

    torch computes a grouped convolution's fan_out from its whole weight
    (C·d·k²), a branch convolution's from its own (d·k²). The branches of the
    concat and split forms are therefore drawn as slices of the fused layer
    would be, with std / sqrt(C): all three forms start from the same
    distribution, so comparing them trains like with like.
    """
    fused_copies = {
        conv: m.cardinality
        for m in model.modules()
        if isinstance(m, Branch)
        for conv in (m.conv1, m.conv2)
    }
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            copies = fused_copies.get(m, 1)
            if copies > 1:
                with torch.no_grad():
                    m.weight.mul_(1.0 / math.sqrt(copies))
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if zero_init_residual:
        # Each block then starts as the identity (Goyal et al. 2017).
        for m in model.modules():
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)


def _check(arch: Arch, num_classes: int) -> None:
    problems = []
    if arch.template not in TEMPLATES:
        problems.append(f"template must be one of {TEMPLATES} (got {arch.template!r})")
    if arch.block not in BLOCK_FORMS:
        problems.append(f"block must be one of {BLOCK_FORMS} (got {arch.block!r})")
    if arch.stem_width < 1:
        problems.append(f"stem_width must be positive (got {arch.stem_width})")
    if not arch.stages:
        problems.append("stages must not be empty")
    for i, s in enumerate(arch.stages):
        fields = (s.depth, s.width, s.cardinality, s.bottleneck_width, s.stride)
        if min(fields) < 1:
            problems.append(f"stages[{i}]: every field must be positive (got {s})")
    if num_classes < 1:
        problems.append(f"num_classes must be positive (got {num_classes})")
    if problems:
        raise ValueError("; ".join(problems))


def build_model(arch: Arch, num_classes: int, *, zero_init_residual: bool = False) -> ResNeXt:
    """The network `arch` describes, freshly initialised.

    Randomness comes only from torch's global RNG and build_model never seeds
    it: the caller owns the seed (call torch.manual_seed first to reproduce a
    model), so a trial's seeding policy lives in one place.
    """
    _check(arch, num_classes)
    model = ResNeXt(arch, num_classes)
    init_weights(model, zero_init_residual=zero_init_residual)
    return model
