"""explorer.models: torchvision's structure and counts, both templates, three equal forms.

Golden numbers are torchvision's published figures (docs/CONVENTIONS.md), never values
read back from the code under test.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from explorer.arch import Arch, BlockForm, Stage, resnet50, resnext29, resnext50_32x4d
from explorer.models import (
    ResNeXt,
    build_model,
    convert_state,
    fuse_state_dict,
    unfuse_state_dict,
)
from explorer.models.measure import Measured, measure
from explorer.models.resnext import (
    Bottleneck,
    Branch,
    ConcatBottleneck,
    GroupedBottleneck,
    SplitBottleneck,
)

BN_ENTRIES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def torchvision_resnet_keys(depths: tuple[int, ...]) -> list[str]:
    """torchvision.models.ResNet's state_dict keys, written out from its source."""
    keys = ["conv1.weight", *(f"bn1.{e}" for e in BN_ENTRIES)]
    for stage, depth in enumerate(depths, start=1):
        for block in range(depth):
            prefix = f"layer{stage}.{block}"
            for i in (1, 2, 3):
                keys += [f"{prefix}.conv{i}.weight", *(f"{prefix}.bn{i}.{e}" for e in BN_ENTRIES)]
            if block == 0:
                keys += [
                    f"{prefix}.downsample.0.weight",
                    *(f"{prefix}.downsample.1.{e}" for e in BN_ENTRIES),
                ]
    return [*keys, "fc.weight", "fc.bias"]


def torchvision_resnet_layout(depths: tuple[int, ...], groups: int = 1,
                              width_per_group: int = 64, num_classes: int = 1000
                              ) -> list[tuple[str, tuple[int, ...]]]:
    """torchvision.models.ResNet(Bottleneck, depths, groups=, width_per_group=)'s state_dict
    as (name, shape) in order, written out from torchvision/models/resnet.py: the stem
    conv1 (64, 3, 7, 7); per stage `planes` = 64·2^s and width = int(planes ·
    width_per_group / 64) · groups; conv1 1×1 inplanes → width, conv2 3×3 grouped
    (width, width / groups), conv3 1×1 width → 4·planes; a projection (downsample.0/.1)
    in each stage's first block, where inplanes != 4·planes or the stride is 2."""
    def bn(prefix: str, n: int) -> list[tuple[str, tuple[int, ...]]]:
        return [(f"{prefix}.{e}", () if e == "num_batches_tracked" else (n,))
                for e in BN_ENTRIES]

    layout = [("conv1.weight", (64, 3, 7, 7)), *bn("bn1", 64)]
    inplanes = 64
    for stage, depth in enumerate(depths):
        planes = 64 * 2 ** stage
        width = int(planes * (width_per_group / 64.0)) * groups
        for block in range(depth):
            prefix = f"layer{stage + 1}.{block}"
            layout += [(f"{prefix}.conv1.weight", (width, inplanes, 1, 1)),
                       *bn(f"{prefix}.bn1", width),
                       (f"{prefix}.conv2.weight", (width, width // groups, 3, 3)),
                       *bn(f"{prefix}.bn2", width),
                       (f"{prefix}.conv3.weight", (planes * 4, width, 1, 1)),
                       *bn(f"{prefix}.bn3", planes * 4)]
            if block == 0:
                layout += [(f"{prefix}.downsample.0.weight", (planes * 4, inplanes, 1, 1)),
                           *bn(f"{prefix}.downsample.1", planes * 4)]
            inplanes = planes * 4
    return [*layout, ("fc.weight", (num_classes, 512 * 4)), ("fc.bias", (num_classes,))]


def block_of(model: nn.Module, name: str) -> Bottleneck:
    block = model.get_submodule(name)
    assert isinstance(block, Bottleneck)
    return block


# --- torchvision's reference models ------------------------------------------------------------


@pytest.fixture(scope="module")
def reference_models() -> dict[str, ResNeXt]:
    torch.manual_seed(0)
    return {"resnet50": build_model(resnet50(), 1000),
            "resnext50_32x4d": build_model(resnext50_32x4d(), 1000)}


@pytest.fixture(scope="module")
def reference_counts(reference_models: dict[str, ResNeXt]) -> dict[str, Measured]:
    return {name: measure(model, 224) for name, model in reference_models.items()}


@pytest.mark.parametrize(
    ("name", "params", "flops"),
    [
        ("resnet50", 25_557_032, 4_089_184_256),
        ("resnext50_32x4d", 25_028_904, 4_230_479_872),
    ],
)
def test_reference_counts_match_torchvision(
    reference_counts: dict[str, Measured], name: str, params: int, flops: int
) -> None:
    assert reference_counts[name].params == params
    assert reference_counts[name].flops == flops


def test_resnet50_state_dict_is_torchvision(reference_models: dict[str, ResNeXt]) -> None:
    state = reference_models["resnet50"].state_dict()
    assert list(state) == torchvision_resnet_keys((3, 4, 6, 3))
    assert len(state) == 320  # len(torchvision.models.resnet50().state_dict())


@pytest.mark.parametrize("form", ["grouped", "concat", "split"])
@pytest.mark.parametrize(("name", "groups", "width_per_group"),
                         [("resnet50", 1, 64), ("resnext50_32x4d", 32, 4)])
def test_state_dict_layout_is_torchvisions(name: str, groups: int, width_per_group: int,
                                           form: BlockForm) -> None:
    """Every name and shape, in order; the branch forms' once fused (models/convert.py)."""
    arch = {"resnet50": resnet50, "resnext50_32x4d": resnext50_32x4d}[name](form)
    with torch.device("meta"):  # shapes only: nothing is allocated
        state = build_model(arch, 1000).state_dict()
    fused = state if form == "grouped" else fuse_state_dict(state)
    expected = torchvision_resnet_layout((3, 4, 6, 3), groups, width_per_group)
    assert [(k, tuple(v.shape)) for k, v in fused.items()] == expected
    assert [k for k, _ in expected] == torchvision_resnet_keys((3, 4, 6, 3))


@pytest.mark.parametrize(
    ("key", "shape"),
    [
        ("conv1.weight", (64, 3, 7, 7)),
        ("layer1.0.conv1.weight", (128, 64, 1, 1)),
        ("layer1.0.conv2.weight", (128, 4, 3, 3)),
        ("layer1.0.conv3.weight", (256, 128, 1, 1)),
        ("layer1.0.downsample.0.weight", (256, 64, 1, 1)),
        ("layer2.0.conv2.weight", (256, 8, 3, 3)),
        ("layer3.5.conv2.weight", (512, 16, 3, 3)),
        ("layer4.0.conv2.weight", (1024, 32, 3, 3)),
        ("layer4.2.bn3.running_var", (2048,)),
        ("fc.weight", (1000, 2048)),
        ("fc.bias", (1000,)),
    ],
)
def test_resnext50_tensor_shapes(
    reference_models: dict[str, ResNeXt], key: str, shape: tuple[int, ...]
) -> None:
    assert tuple(reference_models["resnext50_32x4d"].state_dict()[key].shape) == shape


def test_resnext50_layers_are_torchvision_v1_5(reference_models: dict[str, ResNeXt]) -> None:
    model = reference_models["resnext50_32x4d"]
    assert (model.conv1.kernel_size, model.conv1.stride, model.conv1.padding) == (
        (7, 7), (2, 2), (3, 3))
    assert isinstance(model.maxpool, nn.MaxPool2d)
    assert (model.maxpool.kernel_size, model.maxpool.stride, model.maxpool.padding) == (3, 2, 1)
    first = block_of(model, "layer2.0")
    assert isinstance(first, GroupedBottleneck) and first.downsample is not None
    # The stride sits on the grouped 3x3 (and the projection), not on the first 1x1.
    assert first.conv1.stride == (1, 1)
    assert (first.conv2.stride, first.conv2.groups, first.conv2.padding) == ((2, 2), 32, (1, 1))
    assert first.downsample[0].stride == (2, 2)
    assert block_of(model, "layer2.1").downsample is None
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(conv.bias is None for conv in convs)
    assert model.fc.bias is not None


# --- both templates, any stages ----------------------------------------------------------------


def tiny(template: str, *stages: tuple[int, int, int, int, int], block: str = "grouped",
         stem: int = 8) -> Arch:
    return Arch(template=template, stem_width=stem,  # type: ignore[arg-type]
                stages=tuple(Stage(*s) for s in stages), block=block)  # type: ignore[arg-type]


@pytest.mark.parametrize("block", ["grouped", "concat", "split"])
def test_cifar_template_pools_8x8_at_32(block: str) -> None:
    # ResNeXt-29's layout (3 stages, strides 1/2/2, d doubling) at 1/16 of its widths.
    arch = tiny("cifar", (1, 16, 2, 2, 1), (1, 32, 2, 4, 2), (1, 64, 2, 8, 2), block=block)
    model = build_model(arch, 10).eval()
    x = torch.randn(2, 3, 32, 32)
    assert model.features(x).shape == (2, 64, 8, 8)
    assert model(x).shape == (2, 10)
    assert isinstance(model.maxpool, nn.Identity)
    assert (model.conv1.kernel_size, model.conv1.stride, model.conv1.padding) == (
        (3, 3), (1, 1), (1, 1))


def test_resnext29_projects_in_its_first_block() -> None:
    model = build_model(resnext29(8, 64), 10)
    first = block_of(model, "layer1.0")
    assert first.downsample is not None
    assert first.downsample[0].weight.shape == (256, 64, 1, 1)
    assert first.downsample[0].stride == (1, 1)
    assert block_of(model, "layer1.1").downsample is None
    # C·d = 8·256 in stage 3
    assert model.state_dict()["layer3.0.conv2.weight"].shape == (2048, 256, 3, 3)


def test_imagenet_template_downsamples_32x() -> None:
    arch = tiny("imagenet", (1, 16, 2, 2, 1), (1, 32, 2, 4, 2), (1, 64, 2, 8, 2),
                (1, 128, 2, 16, 2))
    model = build_model(arch, 7).eval()
    x = torch.randn(3, 3, 64, 64)
    assert model.features(x).shape == (3, 128, 2, 2)
    assert model(x).shape == (3, 7)


@pytest.mark.parametrize(
    ("strides", "size"), [((1,), 32), ((2,), 16), ((1, 1, 2), 16), ((2, 2, 2, 2, 2), 1)]
)
def test_stage_strides_come_from_the_record(strides: tuple[int, ...], size: int) -> None:
    arch = tiny("cifar", *((1, 8, 2, 2, s) for s in strides))
    model = build_model(arch, 3).eval()
    assert model.features(torch.randn(1, 3, 32, 32)).shape == (1, 8, size, size)
    # Equal widths: only a stride can force a projection.
    for name, s in zip(model.stage_names, strides, strict=True):
        first = block_of(model, f"{name}.0")
        assert (first.downsample is not None) == (s != 1)


@pytest.mark.parametrize(
    "arch",
    [
        Arch("moon", 8, (Stage(1, 8, 1, 8, 1),)),  # type: ignore[arg-type]
        Arch("cifar", 8, ()),
        Arch("cifar", 8, (Stage(1, 8, 0, 8, 1),)),
        Arch("cifar", 8, (Stage(1, 8, 1, 8, 1),), block="fused"),  # type: ignore[arg-type]
    ],
)
def test_bad_records_are_refused(arch: Arch) -> None:
    with pytest.raises(ValueError):
        build_model(arch, 10)


# --- initialisation ------------------------------------------------------------------------------


def test_init_follows_the_callers_seed_and_never_reseeds() -> None:
    arch = tiny("cifar", (1, 8, 2, 2, 1), (1, 16, 2, 4, 2))
    torch.manual_seed(3)
    a, b = build_model(arch, 4).state_dict(), build_model(arch, 4).state_dict()
    torch.manual_seed(3)
    again = build_model(arch, 4).state_dict()
    assert all(torch.equal(a[k], again[k]) for k in a)
    assert not torch.equal(a["layer1.0.conv2.weight"], b["layer1.0.conv2.weight"])


def test_init_is_torchvisions() -> None:
    torch.manual_seed(0)
    model = build_model(tiny("cifar", (2, 256, 8, 16, 1), stem=64), 10)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
    block = block_of(model, "layer1.1")
    assert isinstance(block, GroupedBottleneck)
    # kaiming normal, fan_out = out_channels · k², ReLU gain.
    assert block.conv2.weight.std().item() == pytest.approx(math.sqrt(2 / (128 * 9)), rel=0.03)
    assert block.conv3.weight.std().item() == pytest.approx(math.sqrt(2 / 256), rel=0.03)
    assert block.conv2.weight.mean().item() == pytest.approx(0, abs=0.01)


@pytest.mark.parametrize("form", ["concat", "split"])
def test_branches_start_from_the_grouped_forms_distribution(form: str) -> None:
    torch.manual_seed(0)
    model = build_model(tiny("cifar", (2, 256, 8, 16, 1), stem=64, block=form), 10)
    block = block_of(model, "layer1.1")
    assert isinstance(block, ConcatBottleneck | SplitBottleneck)
    branches = [b for b in block.branches if isinstance(b, Branch)]
    assert len(branches) == 8
    conv1 = torch.cat([b.conv1.weight.flatten() for b in branches])
    conv2 = torch.cat([b.conv2.weight.flatten() for b in branches])
    # As slices of the fused 256→128 1x1 and 128→128 grouped 3x3 would be drawn.
    assert conv1.std().item() == pytest.approx(math.sqrt(2 / 128), rel=0.03)
    assert conv2.std().item() == pytest.approx(math.sqrt(2 / (128 * 9)), rel=0.03)
    conv3s = [b.conv3.weight.flatten() for b in branches if b.conv3 is not None]
    assert len(conv3s) == (8 if form == "split" else 0)
    if conv3s:
        # Its fan_out, 256, is the fused conv3's too: no correction.
        assert torch.cat(conv3s).std().item() == pytest.approx(math.sqrt(2 / 256), rel=0.03)


@pytest.mark.parametrize("block", ["grouped", "concat", "split"])
def test_zero_init_residual_zeroes_only_the_last_bn(block: str) -> None:
    arch = tiny("cifar", (2, 8, 2, 2, 1), (1, 16, 2, 4, 2), block=block)
    model = build_model(arch, 4, zero_init_residual=True)
    zeroed = {k for k, v in model.state_dict().items()
              if k.endswith("weight") and v.abs().sum() == 0}
    assert zeroed == {"layer1.0.bn3.weight", "layer1.1.bn3.weight", "layer2.0.bn3.weight"}
    assert not any(v.abs().sum() == 0 for k, v in build_model(arch, 4).state_dict().items()
                   if k.endswith("weight"))


# --- the three forms are one function ------------------------------------------------------------

EQUIVALENCE_ARCHS = {
    # C > 1 everywhere, cardinality changing between stages, a stride-only projection.
    "cifar": (tiny("cifar", (2, 16, 4, 2, 1), (1, 16, 4, 2, 2), (2, 32, 2, 8, 2)), 16),
    # Odd C, four stages, the 7x7/2 stem and max-pool.
    "imagenet": (tiny("imagenet", (1, 12, 3, 2, 1), (2, 24, 3, 4, 2), (1, 48, 3, 8, 2),
                      (1, 48, 5, 3, 1)), 64),
}


def randomise_batch_norms(model: nn.Module, generator: torch.Generator) -> None:
    """Make every BN a different, non-trivial affine map in eval mode."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            assert m.weight is not None and m.bias is not None
            assert m.running_mean is not None and m.running_var is not None
            with torch.no_grad():
                m.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                m.bias.copy_(torch.randn(n, generator=generator) * 0.5)
                m.running_mean.copy_(torch.randn(n, generator=generator) * 0.5)
                m.running_var.copy_(torch.rand(n, generator=generator) * 1.5 + 0.5)


def three_forms(arch: Arch) -> dict[str, nn.Module]:
    """The grouped model with random BNs, and its weights mapped onto the other two forms."""
    torch.manual_seed(0)
    grouped = build_model(arch, 10).double()
    randomise_batch_norms(grouped, torch.Generator().manual_seed(1))
    models: dict[str, nn.Module] = {"grouped": grouped}
    for block in ("concat", "split"):
        model = build_model(Arch(arch.template, arch.stem_width, arch.stages, block), 10).double()
        convert_state(grouped, model)
        models[block] = model
    return {name: m.eval() for name, m in models.items()}


@pytest.mark.parametrize("template", list(EQUIVALENCE_ARCHS))
def test_three_forms_compute_the_same_function(template: str) -> None:
    arch, resolution = EQUIVALENCE_ARCHS[template]
    models = three_forms(arch)
    x = torch.randn(4, 3, resolution, resolution, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = {name: m(x) for name, m in models.items()}
    assert out["grouped"].std() > 0.1  # a real signal, not a collapsed network
    for name in ("concat", "split"):
        assert (out[name] - out["grouped"]).abs().max().item() <= 1e-6, name


def test_equivalence_check_can_fail() -> None:
    """Negative control: a wrong mapping (two branches swapped) is caught."""
    arch, resolution = EQUIVALENCE_ARCHS["cifar"]
    models = three_forms(arch)
    concat = models["concat"]
    block = block_of(concat, "layer2.0")
    assert isinstance(block, ConcatBottleneck)
    state = concat.state_dict()
    swapped = {k.replace("branches.0.", "branches.#.").replace("branches.1.", "branches.0.")
               .replace("branches.#.", "branches.1."): v
               for k, v in state.items() if k.startswith("layer2.0.branches.")}
    assert len(block.branches) == 4 and swapped
    concat.load_state_dict({**state, **swapped})
    x = torch.randn(2, 3, resolution, resolution, dtype=torch.float64)
    with torch.no_grad():
        assert (concat(x) - models["grouped"](x)).abs().max().item() > 1e-3


def test_mapping_round_trips_exactly_and_keeps_torchvision_names() -> None:
    arch, _ = EQUIVALENCE_ARCHS["imagenet"]
    models = three_forms(arch)
    original = models["grouped"].state_dict()
    for name in ("concat", "split"):
        fused = fuse_state_dict(models[name].state_dict())
        assert list(fused) == list(original), name
        assert all(torch.equal(fused[k], original[k]) for k in original), name
    back = build_model(arch, 10).double()
    convert_state(models["split"], back)
    assert all(torch.equal(back.state_dict()[k], original[k]) for k in original)


def test_branch_owns_its_slice_of_the_fused_tensors() -> None:
    arch, _ = EQUIVALENCE_ARCHS["cifar"]
    models = three_forms(arch)
    fused = models["grouped"].state_dict()
    split = models["split"].state_dict()
    # layer3.0: C = 2, d = 8, width 32.
    assert torch.equal(split["layer3.0.branches.1.conv1.weight"],
                       fused["layer3.0.conv1.weight"][8:16])
    assert torch.equal(split["layer3.0.branches.1.conv2.weight"],
                       fused["layer3.0.conv2.weight"][8:16])
    assert torch.equal(split["layer3.0.branches.1.bn2.running_var"],
                       fused["layer3.0.bn2.running_var"][8:16])
    assert torch.equal(split["layer3.0.branches.1.conv3.weight"],
                       fused["layer3.0.conv3.weight"][:, 8:16])
    assert torch.equal(split["layer3.0.bn3.running_mean"], fused["layer3.0.bn3.running_mean"])


def test_mapping_refuses_a_different_architecture() -> None:
    source = build_model(tiny("cifar", (1, 16, 2, 4, 1)), 10)
    for stages in [((1, 16, 4, 2, 1),), ((1, 16, 2, 4, 1), (1, 16, 2, 4, 1)), ((1, 16, 4, 4, 1),)]:
        target = build_model(tiny("cifar", *stages, block="concat"), 10)
        with pytest.raises((ValueError, RuntimeError)):
            convert_state(source, target)
    with pytest.raises(ValueError, match="no place"):
        unfuse_state_dict({**source.state_dict(), "extra.weight": torch.zeros(1)},
                          source.state_dict())


@pytest.mark.parametrize("block", ["concat", "split"])
def test_branch_forms_train(block: str) -> None:
    model = build_model(tiny("imagenet", (1, 8, 2, 2, 1), (1, 16, 2, 4, 2), block=block), 5)
    loss = model(torch.randn(2, 3, 32, 32)).logsumexp(1).sum()
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
