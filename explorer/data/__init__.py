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
  explicit ``cache_dir`` (never inside the user's data folder). Streamed:
  listed by `folders.list_image_folder`, read through `feeds.StreamFeed`.
- ``digits``: scikit-learn's bundled 8×8 digits (no download), the offline
  default.
- ``synthetic``: seeded random images, for throughput measurements only.

Mean and std are per channel in 0..1 units, computed from the full training
split (before subsetting; a streamed folder: a seeded sample of 512 of its
images), except ``imagenet`` which uses the customary ImageNet constants.

The package, one concept a module: `records` (what the data is: Dataset,
ImageFiles, DatasetError), `cifar` (the verified download), `folders` (image
folders decoded, cached or listed), `small` (digits, synthetic), `transforms`
(tensor and image operations), `feeds` (how batches reach a trial) and `load`
(the entry points). What other modules use is re-exported here.
"""

from explorer.data.cifar import Archive, Fetch, ensure_extracted, read_cifar_folder
from explorer.data.feeds import (
    Feed,
    ResidentFeed,
    StreamFeed,
    make_feed,
    steps_per_epoch,
    train_batches,
)
from explorer.data.folders import list_image_folder, open_rgb
from explorer.data.load import check_available, load_data, load_dataset
from explorer.data.records import (
    Dataset,
    DatasetError,
    ImageFiles,
    dataset_arrays,
    dataset_from_arrays,
)
from explorer.data.small import load_digits, make_synthetic
from explorer.data.transforms import (
    Normalizer,
    crop_pad,
    eval_transform,
    random_crop_flip,
    random_resized_box,
    stratified_subset,
    train_transform,
)

__all__ = [
    "Archive",
    "Dataset",
    "DatasetError",
    "Feed",
    "Fetch",
    "ImageFiles",
    "Normalizer",
    "ResidentFeed",
    "StreamFeed",
    "check_available",
    "crop_pad",
    "dataset_arrays",
    "dataset_from_arrays",
    "ensure_extracted",
    "eval_transform",
    "list_image_folder",
    "load_data",
    "load_dataset",
    "load_digits",
    "make_feed",
    "make_synthetic",
    "open_rgb",
    "random_crop_flip",
    "random_resized_box",
    "read_cifar_folder",
    "steps_per_epoch",
    "stratified_subset",
    "train_batches",
    "train_transform",
]
