"""Class-per-folder trees (``root/train/<class>/*``, ``root/val/<class>/*``, the ImageNet
layout): decoded whole at a resolution (cached only in a folder the caller names), or
listed for streaming (`ImageFiles`), decoding only a sample for the channel statistics."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from explorer.data.records import RGB, Dataset, DatasetError, ImageFiles
from explorer.data.transforms import channel_stats, eval_transform, stratified_subset
from explorer.files import atomic_write
from explorer.spec import DataSpec

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["list_image_folder", "load_imagefolder", "open_rgb"]


_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm")

_STATS_SAMPLE = 512  # images decoded for a streamed folder's channel statistics


def load_imagefolder(
    root: Path, resolution: int, *, cache_dir: str | Path | None = None, imagenet: bool = False
) -> Dataset:
    """``root/train/<class>/*`` and ``root/val/<class>/*`` decoded at `resolution`.

    Decoding JPEGs dominates, so the decoded arrays may be cached, but only in
    a folder the caller names: writing next to someone's data is a surprise.
    The cache key covers every file's path, size and mtime and the resolution;
    a cached array is memory-mapped (read-only), not loaded.
    """
    train_dir, val_dir = root / "train", root / "val"
    for d in (train_dir, val_dir):
        if not d.is_dir():
            raise DatasetError(
                f"{d} not found; an image folder needs {root}/train/<class>/ and "
                f"{root}/val/<class>/ (ImageNet cannot be downloaded automatically)"
            )
    classes = tuple(sorted(p.name for p in train_dir.iterdir() if p.is_dir()))
    if not classes:
        raise DatasetError(f"{train_dir} has no class subfolders")
    train_files = _list_images(train_dir, classes, train_dir)
    val_files = _list_images(val_dir, classes, train_dir)
    train_x, train_y = _decode_cached(train_files, resolution, cache_dir)
    test_x, test_y = _decode_cached(val_files, resolution, cache_dir)
    if imagenet:
        mean, std = _IMAGENET_MEAN, _IMAGENET_STD
    else:
        mean, std = channel_stats(train_x)
    name = "imagenet" if imagenet else "imagefolder"
    return Dataset(name, train_x, train_y, test_x, test_y, classes, mean, std, augment=True)


def _list_images(split: Path, classes: tuple[str, ...], train_dir: Path) -> list[tuple[Path, int]]:
    index = {c: i for i, c in enumerate(classes)}
    files: list[tuple[Path, int]] = []
    for sub in sorted(p for p in split.iterdir() if p.is_dir()):
        if sub.name not in index:
            raise DatasetError(f"{sub} is a class that {train_dir} does not have")
        label = index[sub.name]
        files.extend(
            (f, label) for f in sorted(sub.iterdir()) if f.suffix.lower() in _IMAGE_SUFFIXES
        )
    if not files:
        raise DatasetError(f"{split} has no images ({', '.join(_IMAGE_SUFFIXES)})")
    return files


def _decode_cached(
    files: list[tuple[Path, int]], resolution: int, cache_dir: str | Path | None
) -> tuple[torch.Tensor, torch.Tensor]:
    labels = np.array([label for _, label in files], dtype=np.int64)
    if cache_dir is None:
        return torch.from_numpy(_decode_all(files, resolution)), torch.from_numpy(labels)
    stamp = [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f, _ in files]
    key = hashlib.sha256(repr((resolution, stamp)).encode()).hexdigest()[:16]
    cache = Path(cache_dir).expanduser() / f"imagefolder-{key}.npy"
    if cache.is_file():
        # Mapped, not loaded: pages are read as batches touch them, from the page cache
        # that every process on the machine shares.
        mapped = np.load(cache, mmap_mode="r")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            return torch.from_numpy(mapped), torch.from_numpy(labels)
    images = _decode_all(files, resolution)
    atomic_write(cache, lambda tmp: _save_array(tmp, images))
    return torch.from_numpy(images), torch.from_numpy(labels)


def _save_array(path: Path, array: np.ndarray) -> None:
    # Through a file object: given a path, np.save appends ".npy" to a temp name.
    with open(path, "wb") as f:
        np.save(f, array)


def _decode_all(files: list[tuple[Path, int]], resolution: int) -> np.ndarray:
    out = np.empty((len(files), 3, resolution, resolution), dtype=np.uint8)
    for i, (path, _) in enumerate(files):
        out[i] = _decode_image(path, resolution)
    return out


def _decode_image(path: Path, resolution: int) -> np.ndarray:
    """One image as 3×R×R uint8: shorter side resized to R (bilinear), centre crop."""
    from PIL import Image

    rgb = open_rgb(path)
    w, h = rgb.size
    scale = resolution / min(w, h)
    size = (max(resolution, round(w * scale)), max(resolution, round(h * scale)))
    rgb = rgb.resize(size, Image.Resampling.BILINEAR)
    left, top = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    rgb = rgb.crop((left, top, left + resolution, top + resolution))
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)


def list_image_folder(cfg: DataSpec, *, subset_seed: int = 0) -> ImageFiles:
    """List ``root/train`` and ``root/val`` (subset as the block asks), decoding only a
    seeded sample of training images for the channel statistics (ImageNet: its constants)."""
    root = Path(cfg.root).expanduser()
    train_dir, val_dir = root / "train", root / "val"
    for d in (train_dir, val_dir):
        if not d.is_dir():
            raise DatasetError(f"{d} not found; an image folder needs {root}/train/<class>/ and "
                               f"{root}/val/<class>/")
    classes = tuple(sorted(p.name for p in train_dir.iterdir() if p.is_dir()))
    if not classes:
        raise DatasetError(f"{train_dir} has no class subfolders")
    if cfg.num_classes is not None and cfg.num_classes != len(classes):
        raise DatasetError(f"data.num_classes is {cfg.num_classes} but {root} has "
                           f"{len(classes)} classes; set num_classes: null or fix the data")
    train_p, train_y = _split_arrays(root, _list_images(train_dir, classes, train_dir),
                                     cfg.train_subset, subset_seed)
    test_p, test_y = _split_arrays(root, _list_images(val_dir, classes, train_dir),
                                   cfg.test_subset, subset_seed)
    imagenet = cfg.dataset == "imagenet"
    if imagenet:
        mean, std = _IMAGENET_MEAN, _IMAGENET_STD
    else:
        mean, std = _sampled_stats(str(root), train_p, cfg.resolution, subset_seed)
    return ImageFiles(cfg.dataset, str(root), train_p, train_y, test_p, test_y, classes,
                      mean, std, cfg.resolution)


def _split_arrays(
    root: Path, files: list[tuple[Path, int]], subset: int | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    labels = np.array([label for _, label in files], dtype=np.int64)
    paths = np.array([str(f.relative_to(root)).encode() for f, _ in files])
    if subset is not None and subset != len(labels):
        idx = stratified_subset(torch.from_numpy(labels), subset, seed=seed).numpy()
        paths, labels = paths[idx], labels[idx]
    return paths, labels


def _sampled_stats(root: str, paths: np.ndarray, resolution: int, seed: int) -> tuple[RGB, RGB]:
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(paths), size=min(_STATS_SAMPLE, len(paths)), replace=False))
    sample = np.stack([
        eval_transform(open_rgb(Path(root) / paths[i].decode()), resolution) for i in pick
    ])
    return channel_stats(torch.from_numpy(sample))


def open_rgb(path: Path) -> Image.Image:
    """An image file decoded to RGB; an unreadable file is a DatasetError naming it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise DatasetError(f"{path} is not a readable image ({exc})") from exc
