"""Peak memory of `explorer train` / `explorer run` on image folders of growing size.

Streaming decodes a batch at a time in DataLoader workers, so the whole process
tree's peak memory should not grow with the number of images. Make the folders
first (CIFAR-10 written out as JPEGs):

    python benchmarks/make_jpeg_folder.py /tmp/jpeg5k --train 5000 --val 1000 --size 64
    python benchmarks/make_jpeg_folder.py /tmp/jpeg30k --train 30000 --val 1000 --size 64
    python benchmarks/stream_memory.py /tmp/jpeg5k /tmp/jpeg30k --steps 30 [--run]

For each folder it prints the tree's peak summed PSS and RSS (see proctree.py),
the wall time of the command, and the seconds from the trainer's start to its
first step (in-process, through `train_trial`'s on_step).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from proctree import mb, measure


def spec_for(folder: Path, *, pipeline: str, resolution: int, batch: int,
             workers_cpus: int) -> dict[str, object]:
    return {
        "name": f"stream-memory-{folder.name}",
        "model": {"family": "resnext", "template": "cifar", "depths": [1, 1, 1],
                  "stem_width": 16, "widths": [32, 64, 128], "cardinality": 1,
                  "bottleneck_width": 8},
        "spaces": {"one": {"axes": {"cardinality": [1]}}},
        "data": {"dataset": "imagefolder", "num_classes": 10, "root": str(folder),
                 "download": False, "resolution": resolution, "pipeline": pipeline,
                 },
        "train": {"epochs": 1, "batch_size": batch, "lr": 0.1, "precision": "fp32",
                  "channels_last": False, "seeds": [0]},
        "resources": {"cpus_per_trial": workers_cpus, "gpus_per_trial": 0},
    }


def first_step_seconds(spec_path: Path) -> float:
    """Seconds from calling train_trial (data listed, model built) to its first step."""
    from explorer.data import load_data
    from explorer.space import enumerate_spec
    from explorer.spec import load_spec
    from explorer.train import train_trial

    spec = load_spec(spec_path)
    arch = enumerate_spec(spec).candidates[0].arch
    start = time.perf_counter()
    files = load_data(spec.data)
    listed = time.perf_counter() - start
    seen: list[float] = []
    begin = time.perf_counter()
    train_trial(arch, files, spec.train, seed=0, max_steps=1,
                on_step=lambda i, n: seen.append(time.perf_counter() - begin))
    print(f"    load_data (stream: listing + stats; resident: decoding): {listed:.2f} s; "
          f"train_trial start -> first step: {seen[0]:.2f} s")
    return seen[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folders", type=Path, nargs="+")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--cpus", type=int, default=2, help="cpus_per_trial: loader workers")
    parser.add_argument("--pipeline", default="stream", choices=["stream", "resident"])
    parser.add_argument("--run", action="store_true",
                        help="also `explorer run` (Ray, one trial) for the same steps")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="stream-memory-"))
    for folder in args.folders:
        n = sum(1 for _ in (folder / "train").rglob("*.jpg"))
        spec = spec_for(folder, pipeline=args.pipeline, resolution=args.resolution,
                        batch=args.batch_size, workers_cpus=args.cpus)
        path = scratch / f"{folder.name}.yaml"
        path.write_text(yaml.safe_dump(spec))
        from explorer.space import enumerate_spec
        from explorer.spec import load_spec

        key = enumerate_spec(load_spec(path)).candidates[0].key
        cmd = ["explorer", "train", str(path), "--key", key, "--max-steps", str(args.steps),
               "--device", "cpu", "--json"]
        got = measure(cmd, interval=0.1)
        if got.returncode != 0:
            sys.exit(f"explorer train failed on {folder}: {got.stderr.strip()[-500:]}")
        final = json.loads(got.stdout.strip().splitlines()[-1])
        print(f"{folder} ({n:,} training images, pipeline {args.pipeline}):")
        print(f"  explorer train, {args.steps} steps: peak PSS sum {mb(got.peaks.pss_sum)}, "
              f"RSS sum {mb(got.peaks.rss_sum)}, per-process RSS peaks (VmHWM) summed "
              f"{mb(got.peaks.hwm_sum)}, {len(got.peaks.per_process)} processes, "
              f"{got.seconds:.1f} s wall, {final['train_images_per_sec']:.0f} images/s")
        first_step_seconds(path)
        if args.run:
            runs = scratch / f"runs-{folder.name}"
            got = measure(["explorer", "run", str(path), "--runs-dir", str(runs),
                           "--num-cpus", str(args.cpus), "--max-steps", str(args.steps)],
                          interval=0.5)
            if got.returncode != 0:
                sys.exit(f"explorer run failed on {folder}: {got.stderr.strip()[-800:]}")
            print(f"  explorer run, {args.steps} steps: peak PSS sum {mb(got.peaks.pss_sum)}, "
                  f"RSS sum {mb(got.peaks.rss_sum)}, {len(got.peaks.per_process)} processes, "
                  f"{got.seconds:.1f} s wall")


if __name__ == "__main__":
    main()
