"""Weights mapped between the grouped, concat and split forms of one architecture.

Every form is stored in terms of the grouped ("fused") form, whose state_dict
is torchvision's. Branch i of a block owns slice i of each fused tensor:
output channels [i·d, (i+1)·d) of conv1, conv2 and their batch norms, and, in
the split form, input channels [i·d, (i+1)·d) of conv3. Working on state dicts
(plain name → tensor mappings) keeps the mapping free of module internals, and
lets a torchvision checkpoint load into any form.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import Tensor, nn

__all__ = [
    "WeightsMismatch",
    "convert_state",
    "fit_state",
    "fuse_state_dict",
    "load_any_form",
    "unfuse_state_dict",
]

# A branch parameter: <block>.branches.<i>.<layer>.<name>; its fused name drops ".branches.<i>".
_BRANCH_KEY = re.compile(
    r"^(?P<block>.+)\.branches\.(?P<index>\d+)\.(?P<layer>conv1|bn1|conv2|bn2|conv3)\.(?P<name>\w+)$"
)


def _fused_key(match: re.Match[str]) -> str:
    return f"{match['block']}.{match['layer']}.{match['name']}"


def _slice_dim(match: re.Match[str]) -> int | None:
    """The dimension along which branches partition the fused tensor; None: shared.

    num_batches_tracked is a scalar that every branch advances together.
    """
    if match["name"] == "num_batches_tracked":
        return None
    # A split branch's conv3 consumes its d channels of the fused conv3's input.
    return 1 if match["layer"] == "conv3" else 0


def fuse_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Any form's state_dict as the grouped form's (torchvision's names and order)."""
    parts: dict[str, dict[int, Tensor]] = {}
    dims: dict[str, int | None] = {}
    fused: dict[str, Tensor | None] = {}
    for key, tensor in state.items():
        match = _BRANCH_KEY.match(key)
        if match is None:
            fused[key] = tensor
            continue
        target = _fused_key(match)
        # A placeholder at the first branch keeps torchvision's key order.
        fused.setdefault(target, None)
        parts.setdefault(target, {})[int(match["index"])] = tensor
        dims[target] = _slice_dim(match)
    for target, by_index in parts.items():
        if sorted(by_index) != list(range(len(by_index))):
            raise ValueError(f"{target}: branch indices are not 0..C-1 (got {sorted(by_index)})")
        tensors = [by_index[i] for i in range(len(by_index))]
        dim = dims[target]
        fused[target] = tensors[0].clone() if dim is None else torch.cat(tensors, dim=dim)
    return {key: tensor for key, tensor in fused.items() if tensor is not None}


def unfuse_state_dict(
    fused: Mapping[str, Tensor], like: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """A grouped-form state_dict cut into the form whose state_dict is `like`.

    `like` supplies the names and the slice sizes. Every fused tensor must be
    used, and partitioned tensors used up exactly, so a mismatched architecture
    fails here rather than loading a silently truncated network.
    """
    out: dict[str, Tensor] = {}
    whole: set[str] = set()
    handed_out: dict[str, tuple[int, int]] = {}  # fused key -> (dim, channels handed out)
    for key, ref in like.items():
        match = _BRANCH_KEY.match(key)
        if match is None:
            out[key] = _lookup(fused, key).clone()
            whole.add(key)
            continue
        target = _fused_key(match)
        source = _lookup(fused, target)
        dim = _slice_dim(match)
        if dim is None:
            out[key] = source.clone()
            whole.add(target)
            continue
        size = ref.shape[dim]
        start = int(match["index"]) * size
        if start + size > source.shape[dim]:
            raise ValueError(
                f"{key}: channels {start}:{start + size} exceed {target} {tuple(source.shape)}"
            )
        out[key] = source.narrow(dim, start, size).clone()
        handed_out[target] = (dim, handed_out.get(target, (dim, 0))[1] + size)
    unused = sorted(set(fused) - whole - set(handed_out))
    if unused:
        raise ValueError(f"fused tensors with no place in the target form: {unused}")
    for target, (dim, size) in handed_out.items():
        full = fused[target].shape[dim]
        if size != full:
            raise ValueError(f"{target}: the branches cover {size} of its {full} channels")
    return out


def _lookup(fused: Mapping[str, Tensor], key: str) -> Tensor:
    if key not in fused:
        raise ValueError(f"{key}: missing from the fused state_dict")
    return fused[key]


def convert_state(model_from: nn.Module, model_to: nn.Module) -> None:
    """Load `model_from`'s weights and BN statistics into `model_to`, any forms.

    Both must be built from the same architecture up to the block form;
    load_state_dict(strict=True) then checks every name and shape.
    """
    fused = fuse_state_dict(model_from.state_dict())
    model_to.load_state_dict(unfuse_state_dict(fused, model_to.state_dict()))


class WeightsMismatch(ValueError):
    """A state_dict that does not fit a model; the message names the first key that differs."""


def fit_state(state: Mapping[str, Tensor], like: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A state_dict of any block form (torchvision's layout is the grouped form's) cut into
    the form whose state_dict is `like` (only its names and shapes are read, so `like` may
    be a meta-device model's); WeightsMismatch names the first key whose name or shape
    differs."""
    try:
        fused = fuse_state_dict(state)
    except ValueError as problem:
        raise WeightsMismatch(str(problem)) from None
    wanted = fuse_state_dict(like)
    for key, tensor in wanted.items():
        if key not in fused:
            raise WeightsMismatch(f"{key}: missing from the weights (the model has "
                                  f"{tuple(tensor.shape)})")
        if fused[key].shape != tensor.shape:
            raise WeightsMismatch(f"{key}: shape {tuple(fused[key].shape)} in the weights, "
                                  f"{tuple(tensor.shape)} in the model")
    extra = [key for key in fused if key not in wanted]
    if extra:
        raise WeightsMismatch(f"{extra[0]}: in the weights but not in the model")
    return unfuse_state_dict(fused, like)


def load_any_form(model: nn.Module, state: Mapping[str, Tensor]) -> None:
    """Load a state_dict of any block form into `model`, of any form (see fit_state)."""
    model.load_state_dict(fit_state(state, model.state_dict()))
