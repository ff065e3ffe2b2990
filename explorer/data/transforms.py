"""Tensor and image operations: whole-dataset statistics, resizing and stratified subsets;
a resident batch's on-device crop, flip and normalisation; a streamed image's standard
ImageNet training and evaluation transforms (Pillow)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from explorer.data.records import RGB, Dataset, DatasetError

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "Normalizer", "channel_stats", "crop_pad", "eval_transform", "random_crop_flip",
    "random_resized_box", "resize_dataset", "resize_images", "stratified_subset",
    "subset_dataset", "train_transform",
]


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


_RRC_SCALE = (0.08, 1.0)
_RRC_RATIO = (3 / 4, 4 / 3)
_EVAL_RESIZE = 256 / 224  # the shorter side before the centre crop: 256 for 224 on ImageNet


_Box = tuple[int, int, int, int]


def random_resized_box(width: int, height: int, rng: np.random.Generator) -> _Box:
    """The standard ImageNet training crop (Szegedy et al. 2015, as in the ResNet/ResNeXt
    recipe): area a uniform 8-100% of the image and aspect ratio log-uniform in [3/4, 4/3],
    tried 10 times; failing that, the centre crop of the largest in-range aspect."""
    area = width * height
    log_lo, log_hi = math.log(_RRC_RATIO[0]), math.log(_RRC_RATIO[1])
    for _ in range(10):
        target = area * rng.uniform(*_RRC_SCALE)
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            left = int(rng.integers(0, width - w + 1))
            top = int(rng.integers(0, height - h + 1))
            return left, top, left + w, top + h
    ratio = width / height
    if ratio < _RRC_RATIO[0]:
        w, h = width, min(height, round(width / _RRC_RATIO[0]))
    elif ratio > _RRC_RATIO[1]:
        w, h = min(width, round(height * _RRC_RATIO[1])), height
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

    short = max(resolution, round(resolution * _EVAL_RESIZE))
    scale = short / min(img.width, img.height)
    size = (max(short, round(img.width * scale)), max(short, round(img.height * scale)))
    img = img.resize(size, Image.Resampling.BILINEAR)
    left, top = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    img = img.crop((left, top, left + resolution, top + resolution))
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)
