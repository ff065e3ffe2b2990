"""Torch models built from `Arch` records: the only code that builds torch layers.

`measure` (fvcore) lives in `explorer.models.measure` and is not re-exported,
so building a model does not import fvcore.
"""

from explorer.models.convert import convert_state, fuse_state_dict, unfuse_state_dict
from explorer.models.resnext import ResNeXt, build_model, init_weights

__all__ = [
    "ResNeXt",
    "build_model",
    "convert_state",
    "fuse_state_dict",
    "init_weights",
    "unfuse_state_dict",
]
