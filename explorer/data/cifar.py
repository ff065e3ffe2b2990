"""CIFAR-10 and CIFAR-100: the official python layout, a verified download (md5), an
atomic extraction (a temp folder renamed into place, `explorer.files`)."""

from __future__ import annotations

import hashlib
import pickle
import shutil
import tarfile
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from explorer.data.records import Dataset, DatasetError
from explorer.data.transforms import channel_stats
from explorer.files import atomic_directory, scratch_file

__all__ = ["Archive", "Fetch", "ensure_extracted", "load_cifar", "read_cifar_folder"]


Fetch = Callable[[str, Path], None]
"""Writes the resource at a URL to a local path (the default uses urllib)."""


@dataclass(frozen=True)
class Archive:
    """An official archive: where it comes from, its md5, the folder it holds."""

    url: str
    md5: str
    folder: str

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


_CIFAR_ARCHIVES: dict[str, Archive] = {
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


def _urllib_fetch(url: str, dest: Path) -> None:
    """Download with the standard library; file:// URLs work too (used by tests)."""
    with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as out:
        shutil.copyfileobj(response, out, length=1 << 20)


def _file_md5(path: Path) -> str:
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
            (fetch or _urllib_fetch)(archive.url, tmp)
        except Exception as exc:  # any transport failure is the same fix for a person
            raise DatasetError(
                f"download of {archive.url} failed ({type(exc).__name__}: {exc}); check the "
                f"network, or put {archive.filename} under {root} by hand"
            ) from exc
        _check_md5(tmp, archive, downloaded=True)
        _extract_atomically(tmp, root, archive)
    return target


def _check_md5(path: Path, archive: Archive, *, downloaded: bool) -> None:
    actual = _file_md5(path)
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
    archive = _CIFAR_ARCHIVES[name]
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
