"""explorer: a design-space explorer for ResNeXt-style convolutional networks.

The functions a library user calls, from one place::

    import explorer

    spec = explorer.load_spec("spaces/quickstart.yaml")
    for candidate in explorer.enumerate_spec(spec).candidates:
        print(candidate.arch.label(), candidate.complexity.params)
    model = explorer.build_model(candidate.arch, spec.num_classes)  # needs torch

Each name is imported on first use, so ``import explorer`` loads neither
torch nor ray nor the store: parsing and enumerating a space stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS = {
    "Arch": "explorer.arch",
    "make_arch": "explorer.arch",
    "Spec": "explorer.spec",
    "SpecError": "explorer.spec",
    "load_spec": "explorer.spec",
    "parse_spec": "explorer.spec",
    "Complexity": "explorer.complexity",
    "count": "explorer.complexity",
    "Candidate": "explorer.space",
    "enumerate_spec": "explorer.space",
    "build_model": "explorer.models",
    "measure": "explorer.models.measure",
    "train_trial": "explorer.train",
    "measure_cost": "explorer.cost",
    "Reader": "explorer.store",
}

# The public names are the table's (a type checker sees them through the imports below).
__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:
    from explorer.arch import Arch as Arch
    from explorer.arch import make_arch as make_arch
    from explorer.complexity import Complexity as Complexity
    from explorer.complexity import count as count
    from explorer.cost import measure_cost as measure_cost
    from explorer.models import build_model as build_model
    from explorer.models.measure import measure as measure
    from explorer.space import Candidate as Candidate
    from explorer.space import enumerate_spec as enumerate_spec
    from explorer.spec import Spec as Spec
    from explorer.spec import SpecError as SpecError
    from explorer.spec import load_spec as load_spec
    from explorer.spec import parse_spec as parse_spec
    from explorer.store import Reader as Reader
    from explorer.train import train_trial as train_trial


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'explorer' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
