"""Images/s of explorer's streaming input pipeline against a plain per-sample one.

The plain pipeline is what torchvision's ImageFolder + DataLoader does (torchvision
itself cannot be imported beside this environment's CPU torch wheel, so it is
written out): a Dataset of (path, label) pairs that opens each file with PIL,
applies the same random-resized crop and flip, converts to float and normalises
per sample (ToTensor + Normalize), collated by a DataLoader with shuffle=True.
explorer's pipeline (`explorer.data.StreamFeed`) uses the same decoding and crop,
keeps samples uint8 through the collate (a quarter of the bytes between processes)
and normalises each batch in one fused operation. Same workers, same batch size;
input only, no model.

    python benchmarks/make_jpeg_folder.py /tmp/jpeg5k --train 5000 --val 1000 --size 64
    python benchmarks/stream_throughput.py /tmp/jpeg5k --workers 2 --batches 40
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from explorer.data import (
    ImageFiles,
    Normalizer,
    StreamFeed,
    list_image_folder,
    open_rgb,
    train_transform,
)
from explorer.spec import DataSpec


class PlainImageFolder(torch.utils.data.Dataset[tuple[torch.Tensor, int]]):
    """ImageFolder-style: per-sample decode, transform, float conversion, normalisation."""

    def __init__(self, files: ImageFiles) -> None:
        self.root = Path(files.root)
        self.samples = [(p.decode(), int(y)) for p, y in
                        zip(files.train_paths, files.train_labels, strict=True)]
        self.resolution = files.resolution
        self.mean = torch.tensor(files.mean).view(3, 1, 1)
        self.std = torch.tensor(files.std).view(3, 1, 1)
        self.rng = np.random.default_rng(0)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[i]
        pixels = train_transform(open_rgb(self.root / path), self.resolution, self.rng)
        x = torch.from_numpy(np.ascontiguousarray(pixels)).float().div_(255)  # ToTensor
        return (x - self.mean) / self.std, label  # Normalize


def plain_rate(files: ImageFiles, batch: int, workers: int, batches: int) -> float:
    loader = torch.utils.data.DataLoader(
        PlainImageFolder(files), batch_size=batch, shuffle=True, drop_last=True,
        num_workers=workers, generator=torch.Generator().manual_seed(0),
        prefetch_factor=4 if workers else None)
    return _rate(iter(loader), batches)


def stream_rate(files: ImageFiles, batch: int, workers: int, batches: int) -> float:
    feed = StreamFeed(files, torch.device("cpu"), workers=workers)
    norm = Normalizer(files.mean, files.std)
    gen = torch.Generator().manual_seed(0)
    return _rate(feed.train_epoch(batch, gen, norm, augment=True), batches)


def _rate(batches: object, count: int) -> float:
    it = iter(batches)  # type: ignore[call-overload]
    next(it)  # worker start-up and the first batch are not the steady rate
    start = time.perf_counter()
    n = 0
    for _ in range(count):
        x, _y = next(it)
        n += x.shape[0]
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2, help="best of this many, alternating")
    args = parser.parse_args()
    torch.set_num_threads(1)
    files = list_image_folder(DataSpec(dataset="imagefolder", root=str(args.folder),
                                       resolution=args.resolution, pipeline="stream"))
    ours = plain = 0.0
    for _ in range(args.rounds):
        ours = max(ours, stream_rate(files, args.batch_size, args.workers, args.batches))
        plain = max(plain, plain_rate(files, args.batch_size, args.workers, args.batches))
    print(f"{args.folder}: {len(files.train_labels):,} images, {args.resolution}px, batch "
          f"{args.batch_size}, {args.workers} workers, {args.batches} batches, best of "
          f"{args.rounds}")
    print(f"explorer StreamFeed:             {ours:8.0f} images/s")
    print(f"plain ImageFolder-style loader:  {plain:8.0f} images/s  -> ratio {ours / plain:.2f}x")


if __name__ == "__main__":
    main()
