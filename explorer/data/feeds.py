"""Feeds: how one trial's normalised batches reach its device, gathered from a resident
dataset (`ResidentFeed`) or decoded from an image folder's files by DataLoader workers
(`StreamFeed`), both behind one `Feed` interface."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from explorer.data.folders import open_rgb
from explorer.data.records import Dataset, ImageFiles
from explorer.data.transforms import (
    Normalizer,
    crop_pad,
    eval_transform,
    random_crop_flip,
    train_transform,
)

__all__ = ["Feed", "ResidentFeed", "StreamFeed", "make_feed", "steps_per_epoch", "train_batches"]


def train_batches(
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
    normalize: Normalizer,
    *,
    augment: bool,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of shuffled, augmented, normalised batches from resident tensors.

    The last incomplete batch is dropped (a tiny last batch gives noisy
    batch-norm statistics and, under torch.compile, a recompilation); a set
    smaller than one batch yields a single batch of everything.
    """
    n = labels.numel()
    size = min(batch_size, n)
    perm = torch.randperm(n, generator=generator).to(images.device)
    pad = crop_pad(images.shape[-1])
    for start in range(0, n - size + 1, size):
        idx = perm[start : start + size]
        x = images[idx]
        if augment:
            x = random_crop_flip(x, pad, generator)
        yield normalize(x), labels[idx]


def steps_per_epoch(num_train: int, batch_size: int) -> int:
    return max(1, num_train // batch_size)


def _eval_batches(
    images: torch.Tensor, labels: torch.Tensor, batch_size: int, normalize: Normalizer
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The test split in order, normalised, without augmentation."""
    for start in range(0, labels.numel(), batch_size):
        yield normalize(images[start : start + batch_size]), labels[start : start + batch_size]


class Feed(Protocol):
    """One trial's source of normalised batches on its device."""

    @property
    def num_train(self) -> int: ...

    @property
    def num_test(self) -> int: ...

    def train_epoch(
        self, batch_size: int, generator: torch.Generator, normalize: Normalizer, *,
        augment: bool,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...

    def eval_epoch(
        self, batch_size: int, normalize: Normalizer
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...


@dataclass(frozen=True)
class ResidentFeed:
    """A whole dataset on the trial's device as uint8; batches are gathered from it."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor

    @classmethod
    def on(cls, ds: Dataset, device: torch.device) -> ResidentFeed:
        return cls(ds.train_images.to(device), ds.train_labels.to(device),
                   ds.test_images.to(device), ds.test_labels.to(device))

    @property
    def num_train(self) -> int:
        return int(self.train_labels.numel())

    @property
    def num_test(self) -> int:
        return int(self.test_labels.numel())

    def train_epoch(
        self, batch_size: int, generator: torch.Generator, normalize: Normalizer, *,
        augment: bool,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return train_batches(self.train_images, self.train_labels, batch_size, generator,
                             normalize, augment=augment)

    def eval_epoch(
        self, batch_size: int, normalize: Normalizer
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return _eval_batches(self.test_images, self.test_labels, batch_size, normalize)


_Item = tuple[int, int, int]
"""What a streaming split is indexed by: (file index, epoch seed, position in the epoch)."""


class _FolderSplit(torch.utils.data.Dataset[tuple[torch.Tensor, int]]):
    """One split of an image folder, decoded per item in a loader worker.

    A training item's crop and flip come from a generator seeded by (epoch seed,
    position), so an epoch's images are the same whichever worker decodes them,
    however many workers there are, and after a resume.
    """

    def __init__(self, root: str, paths: np.ndarray, labels: np.ndarray, resolution: int,
                 *, train: bool) -> None:
        self.root, self.paths, self.labels = root, paths, labels
        self.resolution, self.train = resolution, train

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, item: _Item) -> tuple[torch.Tensor, int]:
        index, epoch_seed, position = item
        img = open_rgb(Path(self.root) / self.paths[index].decode())
        if self.train:
            rng = np.random.default_rng([epoch_seed, position])
            pixels = train_transform(img, self.resolution, rng)
        else:
            pixels = eval_transform(img, self.resolution)
        return torch.from_numpy(np.ascontiguousarray(pixels)), int(self.labels[index])


class _EpochBatches(torch.utils.data.Sampler[list[_Item]]):
    """Batches of (file index, `seed`, position) in `order`, the last incomplete batch
    dropped when `drop_last` (as the resident path does; a set smaller than a batch is
    one batch)."""

    def __init__(self, order: np.ndarray, seed: int, batch_size: int, *,
                 drop_last: bool) -> None:
        self.order, self.seed, self.drop_last = order, seed, drop_last
        self.batch_size = min(batch_size, len(order))

    def __iter__(self) -> Iterator[list[_Item]]:
        n = len(self.order)
        last = n - self.batch_size + 1 if self.drop_last else n
        for start in range(0, max(last, 1), self.batch_size):
            positions = range(start, min(start + self.batch_size, n))
            yield [(int(self.order[p]), self.seed, p) for p in positions]

    def __len__(self) -> int:
        n = len(self.order)
        return max(1, n // self.batch_size) if self.drop_last else -(-n // self.batch_size)


class StreamFeed:
    """Batches decoded from files by `workers` DataLoader processes (0: in this process),
    pinned when the device is CUDA and copied onto it one batch ahead of the trainer."""

    def __init__(self, files: ImageFiles, device: torch.device, *, workers: int) -> None:
        self.files, self.device, self.workers = files, device, workers

    @property
    def num_train(self) -> int:
        return len(self.files.train_labels)

    @property
    def num_test(self) -> int:
        return len(self.files.test_labels)

    def _loader(
        self, split: _FolderSplit, sampler: _EpochBatches
    ) -> torch.utils.data.DataLoader[tuple[torch.Tensor, int]]:
        return torch.utils.data.DataLoader(
            split, batch_sampler=sampler, num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
            # Two batches ahead per worker (torch's default): at 224 px with 8 workers that
            # is already ~0.6 GB of uint8 batches in flight.
            prefetch_factor=2 if self.workers else None,
            # Its own generator: the loader's worker seeds must not draw on torch's global RNG.
            generator=torch.Generator().manual_seed(0),
        )

    def train_epoch(
        self, batch_size: int, generator: torch.Generator, normalize: Normalizer, *,
        augment: bool,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        f = self.files
        # Drawn from the trial's generator, which the checkpoint holds: a resumed epoch
        # sees the same order and the same crops.
        order = torch.randperm(self.num_train, generator=generator).numpy()
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        sampler = _EpochBatches(order, seed, batch_size, drop_last=True)
        split = _FolderSplit(f.root, f.train_paths, f.train_labels, f.resolution, train=augment)
        for x, y in _on_device(self._loader(split, sampler), self.device):
            yield normalize(x), y

    def eval_epoch(
        self, batch_size: int, normalize: Normalizer
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        f = self.files
        sampler = _EpochBatches(np.arange(self.num_test), 0, batch_size, drop_last=False)
        split = _FolderSplit(f.root, f.test_paths, f.test_labels, f.resolution, train=False)
        for x, y in _on_device(self._loader(split, sampler), self.device):
            yield normalize(x), y


def _on_device(
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]], device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The batches on `device`, the next one's copy issued before this one is used
    (non-blocking from pinned memory on CUDA, so the copy overlaps the step)."""
    if device.type == "cpu":
        yield from batches
        return
    ahead: tuple[torch.Tensor, torch.Tensor] | None = None
    for x, y in batches:
        moved = (x.to(device, non_blocking=True), y.to(device, non_blocking=True))
        if ahead is not None:
            yield ahead
        ahead = moved
    if ahead is not None:
        yield ahead


def make_feed(data: Dataset | ImageFiles, device: torch.device, *,
              workers: int) -> ResidentFeed | StreamFeed:
    if isinstance(data, ImageFiles):
        return StreamFeed(data, device, workers=workers)
    return ResidentFeed.on(data, device)
