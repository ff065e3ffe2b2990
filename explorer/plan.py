"""Which trials an experiment needs: candidates × seeds, each with a content key.

A trial's key adds the data, the recipe and the seed to the architecture's
key: equal keys mean equal work, so a trial finished anywhere is reused
rather than retrained. Needs neither torch nor ray.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from explorer.arch import Arch, content_key
from explorer.space import AXIS_FIELDS, Candidate, Dropped, Enumeration, base_candidate, realise
from explorer.spec import DataSpec, Range, Spec, TrainSpec

# Recipe fields that change what a trial computes. `seeds` picks which trials
# exist, not what one of them does; `compile` and `channels_last` change speed
# but not results beyond float rounding, so they still count: equal work must
# be the same computation.
_RECIPE_EXCLUDES = {"seeds"}


@dataclass(frozen=True)
class TrialPlan:
    """One unit of work: a candidate trained on a dataset with a recipe and a seed."""

    trial_key: str
    candidate_key: str
    spaces: tuple[str, ...]
    arch: Arch
    seed: int
    num_classes: int
    data: DataSpec
    train: TrainSpec

    def to_config(self) -> dict[str, Any]:
        """JSON-ready primitives, as shipped to a Ray worker."""
        return {
            "trial_key": self.trial_key,
            "candidate_key": self.candidate_key,
            "spaces": list(self.spaces),
            "arch": self.arch.canonical(),
            "seed": self.seed,
            "num_classes": self.num_classes,
            "data": self.data.model_dump(mode="json"),
            "train": self.train.model_dump(mode="json"),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TrialPlan:
        return cls(
            trial_key=config["trial_key"],
            candidate_key=config["candidate_key"],
            spaces=tuple(config["spaces"]),
            arch=Arch.from_canonical(config["arch"]),
            seed=int(config["seed"]),
            num_classes=int(config["num_classes"]),
            data=DataSpec.model_validate(config["data"]),
            train=TrainSpec.model_validate(config["train"]),
        )


def recipe_record(spec: Spec) -> dict[str, Any]:
    """What, besides the architecture and seed, determines a trial's result."""
    train = spec.train.model_dump(mode="json")
    return {
        "data": spec.data.model_dump(mode="json"),
        "num_classes": spec.num_classes,
        "train": {k: v for k, v in train.items() if k not in _RECIPE_EXCLUDES},
    }


def trial_key(arch: Arch, recipe: dict[str, Any], seed: int) -> str:
    return content_key({"arch": arch.canonical(), "recipe": recipe, "seed": seed})


def plan_trials(spec: Spec, candidates: Iterable[Candidate]) -> list[TrialPlan]:
    """Every candidate × seed, once per network even when it is in several spaces."""
    recipe = recipe_record(spec)
    spaces_of: dict[str, list[str]] = {}
    archs: dict[str, Arch] = {}
    for c in candidates:
        spaces_of.setdefault(c.key, []).append(c.space)
        archs[c.key] = c.arch
    return [
        TrialPlan(
            trial_key=trial_key(arch, recipe, seed), candidate_key=key,
            spaces=tuple(dict.fromkeys(spaces_of[key])), arch=arch, seed=seed,
            num_classes=spec.num_classes, data=spec.data, train=spec.train,
        )
        for key, arch in archs.items()
        for seed in spec.train.seeds
    ]


def sample_point(space_axes: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """One random point: a uniform choice on list axes, a draw from range axes."""
    point: dict[str, Any] = {}
    for name in AXIS_FIELDS:
        if name not in space_axes:
            continue
        axis = space_axes[name]
        if isinstance(axis, Range):
            point[name] = draw(axis, rng)
        else:
            point[name] = axis[int(rng.integers(len(axis)))]
    return point


def draw(axis: Range, rng: np.random.Generator) -> int | float:
    if axis.log:
        value = float(np.exp(rng.uniform(np.log(axis.low), np.log(axis.high))))
    else:
        value = float(rng.uniform(axis.low, axis.high))
    return round(value) if axis.integer else value


def sample_candidates(
    spec: Spec, n: int, seed: int, spaces: Sequence[str] | None = None
) -> tuple[list[Candidate], list[Dropped]]:
    """n distinct feasible candidates per space, drawn with a seeded generator.

    Infeasible draws (tolerance, constraints) are dropped before anything
    trains; drawing stops after 50·n tries so a tiny feasible region ends.
    """
    rng = np.random.default_rng(seed)
    base = base_candidate(spec)
    kept: list[Candidate] = []
    dropped: list[Dropped] = []
    for name in spaces or list(spec.spaces):
        axes = spec.spaces[name].axes.present()
        seen: set[str] = set()
        for _ in range(50 * n):
            if len(seen) >= n:
                break
            result = realise(spec, name, sample_point(axes, rng), base)
            if isinstance(result, Dropped):
                dropped.append(result)
            elif result.key not in seen:
                seen.add(result.key)
                kept.append(result)
    return kept, dropped


def candidates_for(spec: Spec, enumeration: Enumeration) -> list[Candidate]:
    """The candidates a sweep trains: the grid, or a seeded sample of it."""
    if spec.search.strategy == "random":
        assert spec.search.n_trials is not None
        return sample_candidates(spec, spec.search.n_trials, spec.search.seed)[0]
    return list(enumeration.candidates)
