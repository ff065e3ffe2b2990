"""Which trials an experiment needs: candidates × seeds, each with a content key.

Which candidates those are is the search strategy's business (explorer/search.py).

A trial's key adds the data, the recipe and the seed to the architecture's
key: equal keys mean equal work, so a trial finished anywhere is reused
rather than retrained. The data counts by what it is (dataset, resolution,
subsets, ...; an image folder by a fingerprint of its file list), not by where
it lives (`data.root`, `data.download`), so machines and users whose data sit
in different folders share their trials. Keys made before (version 1, with the
root) stay valid: each plan carries its version-1 key as an alias, which the
store's lookups accept too. Needs neither torch nor ray.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from explorer.arch import Arch, content_key
from explorer.space import Candidate
from explorer.spec import FOLDER_DATASETS, DataSpec, Spec, TrainSpec, without_later_defaults

__all__ = [
    "DATA_PLACE",
    "TrialPlan",
    "plan_trial",
    "plan_trials",
    "trial_key",
]

# Recipe fields that change what a trial computes. `seeds` picks which trials
# exist, not what one of them does; `compile` and `channels_last` change speed
# but not results beyond float rounding, so they still count: equal work must
# be the same computation.
_RECIPE_EXCLUDES = {"seeds"}
# Where the data lives, not what it is: out of the trial key (version 2 on).
DATA_PLACE = ("root", "download")


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
    aliases: tuple[str, ...] = ()  # the same trial's earlier keys (version 1: with the root)

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


def _recipe_record(spec: Spec) -> dict[str, Any]:
    """What, besides the architecture and seed, determines a trial's result: the data by
    what it is (an image folder by its file list), the recipe, the number of classes."""
    record = _legacy_recipe_record(spec)
    data = {k: v for k, v in record["data"].items() if k not in DATA_PLACE}
    if spec.data.dataset in FOLDER_DATASETS:
        data["files"] = _folder_fingerprint(Path(spec.data.root).expanduser())
    return {**record, "data": data}


def _legacy_recipe_record(spec: Spec) -> dict[str, Any]:
    """The recipe record of version-1 keys, which held where the data lives too."""
    train = spec.train.model_dump(mode="json")
    return {
        "data": without_later_defaults("data", spec.data.model_dump(mode="json")),
        "num_classes": spec.num_classes,
        "train": without_later_defaults(
            "train", {k: v for k, v in train.items() if k not in _RECIPE_EXCLUDES}),
    }


def _folder_fingerprint(root: Path) -> str:
    """sha256 of an image folder's file list: every file under train/ and val/, by its path
    relative to `root` and its size. Two folders with other files are never the same data;
    a copy elsewhere is. Reads directory entries and sizes only, never a file; once per
    folder and process (cached on the folder and its train/ and val/ modification times)."""
    stamps = tuple(_mtime(root / split) for split in ("train", "val"))
    return _fingerprint(str(root.resolve()), stamps)


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


@functools.lru_cache(maxsize=8)
def _fingerprint(root: str, stamps: tuple[int | None, ...]) -> str:
    digest = hashlib.sha256()
    for split in ("train", "val"):
        for relative, size in _files(os.path.join(root, split), split):
            digest.update(f"{relative}\0{size}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def _files(folder: str, relative: str) -> Iterable[tuple[str, int]]:
    """(path relative to the root, size) of every file under `folder`, in name order."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:  # absent (checked before a run) or unreadable: no files
        return
    for entry in entries:
        path = f"{relative}/{entry.name}"
        if entry.is_dir():
            yield from _files(entry.path, path)
        elif entry.is_file():
            yield path, entry.stat().st_size


def trial_key(arch: Arch, recipe: dict[str, Any], seed: int) -> str:
    return content_key({"arch": arch.canonical(), "recipe": recipe, "seed": seed})


def plan_trials(spec: Spec, candidates: Iterable[Candidate]) -> list[TrialPlan]:
    """Every candidate × seed, once per network even when it is in several spaces."""
    recipe, legacy = _recipe_record(spec), _legacy_recipe_record(spec)
    spaces_of: dict[str, list[str]] = {}
    archs: dict[str, Arch] = {}
    for c in candidates:
        spaces_of.setdefault(c.key, []).append(c.space)
        archs[c.key] = c.arch
    return [_plan(spec, recipe, legacy, arch, tuple(dict.fromkeys(spaces_of[key])), seed)
            for key, arch in archs.items() for seed in spec.train.seeds]


def plan_trial(spec: Spec, candidate: Candidate, seed: int,
               spaces: tuple[str, ...] | None = None) -> TrialPlan:
    """One candidate with one seed (a search that picks candidates as it goes)."""
    return _plan(spec, _recipe_record(spec), _legacy_recipe_record(spec), candidate.arch,
                 spaces or (candidate.space,), seed)


def _plan(spec: Spec, recipe: dict[str, Any], legacy: dict[str, Any], arch: Arch,
          spaces: tuple[str, ...], seed: int) -> TrialPlan:
    return TrialPlan(
        trial_key=trial_key(arch, recipe, seed), candidate_key=arch.key, spaces=spaces,
        arch=arch, seed=seed, num_classes=spec.num_classes, data=spec.data, train=spec.train,
        aliases=(trial_key(arch, legacy, seed),),
    )
