"""Time `explorer import` of a generated NDS-layout file (ResNeXt-A-like CIFAR jobs).

    python benchmarks/import_nds.py [--jobs 100000] [--epochs 10] [--again 1]

The file is generated here, seeded: per job three stages, each depth 1-8, width 64-512
(non-decreasing), bottleneck multiplier 0.25/0.5/1 and 1/2/4/8 groups, a CIFAR stem of
16 channels; params from explorer's count and flops with pycls's FC bias (as NDS's
files carry them); per-epoch test/train errors and losses. Prints the file's size, then
the wall time, CPU time and peak memory of `explorer import` into a fresh runs
directory, and of the same import again (idempotent: it rewrites the same rows).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from explorer.arch import Arch, Stage
from explorer.complexity import count


def job(i: int, rng: random.Random, epochs: int) -> dict[str, object]:
    ds = [rng.randint(1, 8) for _ in range(3)]
    ws = sorted(rng.choice([64, 128, 256, 512]) for _ in range(3))
    bm, g = rng.choice([0.25, 0.5, 1.0]), rng.choice([1, 2, 4, 8])
    inner = [round(w * bm) for w in ws]
    arch = Arch("cifar", 16, tuple(Stage(d, w, g, b // g, s) for d, w, b, s
                                   in zip(ds, ws, inner, (1, 2, 2), strict=True)))
    cx = count(arch, 32, 10)
    start = rng.uniform(30, 70)
    test = [round(start * (0.8 ** e) + rng.uniform(0, 2), 3) for e in range(epochs)]
    return {"job_id": i, "rng_seed": 1, "params": cx.params, "flops": cx.flops + 10,
            "net": {"block_type": "res_bottleneck_block", "stem_type": "res_stem_cifar",
                    "stem_w": 16, "ds": ds, "ws": ws, "ss": [1, 2, 2], "bot_muls": [bm] * 3,
                    "num_gs": [g] * 3},
            "optim": {"base_lr": 0.1, "wd": 5e-4, "max_ep": epochs},
            "train_ep_top1": [t + 3 for t in test], "test_ep_top1": test,
            "train_ep_loss": [t / 40 for t in test], "min_test_top1": min(test),
            "iter_time": 0.05, "prec_time": 0.002}


def timed(command: list[str]) -> tuple[float, float, float, str]:
    """Wall seconds, the child's CPU seconds (user + system: what a shared machine's load
    does not inflate), its peak RSS (MiB) and its output."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        sys.exit(f"{' '.join(command)} exited {done.returncode}: {done.stderr.strip()}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, cpu, after.ru_maxrss / 1024, (done.stdout + done.stderr).strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--again", type=int, default=1,
                        help="Times to repeat the import on the same store (0: none).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ResNeXt-A.json"
        rng = random.Random(0)
        start = time.perf_counter()
        path.write_text(json.dumps([job(i, rng, args.epochs) for i in range(args.jobs)]))
        print(f"generated {args.jobs:,} jobs x {args.epochs} epochs: "
              f"{path.stat().st_size / 2**20:.0f} MiB in {time.perf_counter() - start:.1f} s",
              flush=True)
        command = ["explorer", "import", str(path), "--format", "nds", "--name", "nds-bench",
                   "--runs-dir", str(Path(tmp) / "runs")]
        labels = ["import into a fresh store"] + ["the same import again"] * args.again
        for label in labels:
            seconds, cpu, peak, output = timed(command)
            print(f"{label}: {seconds:.1f} s wall ({args.jobs / seconds:,.0f} jobs/s), "
                  f"{cpu:.1f} s CPU, peak RSS {peak:.0f} MiB", flush=True)
            print("  " + output.replace("\n", "\n  "), flush=True)


if __name__ == "__main__":
    main()
