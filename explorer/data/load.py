"""The entry points: the data a ``data:`` block names, checked, loaded whole (resized and
subset as it asks) or listed for streaming."""

from __future__ import annotations

from pathlib import Path

from explorer.data.cifar import Fetch, load_cifar
from explorer.data.folders import list_image_folder, load_imagefolder
from explorer.data.records import Dataset, DatasetError, ImageFiles
from explorer.data.small import load_digits, make_synthetic
from explorer.data.transforms import resize_dataset, subset_dataset
from explorer.spec import DataSpec

__all__ = ["check_available", "load_data", "load_dataset"]


_RESIDENT_BUDGET_BYTES = 2 << 30
"""`data.pipeline: auto` decodes a folder whole only when its uint8 images fit in this."""


def check_available(cfg: DataSpec) -> Dataset | None:
    """Raise DatasetError, in one line, when the data a spec names is not there: what a
    run checks once before anything trains (an image folder's layout is checked, not
    decoded; the others are loaded, which also verifies a download). Returns what the
    check loaded (None for a folder), so a run loads its data once."""
    if cfg.dataset in ("imagenet", "imagefolder"):
        root = Path(cfg.root).expanduser()
        if not (root / "train").is_dir():
            raise DatasetError(f"data.root {root} has no train/ folder of class subfolders; "
                               "point data.root at the dataset")
        return None
    return load_dataset(cfg)


def load_dataset(
    cfg: DataSpec,
    *,
    cache_dir: str | Path | None = None,
    fetch: Fetch | None = None,
    subset_seed: int = 0,
) -> Dataset:
    """Load the dataset a ``data:`` block names, resized and subset as it asks.

    `subset_seed` is part of the data's identity, not the trial's: every seed
    of a sweep must see the same subset, or seeds would measure data noise.
    The block's own rules (a known dataset, a positive resolution) were
    checked when it was built.
    """
    name = cfg.dataset
    root = Path(cfg.root).expanduser()
    if name in ("cifar10", "cifar100"):
        ds = load_cifar(root, name, download=cfg.download, fetch=fetch)
    elif name in ("imagenet", "imagefolder"):
        imagenet = name == "imagenet"
        ds = load_imagefolder(root, cfg.resolution, cache_dir=cache_dir, imagenet=imagenet)
    elif name == "digits":
        ds = load_digits(cfg.resolution)
    else:
        ds = make_synthetic(
            num_classes=cfg.num_classes or 10,
            resolution=cfg.resolution,
            train_size=cfg.train_subset or 2048,
            test_size=cfg.test_subset or 512,
        )
    if cfg.num_classes is not None and cfg.num_classes != ds.num_classes:
        raise DatasetError(
            f"data.num_classes is {cfg.num_classes} but {name} at {root} has "
            f"{ds.num_classes} classes; set num_classes: null or fix the data"
        )
    # Subset first: the indices depend on labels only, and resizing fewer images is cheaper.
    ds = subset_dataset(ds, cfg.train_subset, cfg.test_subset, seed=subset_seed)
    return resize_dataset(ds, cfg.resolution)


def load_data(
    cfg: DataSpec,
    *,
    cache_dir: str | Path | None = None,
    fetch: Fetch | None = None,
    subset_seed: int = 0,
    budget_bytes: int = _RESIDENT_BUDGET_BYTES,
) -> Dataset | ImageFiles:
    """The data a ``data:`` block names, resident or listed for streaming.

    An image folder streams when the block says ``pipeline: stream``, or says
    ``auto`` and its decoded uint8 images would exceed `budget_bytes`; every
    other dataset is loaded whole (`load_dataset`).
    """
    if cfg.dataset not in ("imagenet", "imagefolder") or cfg.pipeline == "resident":
        return load_dataset(cfg, cache_dir=cache_dir, fetch=fetch, subset_seed=subset_seed)
    files = list_image_folder(cfg, subset_seed=subset_seed)
    decoded = (len(files.train_labels) + len(files.test_labels)) * 3 * cfg.resolution ** 2
    if cfg.pipeline == "auto" and decoded <= budget_bytes:
        return load_dataset(cfg, cache_dir=cache_dir, fetch=fetch, subset_seed=subset_seed)
    return files
