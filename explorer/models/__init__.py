"""Torch models built from `Arch` records: the only code that builds torch layers.

`measure` (fvcore) lives in `explorer.models.measure` and is not re-exported,
so building a model does not import fvcore.
"""

from explorer.models.convert import (
    WeightsMismatch,
    convert_state,
    fit_state,
    fuse_state_dict,
    load_any_form,
    unfuse_state_dict,
)
from explorer.models.resnext import ResNeXt, build_model, init_weights

__all__ = [
    "ResNeXt",
    "WeightsMismatch",
    "build_model",
    "convert_state",
    "fit_state",
    "fuse_state_dict",
    "init_weights",
    "load_any_form",
    "unfuse_state_dict",
]
