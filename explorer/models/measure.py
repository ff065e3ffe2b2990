"""Complexity of a built model, measured by tracing it with fvcore.

This is the independent check on `explorer.complexity`'s formulas, so it
counts by the same written convention and nothing else:

- params: every trainable parameter (batch-norm affine included);
- flops: multiply-adds of convolutions and linear layers, one image (batch 1),
  as torchvision and the paper count them — not batch norm, pooling, additions
  or biases;
- acts: output elements of every convolution and linear layer, of the block
  form actually built (the split form's per-branch 1x1s each output a full
  width, so its acts exceed the other forms'; params and flops do not).

fvcore's default FlopCountAnalysis also counts batch norm and adaptive pooling,
and in fvcore 0.1.5 `set_op_handle(name, None)` does not remove a default
handle, so the handle table here is built from scratch on JitModelAnalysis.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from numbers import Number
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

__all__ = [
    "Measured",
    "measure",
]

with warnings.catch_warnings():
    # fvcore.nn scripts a loss at import, which torch 2.13 flags as deprecated;
    # that is fvcore's business, not the user's.
    warnings.simplefilter("ignore", DeprecationWarning)
    from fvcore.nn.jit_analysis import JitModelAnalysis
    from fvcore.nn.jit_handles import (
        addmm_flop_jit,
        conv_flop_jit,
        generic_activation_jit,
        linear_flop_jit,
        matmul_flop_jit,
    )

_Handle = Callable[[list[Any], list[Any]], Any]

# aten op -> its flop handle. torch 2.x's tracer emits aten::_convolution for
# nn.Conv2d and aten::linear for nn.Linear; addmm / matmul / mm are how a
# linear layer traces in other versions or shapes.
_FLOP_HANDLES: Mapping[str, _Handle] = MappingProxyType({
    "aten::_convolution": conv_flop_jit,
    "aten::linear": linear_flop_jit,
    "aten::addmm": addmm_flop_jit,
    "aten::matmul": matmul_flop_jit,
    "aten::mm": matmul_flop_jit,
})

# Ops that multiply-accumulate: if one of these is traced but has no handle,
# counting would silently come out low, so measure() refuses instead.
_MULTIPLY_ACCUMULATE = re.compile(r"conv|linear|mm|matmul|einsum")

_output_elements = generic_activation_jit()


@dataclass(frozen=True)
class Measured:
    """Exact integer counts, comparable with explorer.complexity.count()."""

    params: int
    flops: int
    acts: int


def _as_int(count: Any) -> int:
    """fvcore handles return either a number or a Counter of per-op numbers."""
    if isinstance(count, Counter):
        return int(sum(count.values()))
    assert isinstance(count, Number)
    return int(count)  # type: ignore[call-overload]


def _flops_and_acts(flop_handle: _Handle) -> _Handle:
    """One handle yielding both statistics, so one trace serves both."""

    def handle(inputs: list[Any], outputs: list[Any]) -> Counter[str]:
        return Counter({
            "flops": _as_int(flop_handle(inputs, outputs)),
            "acts": _as_int(_output_elements(inputs, outputs)),
        })

    return handle


def _count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def measure(model: nn.Module, resolution: int, *, in_channels: int = 3) -> Measured:
    """Trace `model` on one resolution x resolution image and count.

    The trace runs in eval mode under no_grad and the model's mode is restored:
    measuring must not advance batch-norm statistics. fvcore's warnings about
    the ops deliberately left uncounted (batch norm, pooling, add, ...) are off.
    """
    reference = next(model.parameters(), None)
    x = torch.zeros(
        1, in_channels, resolution, resolution,
        dtype=torch.float32 if reference is None else reference.dtype,
        device=None if reference is None else reference.device,
    )
    analysis = (
        JitModelAnalysis(model, (x,))
        .set_op_handle(**{op: _flops_and_acts(h) for op, h in _FLOP_HANDLES.items()})
        .unsupported_ops_warnings(False)
        .uncalled_modules_warnings(False)
        .tracer_warnings("none")
    )
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            counts = analysis.by_operator()
    finally:
        model.train(was_training)
    missed = sorted(op for op in analysis.unsupported_ops() if _MULTIPLY_ACCUMULATE.search(op))
    if missed:
        raise RuntimeError(f"traced ops that multiply but have no counting handle: {missed}")
    return Measured(
        params=_count_params(model), flops=int(counts["flops"]), acts=int(counts["acts"])
    )
