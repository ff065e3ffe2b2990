"""Datasets and the on-device input pipeline: loaders, verified download, subsets, augmentation."""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from explorer.data import (
    Archive,
    DatasetError,
    Normalizer,
    ensure_extracted,
    load_dataset,
    random_crop_flip,
    read_cifar_folder,
    stratified_subset,
    train_batches,
)
from explorer.spec import DataSpec

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
HAVE_CIFAR10 = (SHARED_DATA / "cifar-10-batches-py" / "data_batch_1").is_file()
CIFAR_FOLDER = "cifar-10-batches-py"
ARCHIVE_NAME = "cifar-10-python.tar.gz"


# ---------------------------------------------------------------------------
# A tiny archive in the official CIFAR-10 layout


def _pickle_bytes(record: dict[str, object]) -> bytes:
    return pickle.dumps(record, protocol=2)


def _write_tiny_cifar_archive(directory: Path, per_batch: int = 10) -> Path:
    """cifar-10-python.tar.gz holding cifar-10-batches-py/ with `per_batch` images a file."""
    rng = np.random.default_rng(0)
    files: dict[str, bytes] = {
        "batches.meta": _pickle_bytes(
            {"label_names": [f"c{i}" for i in range(10)], "num_cases_per_batch": per_batch}
        )
    }
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        files[name] = _pickle_bytes({
            "batch_label": name,
            "labels": [int(v) for v in np.arange(per_batch) % 10],
            "data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            "filenames": [f"{name}_{i}.png" for i in range(per_batch)],
        })
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / ARCHIVE_NAME
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in files.items():
            info = tarfile.TarInfo(f"{CIFAR_FOLDER}/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _archive_for(path: Path, md5: str | None = None) -> Archive:
    """The archive record for a local file, fetched through a file:// URL (no network)."""
    return Archive(url=path.resolve().as_uri(), md5=md5 or _md5(path), folder=CIFAR_FOLDER)


@pytest.fixture()
def tiny_archive(tmp_path: Path) -> Path:
    return _write_tiny_cifar_archive(tmp_path / "mirror")


def test_good_archive_downloads_verifies_and_extracts(tiny_archive: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    folder = ensure_extracted(root, _archive_for(tiny_archive), download=True)
    assert folder == root / CIFAR_FOLDER
    assert sorted(p.name for p in root.iterdir()) == [CIFAR_FOLDER]  # no temp files left
    ds = read_cifar_folder(folder, "cifar10")
    assert ds.train_images.shape == (50, 3, 32, 32) and ds.train_images.dtype == torch.uint8
    assert ds.test_images.shape == (10, 3, 32, 32)
    assert ds.train_labels.dtype == torch.int64
    assert ds.classes == tuple(f"c{i}" for i in range(10))
    # The loader reads an extracted folder without asking for a download.
    loaded = load_dataset(
        DataSpec(dataset="cifar10", root=str(root), download=False, resolution=32)
    )
    assert torch.equal(loaded.train_images, ds.train_images)


def test_wrong_md5_is_a_clear_error_and_keeps_nothing(tiny_archive: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    archive = _archive_for(tiny_archive, md5="0" * 32)
    with pytest.raises(DatasetError, match="md5") as info:
        ensure_extracted(root, archive, download=True)
    message = str(info.value)
    assert "\n" not in message and archive.url in message and "partial or corrupt" in message
    assert list(root.iterdir()) == []


def test_truncated_download_is_a_clear_error_and_keeps_nothing(
    tiny_archive: Path, tmp_path: Path
) -> None:
    good = _archive_for(tiny_archive)  # the md5 of the complete file
    data = tiny_archive.read_bytes()
    tiny_archive.write_bytes(data[: len(data) // 2])
    root = tmp_path / "data"
    with pytest.raises(DatasetError, match="partial or corrupt"):
        ensure_extracted(root, good, download=True)
    assert list(root.iterdir()) == []


def test_unextractable_archive_leaves_no_half_extracted_folder(
    tiny_archive: Path, tmp_path: Path
) -> None:
    # An archive whose md5 matches but whose tar stream ends early: extraction
    # fails half-way, and nothing that looks like data may remain.
    data = tiny_archive.read_bytes()
    tiny_archive.write_bytes(data[: int(len(data) * 0.8)])
    root = tmp_path / "data"
    with pytest.raises(DatasetError, match="could not be extracted"):
        ensure_extracted(root, _archive_for(tiny_archive), download=True)
    assert list(root.iterdir()) == []


def test_bad_archive_already_in_root_is_named_and_not_replaced(
    tiny_archive: Path, tmp_path: Path
) -> None:
    root = tmp_path / "data"
    root.mkdir()
    local = root / ARCHIVE_NAME
    local.write_bytes(tiny_archive.read_bytes()[:100])
    calls: list[str] = []

    def fetch(url: str, dest: Path) -> None:
        calls.append(url)

    with pytest.raises(DatasetError) as info:
        ensure_extracted(root, _archive_for(tiny_archive), download=True, fetch=fetch)
    assert str(local) in str(info.value) and "delete it" in str(info.value)
    assert calls == []  # never a silent re-download
    assert sorted(p.name for p in root.iterdir()) == [ARCHIVE_NAME]


def test_good_archive_already_in_root_is_used_without_download(
    tiny_archive: Path, tmp_path: Path
) -> None:
    root = tmp_path / "data"
    root.mkdir()
    (root / ARCHIVE_NAME).write_bytes(tiny_archive.read_bytes())
    ensure_extracted(root, _archive_for(tiny_archive), download=False)
    assert (root / CIFAR_FOLDER / "test_batch").is_file()


def test_failed_fetch_is_a_clear_error_and_keeps_nothing(
    tiny_archive: Path, tmp_path: Path
) -> None:
    def fetch(url: str, dest: Path) -> None:
        dest.write_bytes(b"partial")
        raise ConnectionResetError("connection reset by peer")

    root = tmp_path / "data"
    with pytest.raises(DatasetError, match=r"download of .* failed"):
        ensure_extracted(root, _archive_for(tiny_archive), download=True, fetch=fetch)
    assert list(root.iterdir()) == []


def test_missing_data_without_download_names_path_and_fix(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as info:
        load_dataset(DataSpec(dataset="cifar10", root=str(tmp_path), download=False))
    message = str(info.value)
    assert str(tmp_path / CIFAR_FOLDER) in message and "download: true" in message


def test_incomplete_folder_is_named(tiny_archive: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    folder = ensure_extracted(root, _archive_for(tiny_archive), download=True)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DatasetError, match="data_batch_3 is missing"):
        read_cifar_folder(folder, "cifar10")


@pytest.mark.skipif(not HAVE_CIFAR10, reason=f"CIFAR-10 not found under {SHARED_DATA}")
def test_real_cifar10_loads_balanced() -> None:
    ds = load_dataset(DataSpec(dataset="cifar10", root=str(SHARED_DATA), download=False))
    assert ds.train_images.shape == (50_000, 3, 32, 32)
    assert ds.test_images.shape == (10_000, 3, 32, 32)
    assert torch.bincount(ds.train_labels).tolist() == [5000] * 10
    assert ds.classes[0] == "airplane"
    assert all(0.4 < m < 0.5 for m in ds.mean) and all(0.2 < s < 0.3 for s in ds.std)


# ---------------------------------------------------------------------------
# Digits, synthetic, image folders


def test_digits_offline_default() -> None:
    ds = load_dataset(DataSpec(dataset="digits", resolution=16))
    assert ds.train_images.shape == (1437, 3, 16, 16) and ds.test_images.shape == (360, 3, 16, 16)
    assert ds.train_images.dtype == torch.uint8 and ds.train_labels.dtype == torch.int64
    assert ds.num_classes == 10 and not ds.augment
    assert torch.equal(ds.train_images[:, 0], ds.train_images[:, 2])  # grey in three channels
    assert int(ds.train_images.max()) == 255
    # The split is stratified: each class's share of the test split follows its share overall.
    total = torch.bincount(torch.cat([ds.train_labels, ds.test_labels])).double()
    share = torch.bincount(ds.test_labels).double() / total
    assert float((share - 360 / 1797).abs().max()) < 0.01


def test_num_classes_mismatch_is_an_error() -> None:
    with pytest.raises(DatasetError, match="num_classes"):
        load_dataset(DataSpec(dataset="digits", num_classes=100, resolution=8))


def test_synthetic_is_seeded_and_sized() -> None:
    cfg = DataSpec(dataset="synthetic", resolution=8, train_subset=64, test_subset=16)
    a, b = load_dataset(cfg), load_dataset(cfg)
    assert a.train_images.shape == (64, 3, 8, 8) and a.test_images.shape == (16, 3, 8, 8)
    assert torch.equal(a.train_images, b.train_images)


def _write_png(path: Path, size: tuple[int, int], colour: tuple[int, int, int]) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def test_imagefolder_decodes_resizes_and_caches_only_where_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "images"
    for split, n in (("train", 3), ("val", 2)):
        for c, colour in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
            for i in range(n):
                _write_png(root / split / c / f"{i}.png", (20 + 7 * i, 12), colour)
    before = sorted(str(p) for p in root.rglob("*"))
    cache = tmp_path / "cache"
    cfg = DataSpec(dataset="imagefolder", root=str(root), resolution=8)
    ds = load_dataset(cfg, cache_dir=cache)
    assert ds.classes == ("cat", "dog")
    assert ds.train_images.shape == (6, 3, 8, 8) and ds.test_images.shape == (4, 3, 8, 8)
    assert ds.train_labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert ds.train_images[0, 0].float().mean() > 250 and ds.train_images[0, 2].max() < 5
    assert sorted(str(p) for p in root.rglob("*")) == before  # nothing written into the data
    assert len(list(cache.glob("imagefolder-*.npy"))) == 2
    loaded: list[object] = []
    real_load = np.load

    def spy(*args: object, **kwargs: object) -> object:
        loaded.append(array := real_load(*args, **kwargs))  # type: ignore[call-overload]
        return array

    monkeypatch.setattr(np, "load", spy)
    again = load_dataset(cfg, cache_dir=cache)
    assert torch.equal(again.train_images, ds.train_images)
    # The cached arrays are mapped read-only, not loaded into memory.
    assert len(loaded) == 2 and all(isinstance(a, np.memmap) for a in loaded)


def test_imagefolder_without_val_names_the_layout(tmp_path: Path) -> None:
    _write_png(tmp_path / "train" / "a" / "0.png", (8, 8), (1, 2, 3))
    with pytest.raises(DatasetError, match="val"):
        load_dataset(DataSpec(dataset="imagefolder", root=str(tmp_path), resolution=8))


# ---------------------------------------------------------------------------
# Subsets


def test_subsets_are_stratified_and_seeded() -> None:
    labels = torch.arange(1000) % 10
    labels[:37] = 3  # unbalanced on purpose: quotas must follow the class shares
    a = stratified_subset(labels, 200, seed=0)
    assert torch.equal(a, stratified_subset(labels, 200, seed=0))
    assert not torch.equal(a, stratified_subset(labels, 200, seed=1))
    assert a.numel() == 200 and a.unique().numel() == 200
    full = torch.bincount(labels).double() * 200 / 1000
    got = torch.bincount(labels[a], minlength=10).double()
    assert (got - full).abs().max() < 1.0


def test_dataset_subsets_are_balanced_and_fixed() -> None:
    cfg = DataSpec(dataset="digits", resolution=8, train_subset=500, test_subset=100)
    a, b = load_dataset(cfg), load_dataset(cfg)
    assert a.train_labels.numel() == 500 and a.test_labels.numel() == 100
    assert torch.equal(a.train_images, b.train_images)
    counts = torch.bincount(a.test_labels)
    assert counts.tolist() == [10] * 10
    with pytest.raises(DatasetError, match="subset size"):
        stratified_subset(a.test_labels, 101)


# ---------------------------------------------------------------------------
# On-device pipeline


def test_crop_flip_is_a_padded_crop_or_its_mirror() -> None:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(1, 256, (64, 3, 8, 8), dtype=torch.uint8, generator=gen)
    out = random_crop_flip(images, 2, torch.Generator().manual_seed(1))
    again = random_crop_flip(images, 2, torch.Generator().manual_seed(1))
    assert out.shape == images.shape and out.dtype == torch.uint8 and torch.equal(out, again)
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    flips = 0
    for i in range(images.shape[0]):
        crops = {
            (dy, dx, f)
            for dy in range(5)
            for dx in range(5)
            for f in (False, True)
            if torch.equal(
                out[i],
                (lambda c, f: c.flip(-1) if f else c)(padded[i, :, dy : dy + 8, dx : dx + 8], f),
            )
        }
        assert crops, f"sample {i} is not a crop of its padded image"
        flips += all(f for _, _, f in crops)
    assert 10 < flips < 54  # about half are mirrored


def test_normalizer_is_fused_affine_in_target_dtype_and_layout() -> None:
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    norm = Normalizer(mean, std, dtype=torch.float32, channels_last=True)
    x = norm(images)
    m = torch.tensor(mean, dtype=torch.float64).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float64).view(1, 3, 1, 1)
    expected = (images.double() / 255 - m) / s
    assert x.dtype == torch.float32 and x.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(x.double(), expected, atol=1e-5, rtol=1e-5)
    assert Normalizer(mean, std, dtype=torch.bfloat16)(images).dtype == torch.bfloat16


def test_train_batches_shuffle_once_per_epoch_and_drop_last() -> None:
    labels = torch.arange(100)
    images = torch.zeros(100, 3, 8, 8, dtype=torch.uint8)
    norm = Normalizer((0.5,) * 3, (0.5,) * 3)
    gen = torch.Generator().manual_seed(0)
    seen = [y for _, y in train_batches(images, labels, 32, gen, norm, augment=True)]
    assert [y.numel() for y in seen] == [32, 32, 32]
    flat = torch.cat(seen)
    assert flat.unique().numel() == 96 and not torch.equal(flat, torch.arange(96))
    small = list(train_batches(images[:10], labels[:10], 32, gen, norm, augment=False))
    assert len(small) == 1 and small[0][1].numel() == 10


# ---------------------------------------------------------------------------
# Streaming image folders


def _two_class_folder(root: Path, per_class: int = 6, val: int = 2) -> Path:
    """Images whose left half is one colour and right half another, of varied sizes."""
    from PIL import Image

    for split, n in (("train", per_class), ("val", val)):
        for c, colour in (("cat", (250, 10, 10)), ("dog", (10, 10, 250))):
            for i in range(n):
                img = Image.new("RGB", (24 + 4 * i, 16 + 2 * i), colour)
                img.paste((10, 250, 10), (0, 0, img.width // 2, img.height))
                path = root / split / c / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                img.save(path)
    return root


@pytest.mark.parametrize("size", [(64, 64), (300, 40), (40, 300), (1000, 8)])
def test_random_resized_box_keeps_area_and_aspect_in_range(size: tuple[int, int]) -> None:
    from explorer.data import random_resized_box

    w, h = size
    rng = np.random.default_rng(0)
    for _ in range(500):
        left, top, right, bottom = random_resized_box(w, h, rng)
        bw, bh = right - left, bottom - top
        assert 0 <= left < right <= w and 0 <= top < bottom <= h
        # Rounding of a side moves the ratio by at most half a pixel on each side.
        assert 3 / 4 * (bh - 0.5) / (bh + 0.5) <= bw / bh <= 4 / 3 * (bh + 0.5) / (bh - 0.5) \
            or bw in (w, round(h * 4 / 3)) or bh in (h, round(w * 4 / 3))
        if w == h:  # on a square every draw fits, so the area is a drawn one
            assert bw * bh >= 0.08 * w * h * 0.8


def test_train_transform_crops_resizes_and_flips_half_the_time() -> None:
    from PIL import Image

    from explorer.data import train_transform

    img = Image.new("RGB", (64, 64), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 32, 64))  # red left half
    rng = np.random.default_rng(1)
    red_on_right = 0
    for _ in range(400):
        out = train_transform(img, 16, rng)
        assert out.shape == (3, 16, 16) and out.dtype == np.uint8
        left, right = out[0, :, :4].mean(), out[0, :, -4:].mean()
        red_on_right += int(right > left)
    assert 150 < red_on_right < 250  # crops with red on only one side, mirrored half the time


def test_eval_transform_is_resize_then_centre_crop() -> None:
    from PIL import Image

    from explorer.data import eval_transform

    pixels = np.random.default_rng(0).integers(0, 256, (9, 9, 3), dtype=np.uint8)
    # At R = 8 the shorter side goes to round(8 * 256 / 224) = 9: this image is not
    # resized, and the centre 8x8 crop starts at (9 - 8) // 2 = 0.
    out = eval_transform(Image.fromarray(pixels), 8)
    assert np.array_equal(out, pixels[:8, :8].transpose(2, 0, 1))
    wide = eval_transform(Image.new("RGB", (90, 30)), 8)
    assert wide.shape == (3, 8, 8)


def test_pipeline_auto_decodes_small_folders_and_streams_large(tmp_path: Path) -> None:
    from explorer.data import Dataset, ImageFiles, load_data

    root = _two_class_folder(tmp_path / "images")
    cfg = DataSpec(dataset="imagefolder", root=str(root), resolution=8)
    assert isinstance(load_data(cfg), Dataset)
    files = load_data(cfg, budget_bytes=0)
    assert isinstance(files, ImageFiles) and files.describe()["pipeline"] == "stream"
    assert files.train_labels.tolist() == [0] * 6 + [1] * 6
    stream = DataSpec(dataset="imagefolder", root=str(root), resolution=8, pipeline="stream",
                      train_subset=4)
    picked = load_data(stream)
    assert isinstance(picked, ImageFiles) and sorted(picked.train_labels.tolist()) == [0, 0, 1, 1]
    assert isinstance(load_data(stream.model_copy(update={"pipeline": "resident"})), Dataset)


def test_stream_pipeline_only_for_folders() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="stream reads image folders"):
        DataSpec(dataset="cifar10", pipeline="stream")


def _batches(feed: object, seed: int, *, augment: bool = True) -> list[tuple[torch.Tensor, ...]]:
    from explorer.data import StreamFeed

    assert isinstance(feed, StreamFeed)
    norm = Normalizer((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    gen = torch.Generator().manual_seed(seed)
    return [(x, y) for x, y in feed.train_epoch(5, gen, norm, augment=augment)]


def test_stream_feed_is_the_same_with_any_number_of_workers(tmp_path: Path) -> None:
    from explorer.data import StreamFeed, list_image_folder

    root = _two_class_folder(tmp_path / "images")
    files = list_image_folder(DataSpec(dataset="imagefolder", root=str(root), resolution=8))
    cpu = torch.device("cpu")
    alone = _batches(StreamFeed(files, cpu, workers=0), seed=3)
    shared = _batches(StreamFeed(files, cpu, workers=2), seed=3)
    assert len(alone) == 12 // 5 and all(x.shape == (5, 3, 8, 8) for x, _ in alone)
    for (xa, ya), (xb, yb) in zip(alone, shared, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    other = _batches(StreamFeed(files, cpu, workers=0), seed=4)
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(alone, other, strict=True))
    # Without augmentation a training image is its evaluation view.
    norm = Normalizer((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    evals = list(StreamFeed(files, cpu, workers=0).eval_epoch(3, norm))
    assert [y.tolist() for _, y in evals] == [[0, 0, 1], [1]]
    plain = _batches(StreamFeed(files, cpu, workers=0), seed=3, augment=False)
    labels = torch.cat([y for _, y in plain])
    assert set(labels.tolist()) <= {0, 1} and len(labels) == 10
