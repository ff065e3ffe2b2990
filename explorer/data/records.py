"""What the data is: a dataset held in memory (`Dataset`), an image folder listed for
streaming (`ImageFiles`), the one error a data problem raises, and the form of a `Dataset`
that a shared-memory object store hands to other processes without a copy."""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from explorer.errors import ExplorerError

__all__ = [
    "RGB", "Dataset", "DatasetError", "ImageFiles", "dataset_arrays", "dataset_from_arrays",
]


RGB = tuple[float, float, float]


class DatasetError(ExplorerError):
    """A data problem a person can fix; the message is one line naming what and how."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """A whole dataset in memory: uint8 N×3×H×W images and int64 labels per split.

    `augment` is the dataset's default for training-time crop-and-flip: on for
    natural images, off for digits (a flipped 2 is not a 2).
    """

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    augment: bool = True

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def resolution(self) -> int:
        return int(self.train_images.shape[-1])

    def describe(self) -> dict[str, object]:
        """What identifies this data for a trial key (sizes, not pixels)."""
        return {
            "name": self.name,
            "train": int(self.train_labels.numel()),
            "test": int(self.test_labels.numel()),
            "resolution": self.resolution,
            "classes": len(self.classes),
        }


_TENSORS = ("train_images", "train_labels", "test_images", "test_labels")


def dataset_arrays(ds: Dataset) -> dict[str, object]:
    """`ds` with numpy arrays for its tensors: what a shared-memory object store (Ray's)
    hands to other processes without a copy, where a pickled tensor would be copied."""
    fields = {f.name: getattr(ds, f.name) for f in dataclasses.fields(ds)}
    return {**fields, **{name: getattr(ds, name).numpy() for name in _TENSORS}}


def dataset_from_arrays(record: dict[str, object]) -> Dataset:
    """The Dataset of `dataset_arrays`, its tensors viewing the (read-only) arrays."""
    with warnings.catch_warnings():
        # Shared arrays are read-only; the trainer only reads (gathers) from them.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        tensors = {name: torch.from_numpy(record[name]) for name in _TENSORS}
    return Dataset(**{**record, **tensors})  # type: ignore[arg-type]


@dataclass(frozen=True, eq=False)
class ImageFiles:
    """An image folder listed, not decoded: paths (relative to `root`, as a numpy bytes
    array so forked workers never touch a Python object per file) and labels per split."""

    name: str
    root: str
    train_paths: np.ndarray
    train_labels: np.ndarray
    test_paths: np.ndarray
    test_labels: np.ndarray
    classes: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resolution: int
    augment: bool = True

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "train": len(self.train_labels),
            "test": len(self.test_labels),
            "resolution": self.resolution,
            "classes": len(self.classes),
            "pipeline": "stream",
        }
