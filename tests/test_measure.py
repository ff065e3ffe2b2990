"""explorer.models.measure: the counting convention, checked against hand arithmetic.

Expected numbers are worked out by hand in the comments (conv params
c_out·c_in/g·k², flops params·H_out·W_out, acts c_out·H_out·W_out; BN 2·c
params and nothing else; fc c_in·c_out + c_out params, c_in·c_out flops,
c_out acts), not read back from the code under test.
"""

from __future__ import annotations

import logging
import warnings

import pytest
import torch
from torch import nn

from explorer.arch import Arch, Stage
from explorer.models import build_model
from explorer.models.measure import Measured, measure

# cifar, stem 4, one block: width 8, C = 2, d = 2 (group width 4), stride 1, 4x4 input, 10 classes.
#   stem 3x3 3→4      params 108  flops 108·16 = 1728  acts 4·16 = 64    + BN 8
#   conv1 1x1 4→4     params  16  flops  16·16 =  256  acts 64           + BN 8
#   conv2 3x3 4→4 g2  params  72  flops  72·16 = 1152  acts 64           + BN 8
#   conv3 1x1 4→8     params  32  flops  32·16 =  512  acts 128          + BN 16
#   proj  1x1 4→8     params  32  flops  32·16 =  512  acts 128          + BN 16
#   fc 8→10           params  90  flops         80     acts 10
# The split form's two conv3s each output 8·16 = 128: acts + 128.
CIFAR = Arch("cifar", 4, (Stage(1, 8, 2, 2, 1),))
CIFAR_COUNTS = {"params": 406, "flops": 4240, "acts": 458, "split_acts": 586}

# imagenet, stem 4, one stage of two blocks: width 8, C = 2, d = 2, stride 2;
# 16x16 input, 5 classes.
#   stem 7x7/2 3→4 → 8x8   params 588  flops 588·64 = 37632  acts 256      + BN 8
#   max-pool 3x3/2 → 4x4   nothing
#   block 1 (4→8, 3x3 stride 2 → 2x2):
#     conv1 4→4 @4x4 params 16 flops 256 acts 64; conv2 g2 @2x2 params 72 flops 288 acts 16;
#     conv3 4→8 @2x2 params 32 flops 128 acts 32; proj 4→8 /2 params 32 flops 128 acts 32;
#     BNs 8 + 8 + 16 + 16
#   block 2 (8→8 @2x2):
#     conv1 8→4 params 32 flops 128 acts 16; conv2 params 72 flops 288 acts 16;
#     conv3 params 32 flops 128 acts 32; BNs 8 + 8 + 16
#   fc 8→5                  params 45  flops 40  acts 5
# Split: each block's conv3 acts double (+32 + 32).
IMAGENET = Arch("imagenet", 4, (Stage(2, 8, 2, 2, 2),))
IMAGENET_COUNTS = {"params": 1009, "flops": 39016, "acts": 469, "split_acts": 533}

CASES = [(CIFAR, 4, 10, CIFAR_COUNTS), (IMAGENET, 16, 5, IMAGENET_COUNTS)]


@pytest.mark.parametrize("block", ["grouped", "concat", "split"])
@pytest.mark.parametrize(("arch", "resolution", "classes", "counts"), CASES)
def test_counts_match_hand_arithmetic(
    arch: Arch, resolution: int, classes: int, counts: dict[str, int], block: str
) -> None:
    model = build_model(Arch(arch.template, arch.stem_width, arch.stages, block), classes)  # type: ignore[arg-type]
    acts = counts["split_acts"] if block == "split" else counts["acts"]
    assert measure(model, resolution) == Measured(counts["params"], counts["flops"], acts)


def test_measuring_leaves_the_model_as_it_was(caplog: pytest.LogCaptureFixture) -> None:
    model = build_model(IMAGENET, 5).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with warnings.catch_warnings(), caplog.at_level(logging.DEBUG):
        warnings.simplefilter("error")  # fvcore's unsupported-op and tracer chatter is off
        measure(model, 16)
    assert model.training
    # No batch-norm statistics advanced by the trace.
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_frozen_parameters_are_not_counted() -> None:
    model = build_model(CIFAR, 10)
    model.fc.requires_grad_(False)
    assert measure(model, 4).params == CIFAR_COUNTS["params"] - 90


def test_float64_models_are_measured() -> None:
    model = build_model(CIFAR, 10).double()
    assert measure(model, 4).flops == CIFAR_COUNTS["flops"]


class _Einsum(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(4, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bchw,oc->bo", x, self.weight)


def test_an_uncounted_multiply_is_refused_not_ignored() -> None:
    with pytest.raises(RuntimeError, match="einsum"):
        measure(_Einsum(), 4)
