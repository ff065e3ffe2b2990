"""Write CIFAR-10 out as an ImageNet-style folder of JPEG files, for the streaming pipeline.

    python benchmarks/make_jpeg_folder.py /tmp/cifar-jpeg --train 30000 --val 1000 --size 64

writes DEST/train/<class>/<index>.jpg (the first N training images, every
class) and DEST/val/<class>/<index>.jpg (the first M test images), each
upsampled to --size pixels (bilinear) so that decoding costs what a larger
image costs. Source: the official python CIFAR-10 folder (read-only).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from explorer.data import DatasetError, read_cifar_folder

SHARED_CIFAR = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / \
    "cifar-10-batches-py"


def write_split(images: np.ndarray, labels: np.ndarray, classes: tuple[str, ...], dest: Path,
                size: int, quality: int) -> None:
    for name in classes:
        (dest / name).mkdir(parents=True, exist_ok=True)
    for i, (chw, label) in enumerate(zip(images, labels, strict=True)):
        img = Image.fromarray(np.ascontiguousarray(chw.transpose(1, 2, 0)))
        if size != img.width:
            img = img.resize((size, size), Image.Resampling.BILINEAR)
        img.save(dest / classes[int(label)] / f"{i:06d}.jpg", quality=quality)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dest", type=Path, help="folder to write (train/ and val/ inside)")
    parser.add_argument("--train", type=int, default=5000, help="training images (max 50,000)")
    parser.add_argument("--val", type=int, default=1000, help="validation images (max 10,000)")
    parser.add_argument("--size", type=int, default=32, help="side of the written images")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality")
    parser.add_argument("--source", type=Path, default=SHARED_CIFAR,
                        help="the extracted cifar-10-batches-py folder")
    args = parser.parse_args()
    if (args.dest / "train").exists():
        sys.exit(f"{args.dest}/train already exists; remove it or choose another folder")
    try:
        ds = read_cifar_folder(args.source, "cifar10")
    except DatasetError as exc:
        sys.exit(str(exc))
    if not (0 < args.train <= len(ds.train_labels) and 0 < args.val <= len(ds.test_labels)):
        sys.exit(f"--train must be 1..{len(ds.train_labels)}, --val 1..{len(ds.test_labels)}")
    write_split(ds.train_images[: args.train].numpy(), ds.train_labels[: args.train].numpy(),
                ds.classes, args.dest / "train", args.size, args.quality)
    write_split(ds.test_images[: args.val].numpy(), ds.test_labels[: args.val].numpy(),
                ds.classes, args.dest / "val", args.size, args.quality)
    print(f"wrote {args.train} training and {args.val} validation JPEGs "
          f"({args.size}x{args.size}, quality {args.quality}) under {args.dest}")


if __name__ == "__main__":
    main()
