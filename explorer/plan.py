"""Which trials an experiment needs: candidates × seeds, each with a content key.

Which candidates those are is the search strategy's business (explorer/search.py).

A trial's key adds the data, the recipe and the seed to the architecture's
key: equal keys mean equal work, so a trial finished anywhere is reused
rather than retrained. Needs neither torch nor ray.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from explorer.arch import Arch, content_key
from explorer.space import Candidate
from explorer.spec import DataSpec, Spec, TrainSpec, without_later_defaults

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
        "data": without_later_defaults("data", spec.data.model_dump(mode="json")),
        "num_classes": spec.num_classes,
        "train": without_later_defaults(
            "train", {k: v for k, v in train.items() if k not in _RECIPE_EXCLUDES}),
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
    return [_plan(spec, recipe, arch, tuple(dict.fromkeys(spaces_of[key])), seed)
            for key, arch in archs.items() for seed in spec.train.seeds]


def plan_trial(spec: Spec, candidate: Candidate, seed: int,
               spaces: tuple[str, ...] | None = None) -> TrialPlan:
    """One candidate with one seed (a search that picks candidates as it goes)."""
    return _plan(spec, recipe_record(spec), candidate.arch, spaces or (candidate.space,), seed)


def _plan(spec: Spec, recipe: dict[str, Any], arch: Arch, spaces: tuple[str, ...],
          seed: int) -> TrialPlan:
    return TrialPlan(
        trial_key=trial_key(arch, recipe, seed), candidate_key=arch.key, spaces=spaces,
        arch=arch, seed=seed, num_classes=spec.num_classes, data=spec.data, train=spec.train,
    )
