"""Datasets as resident uint8 tensors or streamed image files, and the input pipelines.

A resident dataset is loaded whole into memory as one uint8 tensor of shape
N×3×H×W (NCHW, RGB, values 0..255) plus int64 labels. Small-image training
is bound by per-sample Python, not by arithmetic, so the trainer moves the
whole (sub)set onto its device once and does augmentation and normalisation
as a few batched tensor operations per step (the airbench approach).

An image folder too large for that (`data.pipeline`, `load_data`) is listed,
not decoded (`ImageFiles`), and streamed: DataLoader workers decode each batch
with the standard ImageNet transforms, and the trainer reads it through the
same `Feed` interface as resident data.

Datasets:

- ``cifar10`` / ``cifar100``: the official python-pickle layout under
  ``root``; optional download of the official archive, md5-verified and
  extracted atomically (a temp folder renamed into place, `explorer.files`).
- ``imagenet`` / ``imagefolder``: ``root/train/<class>/*`` and
  ``root/val/<class>/*``. Resident: decoded with Pillow, shorter side resized
  to ``resolution`` then centre-cropped; decoded arrays cached only in an
  explicit ``cache_dir`` (never inside the user's data folder). Streamed: see
  the section "Streaming image folders".
- ``digits``: scikit-learn's bundled 8×8 digits (no download), the offline
  default.
- ``synthetic``: seeded random images, for throughput measurements only.

Mean and std are per channel in 0..1 units, computed from the full training
split (before subsetting; a streamed folder: a seeded sample of 512 of its
images), except ``imagenet`` which uses the customary ImageNet constants.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import pickle
import shutil
import tarfile
import urllib.request
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from explorer.errors import ExplorerError
from explorer.files import atomic_directory, atomic_write, scratch_file
from explorer.spec import DataSpec

if TYPE_CHECKING:
    from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm")


Fetch = Callable[[str, Path], None]
"""Writes the resource at a URL to a local path (the default uses urllib)."""


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


# ---------------------------------------------------------------------------
# Entry point


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


# ---------------------------------------------------------------------------
# CIFAR: official python layout, verified download, atomic extraction

@dataclass(frozen=True)
class Archive:
    """An official archive: where it comes from, its md5, the folder it holds."""

    url: str
    md5: str
    folder: str

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


CIFAR_ARCHIVES: dict[str, Archive] = {
    "cifar10": Archive(
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        folder="cifar-10-batches-py",
    ),
    "cifar100": Archive(
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        folder="cifar-100-python",
    ),
}

_CIFAR_FILES: dict[str, tuple[tuple[str, ...], tuple[str, ...], str, str, str]] = {
    # train files, test files, meta file, label key, class-name key
    "cifar10": (
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        ("test_batch",),
        "batches.meta",
        "labels",
        "label_names",
    ),
    "cifar100": (("train",), ("test",), "meta", "fine_labels", "fine_label_names"),
}


def urllib_fetch(url: str, dest: Path) -> None:
    """Download with the standard library; file:// URLs work too (used by tests)."""
    with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as out:
        shutil.copyfileobj(response, out, length=1 << 20)


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def ensure_extracted(
    root: Path, archive: Archive, *, download: bool, fetch: Fetch | None = None
) -> Path:
    """Return ``root/<folder>``, extracting (and if allowed downloading) it first.

    An archive already lying in `root` is used as it is and never replaced:
    if its md5 is wrong the user is told to delete it, because silently
    downloading over someone's file hides a real problem (a disk, a proxy).
    A download goes to a temp file that is deleted on any failure, and the
    extraction goes to a temp folder renamed into place only when complete,
    so an interrupted run never leaves something that looks like data.
    """
    target = root / archive.folder
    if target.is_dir():
        return target
    if root.exists() and not root.is_dir():
        raise DatasetError(f"data.root {root} is a file, not a folder; point data.root at the "
                           f"folder that holds (or is to hold) {archive.folder}/")
    try:
        return _fetch_and_extract(root, archive, download=download, fetch=fetch)
    except OSError as exc:  # the scratch file or folder: a read-only root, a full disk
        raise DatasetError(
            f"cannot write {archive.folder}/ under data.root {root} "
            f"({exc.strerror or type(exc).__name__}); point data.root at a writable folder, "
            f"or put the extracted {archive.folder}/ there"
        ) from exc


def _fetch_and_extract(root: Path, archive: Archive, *, download: bool,
                       fetch: Fetch | None) -> Path:
    """ensure_extracted's writing part: extract the archive lying in `root`, or download it
    (when allowed) and extract it."""
    target = root / archive.folder
    local = root / archive.filename
    if local.is_file():
        _check_md5(local, archive, downloaded=False)
        _extract_atomically(local, root, archive)
        return target
    if not download:
        raise DatasetError(
            f"{target} not found; set data.download: true, or put the extracted "
            f"{archive.folder}/ (or {archive.filename}) under {root}"
        )
    with scratch_file(root, prefix=f".{archive.filename}.", suffix=".part") as tmp:
        try:
            (fetch or urllib_fetch)(archive.url, tmp)
        except Exception as exc:  # any transport failure is the same fix for a person
            raise DatasetError(
                f"download of {archive.url} failed ({type(exc).__name__}: {exc}); check the "
                f"network, or put {archive.filename} under {root} by hand"
            ) from exc
        _check_md5(tmp, archive, downloaded=True)
        _extract_atomically(tmp, root, archive)
    return target


def _check_md5(path: Path, archive: Archive, *, downloaded: bool) -> None:
    actual = file_md5(path)
    if actual == archive.md5:
        return
    if downloaded:
        raise DatasetError(
            f"downloaded {archive.url} has md5 {actual}, expected {archive.md5} (partial or "
            f"corrupt; nothing was kept); run again, or put a good {archive.filename} under "
            f"{path.parent}"
        )
    raise DatasetError(
        f"{path} has md5 {actual}, expected {archive.md5} (partial or corrupt archive); "
        f"delete it and run again with data.download: true, or replace it with {archive.url}"
    )


def _extract_atomically(path: Path, root: Path, archive: Archive) -> None:
    """Extract `archive.folder` from `path` into `root`: all of it, or nothing."""
    with atomic_directory(root / archive.folder) as folder:
        try:
            with tarfile.open(path, "r:*") as tar:
                # The archive holds <folder>/...: unpacked beside `folder`, it becomes `folder`.
                tar.extractall(folder.parent, filter="data")
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise DatasetError(
                f"{path} could not be extracted ({type(exc).__name__}: {exc}); delete it and "
                f"run again, or replace it with {archive.url}"
            ) from exc
        if not folder.is_dir():
            raise DatasetError(
                f"{path} does not contain {archive.folder}/; replace it with {archive.url}"
            )


def load_cifar(
    root: Path, name: str, *, download: bool = False, fetch: Fetch | None = None
) -> Dataset:
    """CIFAR-10 or CIFAR-100 (fine labels) from the official python pickles."""
    archive = CIFAR_ARCHIVES[name]
    folder = ensure_extracted(root, archive, download=download, fetch=fetch)
    return read_cifar_folder(folder, name)


def read_cifar_folder(folder: Path, name: str) -> Dataset:
    """Read an extracted CIFAR folder (no network, no writes)."""
    train_files, test_files, meta_file, label_key, names_key = _CIFAR_FILES[name]
    meta = _unpickle(folder / meta_file, folder)
    names = meta.get(names_key)
    if not isinstance(names, list):
        raise DatasetError(f"{folder / meta_file} has no {names_key} list")
    classes = tuple(str(c) for c in names)
    train_x, train_y = _read_cifar_batches(folder, train_files, label_key)
    test_x, test_y = _read_cifar_batches(folder, test_files, label_key)
    mean, std = channel_stats(train_x)
    return Dataset(name, train_x, train_y, test_x, test_y, classes, mean, std, augment=True)


def _unpickle(path: Path, folder: Path) -> dict[str, object]:
    if not path.is_file():
        raise DatasetError(
            f"{path} is missing: {folder} is incomplete; delete the folder and run again "
            f"with data.download: true"
        )
    try:
        with open(path, "rb") as f:
            record = pickle.load(f, encoding="latin1")
    except Exception as exc:
        raise DatasetError(
            f"{path} is not a readable CIFAR pickle ({type(exc).__name__}: {exc}); delete "
            f"{folder} and run again with data.download: true"
        ) from exc
    if not isinstance(record, dict):
        raise DatasetError(f"{path} is not a CIFAR pickle (no dictionary inside)")
    return record


def _read_cifar_batches(
    folder: Path, files: Sequence[str], label_key: str
) -> tuple[torch.Tensor, torch.Tensor]:
    images: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    for file in files:
        record = _unpickle(folder / file, folder)
        try:
            data = np.asarray(record["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            label = np.asarray(record[label_key], dtype=np.int64)
        except (KeyError, ValueError) as exc:
            raise DatasetError(f"{folder / file} has an unexpected layout ({exc})") from exc
        if len(label) != len(data):
            raise DatasetError(f"{folder / file} has {len(data)} images but {len(label)} labels")
        images.append(data)
        labels.append(label)
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))


# ---------------------------------------------------------------------------
# Class-per-folder trees (ImageNet layout)


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
        mean, std = IMAGENET_MEAN, IMAGENET_STD
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
            (f, label) for f in sorted(sub.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES
        )
    if not files:
        raise DatasetError(f"{split} has no images ({', '.join(IMAGE_SUFFIXES)})")
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
        out[i] = decode_image(path, resolution)
    return out


def decode_image(path: Path, resolution: int) -> np.ndarray:
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


# ---------------------------------------------------------------------------
# Bundled and synthetic data


def load_digits(resolution: int, *, test_size: int = 360, split_seed: int = 0) -> Dataset:
    """scikit-learn's bundled 1,797 digits as 3-channel uint8 images.

    Values 0..16 become 0..255 (×255/16, rounded); grey is replicated to three
    channels so the same networks apply; upsampling to `resolution` is
    bilinear (smooth strokes, unlike blocky nearest). The stratified split is
    fixed (seeded) so that every trial sees the same test set: 1,437 / 360.
    """
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_load_digits()
    grey = np.rint(np.asarray(bunch.images, dtype=np.float64) * (255.0 / 16.0)).astype(np.uint8)
    labels = np.asarray(bunch.target, dtype=np.int64)
    index = np.arange(len(labels))
    train_idx, test_idx = train_test_split(
        index, test_size=test_size, stratify=labels, random_state=split_seed
    )
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    images = torch.from_numpy(grey)[:, None].expand(-1, 3, -1, -1).contiguous()
    images = resize_images(images, resolution)
    train_x, test_x = images[train_idx], images[test_idx]
    train_y = torch.from_numpy(labels[train_idx])
    test_y = torch.from_numpy(labels[test_idx])
    mean, std = channel_stats(train_x)
    classes = tuple(str(i) for i in range(10))
    return Dataset("digits", train_x, train_y, test_x, test_y, classes, mean, std, augment=False)


def make_synthetic(
    *, num_classes: int = 10, resolution: int = 32, train_size: int = 2048,
    test_size: int = 512, seed: int = 0,
) -> Dataset:
    """Uniform random images and labels: the cost of training, nothing to learn."""
    gen = torch.Generator().manual_seed(seed)
    n = train_size + test_size
    images = torch.randint(0, 256, (n, 3, resolution, resolution), generator=gen, dtype=torch.uint8)
    labels = torch.randint(0, num_classes, (n,), generator=gen, dtype=torch.int64)
    classes = tuple(f"class_{i}" for i in range(num_classes))
    return Dataset(
        "synthetic", images[:train_size], labels[:train_size], images[train_size:],
        labels[train_size:], classes, (0.5, 0.5, 0.5), (0.2887, 0.2887, 0.2887), augment=True,
    )


# ---------------------------------------------------------------------------
# Whole-dataset transforms: statistics, resizing, stratified subsets


RGB = tuple[float, float, float]


def channel_stats(images: torch.Tensor) -> tuple[RGB, RGB]:
    """Per-channel mean and (population) std in 0..1 units, in float64 chunks."""
    total = torch.zeros(3, dtype=torch.float64)
    total_sq = torch.zeros(3, dtype=torch.float64)
    for chunk in images.split(4096):
        x = chunk.to(torch.float64)
        total += x.sum(dim=(0, 2, 3))
        total_sq += (x * x).sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (total_sq / count - mean * mean).clamp_min(0).sqrt()
    m = (mean / 255).tolist()
    s = (std / 255).clamp_min(1e-3).tolist()
    return (m[0], m[1], m[2]), (s[0], s[1], s[2])


def resize_images(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """Resize uint8 N×3×H×W to square `resolution` (bilinear, antialiased when shrinking)."""
    if images.shape[-1] == resolution and images.shape[-2] == resolution:
        return images
    out = []
    for chunk in images.split(2048):
        x = F.interpolate(
            chunk.float(), size=(resolution, resolution), mode="bilinear",
            align_corners=False, antialias=resolution < chunk.shape[-1],
        )
        out.append(x.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)


def resize_dataset(ds: Dataset, resolution: int) -> Dataset:
    """The same data at another resolution; mean/std are kept from the original size."""
    if ds.resolution == resolution:
        return ds
    return Dataset(
        ds.name, resize_images(ds.train_images, resolution), ds.train_labels,
        resize_images(ds.test_images, resolution), ds.test_labels, ds.classes, ds.mean,
        ds.std, ds.augment,
    )


def stratified_subset(labels: torch.Tensor, count: int, *, seed: int = 0) -> torch.Tensor:
    """Sorted indices of `count` items whose class proportions match `labels`.

    Per-class quotas are proportional (largest remainder, ties to the lower
    class id) so the subset is as balanced as the full set; which items fill
    each quota is drawn from a generator seeded with `seed` alone.
    """
    n = labels.numel()
    if count <= 0 or count > n:
        raise DatasetError(f"subset size must be between 1 and {n} (got {count})")
    classes, counts = torch.unique(labels, return_counts=True)
    exact = counts.double() * count / n
    quota = exact.floor().long()
    remainder = exact - quota
    short = count - int(quota.sum())
    order = sorted(range(len(classes)), key=lambda i: (-float(remainder[i]), int(classes[i])))
    for i in order[:short]:
        quota[i] += 1
    gen = torch.Generator().manual_seed(seed)
    chosen = []
    for c, q in zip(classes.tolist(), quota.tolist(), strict=True):
        members = (labels == c).nonzero().flatten()
        chosen.append(members[torch.randperm(members.numel(), generator=gen)[:q]])
    return torch.cat(chosen).sort().values


def subset_dataset(
    ds: Dataset, train_subset: int | None, test_subset: int | None, *, seed: int = 0
) -> Dataset:
    """Stratified, seeded subsets of either split (None keeps the split whole)."""
    train_x, train_y = ds.train_images, ds.train_labels
    test_x, test_y = ds.test_images, ds.test_labels
    if train_subset is not None and train_subset != train_y.numel():
        idx = stratified_subset(train_y, train_subset, seed=seed)
        train_x, train_y = train_x[idx], train_y[idx]
    if test_subset is not None and test_subset != test_y.numel():
        idx = stratified_subset(test_y, test_subset, seed=seed)
        test_x, test_y = test_x[idx], test_y[idx]
    return Dataset(
        ds.name, train_x, train_y, test_x, test_y, ds.classes, ds.mean, ds.std, ds.augment
    )


# ---------------------------------------------------------------------------
# On-device batches: one gather for crop + flip, one fused normalisation


def crop_pad(resolution: int) -> int:
    """Padding of the random crop: 4 px at 32×32 (the paper's CIFAR recipe), scaled."""
    return max(1, resolution // 8)


def random_crop_flip(images: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-padded random crops and horizontal flips of a uint8 batch, in two gathers.

    Rows are gathered first, then columns (mirrored where flipped): two
    linear passes, cheaper than one 4-D advanced index. The random draws come
    from a CPU generator (then move to the batch's device) so that a trial's
    data order and augmentation are the same on any device and can be
    checkpointed as one generator state.
    """
    n, c, h, w = images.shape
    dev = images.device
    offsets = torch.randint(0, 2 * pad + 1, (2, n), generator=generator).to(dev)
    flips = (torch.rand(n, generator=generator) < 0.5).to(dev)
    padded = F.pad(images, (pad, pad, pad, pad))
    rows = (offsets[0, :, None] + torch.arange(h, device=dev)).view(n, 1, h, 1)
    forward = torch.arange(w, device=dev)
    cols = offsets[1, :, None] + torch.where(flips[:, None], w - 1 - forward, forward)
    out = padded.gather(2, rows.expand(n, c, h, w + 2 * pad))
    return out.gather(3, cols.view(n, 1, 1, w).expand(n, c, h, w))


class Normalizer:
    """uint8 → (x/255 − mean)/std in the target dtype and memory format, in one op.

    The per-channel scale and shift are precomputed so a batch costs one
    fused multiply-add (addcmul) after the dtype conversion.
    """

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        channels_last: bool = False,
    ) -> None:
        m = torch.tensor(mean, dtype=torch.float64)
        s = torch.tensor(std, dtype=torch.float64)
        self.scale = (1.0 / (255.0 * s)).to(device=device, dtype=dtype).view(1, -1, 1, 1)
        self.shift = (-m / s).to(device=device, dtype=dtype).view(1, -1, 1, 1)
        self.dtype = dtype
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(dtype=self.dtype, memory_format=self.memory_format)
        return torch.addcmul(self.shift, x, self.scale)


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


def eval_batches(
    images: torch.Tensor, labels: torch.Tensor, batch_size: int, normalize: Normalizer
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The test split in order, normalised, without augmentation."""
    for start in range(0, labels.numel(), batch_size):
        yield normalize(images[start : start + batch_size]), labels[start : start + batch_size]


# ---------------------------------------------------------------------------
# Feeds: how batches reach the trainer, from resident tensors or streamed from files


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
        return eval_batches(self.test_images, self.test_labels, batch_size, normalize)


# ---------------------------------------------------------------------------
# Streaming image folders: files decoded by DataLoader workers, a batch at a time

RESIDENT_BUDGET_BYTES = 2 << 30
"""`data.pipeline: auto` decodes a folder whole only when its uint8 images fit in this."""

RRC_SCALE = (0.08, 1.0)
RRC_RATIO = (3 / 4, 4 / 3)
EVAL_RESIZE = 256 / 224  # the shorter side before the centre crop: 256 for 224 on ImageNet
STATS_SAMPLE = 512


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


def load_data(
    cfg: DataSpec,
    *,
    cache_dir: str | Path | None = None,
    fetch: Fetch | None = None,
    subset_seed: int = 0,
    budget_bytes: int = RESIDENT_BUDGET_BYTES,
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
        mean, std = IMAGENET_MEAN, IMAGENET_STD
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
    pick = np.sort(rng.choice(len(paths), size=min(STATS_SAMPLE, len(paths)), replace=False))
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


Box = tuple[int, int, int, int]


def random_resized_box(width: int, height: int, rng: np.random.Generator) -> Box:
    """The standard ImageNet training crop (Szegedy et al. 2015, as in the ResNet/ResNeXt
    recipe): area a uniform 8-100% of the image and aspect ratio log-uniform in [3/4, 4/3],
    tried 10 times; failing that, the centre crop of the largest in-range aspect."""
    area = width * height
    log_lo, log_hi = math.log(RRC_RATIO[0]), math.log(RRC_RATIO[1])
    for _ in range(10):
        target = area * rng.uniform(*RRC_SCALE)
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            left = int(rng.integers(0, width - w + 1))
            top = int(rng.integers(0, height - h + 1))
            return left, top, left + w, top + h
    ratio = width / height
    if ratio < RRC_RATIO[0]:
        w, h = width, min(height, round(width / RRC_RATIO[0]))
    elif ratio > RRC_RATIO[1]:
        w, h = min(width, round(height * RRC_RATIO[1])), height
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def train_transform(img: Image.Image, resolution: int, rng: np.random.Generator) -> np.ndarray:
    """Random-resized crop to R×R (bilinear) and a horizontal flip half the time: 3×R×R uint8."""
    from PIL import Image

    box = random_resized_box(img.width, img.height, rng)
    out = img.resize((resolution, resolution), Image.Resampling.BILINEAR, box=box)
    if rng.random() < 0.5:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(out, dtype=np.uint8).transpose(2, 0, 1)


def eval_transform(img: Image.Image, resolution: int) -> np.ndarray:
    """Shorter side to R·256/224 (bilinear), centre R×R crop: 3×R×R uint8."""
    from PIL import Image

    short = max(resolution, round(resolution * EVAL_RESIZE))
    scale = short / min(img.width, img.height)
    size = (max(short, round(img.width * scale)), max(short, round(img.height * scale)))
    img = img.resize(size, Image.Resampling.BILINEAR)
    left, top = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    img = img.crop((left, top, left + resolution, top + resolution))
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)


Item = tuple[int, int, int]
"""What a streaming split is indexed by: (file index, epoch seed, position in the epoch)."""


class FolderSplit(torch.utils.data.Dataset[tuple[torch.Tensor, int]]):
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

    def __getitem__(self, item: Item) -> tuple[torch.Tensor, int]:
        index, epoch_seed, position = item
        img = open_rgb(Path(self.root) / self.paths[index].decode())
        if self.train:
            rng = np.random.default_rng([epoch_seed, position])
            pixels = train_transform(img, self.resolution, rng)
        else:
            pixels = eval_transform(img, self.resolution)
        return torch.from_numpy(np.ascontiguousarray(pixels)), int(self.labels[index])


class EpochBatches(torch.utils.data.Sampler[list[Item]]):
    """Batches of (file index, `seed`, position) in `order`, the last incomplete batch
    dropped when `drop_last` (as the resident path does; a set smaller than a batch is
    one batch)."""

    def __init__(self, order: np.ndarray, seed: int, batch_size: int, *,
                 drop_last: bool) -> None:
        self.order, self.seed, self.drop_last = order, seed, drop_last
        self.batch_size = min(batch_size, len(order))

    def __iter__(self) -> Iterator[list[Item]]:
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
        self, split: FolderSplit, sampler: EpochBatches
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
        sampler = EpochBatches(order, seed, batch_size, drop_last=True)
        split = FolderSplit(f.root, f.train_paths, f.train_labels, f.resolution, train=augment)
        for x, y in on_device(self._loader(split, sampler), self.device):
            yield normalize(x), y

    def eval_epoch(
        self, batch_size: int, normalize: Normalizer
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        f = self.files
        sampler = EpochBatches(np.arange(self.num_test), 0, batch_size, drop_last=False)
        split = FolderSplit(f.root, f.test_paths, f.test_labels, f.resolution, train=False)
        for x, y in on_device(self._loader(split, sampler), self.device):
            yield normalize(x), y


def on_device(
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
