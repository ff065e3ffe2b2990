"""Small datasets that need no download: scikit-learn's bundled digits (the offline
default) and seeded synthetic images (throughput measurements only)."""

from __future__ import annotations

import numpy as np
import torch

from explorer.data.records import Dataset
from explorer.data.transforms import channel_stats, resize_images

__all__ = ["load_digits", "make_synthetic"]


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
