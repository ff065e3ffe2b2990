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

__all__ = [
    "Arch", "Candidate", "Complexity", "Reader", "Spec", "SpecError", "__version__",
    "build_model", "count", "enumerate_spec", "load_spec", "make_arch", "measure",
    "measure_cost", "parse_spec", "train_trial",
]

if TYPE_CHECKING:
    from explorer.arch import Arch, make_arch
    from explorer.complexity import Complexity, count
    from explorer.cost import measure_cost
    from explorer.models import build_model
    from explorer.models.measure import measure
    from explorer.space import Candidate, enumerate_spec
    from explorer.spec import Spec, SpecError, load_spec, parse_spec
    from explorer.store import Reader
    from explorer.train import train_trial


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'explorer' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
