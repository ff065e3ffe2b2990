"""Memory of Ray trial workers with the data shared through the object store, and without.

`explorer run` loads a resident dataset once in the driver and hands it to every
trial through Ray's object store (tune.with_parameters; numpy arrays, mapped by
each worker from the node's shared memory). Before, each worker loaded its own
copy. This runs the same sweep both ways (the per-worker way by handing the sweep
no data, as the code did before) and prints the peak memory of the trial workers
and of the whole process tree:

    python benchmarks/shared_data_memory.py --trials 2 --max-steps 40

CIFAR-10 from /work/shared/datasets (50,000 training images, 150 MB as uint8),
a tiny ResNeXt, `--trials` candidates trained concurrently, one CPU each.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from proctree import Peaks, mb, measure

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def spec(trials: int) -> dict[str, object]:
    return {
        "name": "shared-data-memory",
        "model": {"family": "resnext", "template": "cifar", "depths": [1, 1, 1],
                  "stem_width": 16, "widths": [32, 64, 128], "cardinality": 1,
                  "bottleneck_width": 8},
        "spaces": {"c": {"axes": {"cardinality": [1, 2, 4, 8][:trials]}}},
        "data": {"dataset": "cifar10", "root": str(SHARED_DATA), "download": False,
                 "resolution": 32},
        "train": {"epochs": 1, "batch_size": 64, "precision": "fp32", "channels_last": False,
                  "seeds": [0]},
        "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0, "max_concurrent": trials},
    }


def inner(mode: str, spec_path: str, runs: str, max_steps: str, cpus: str) -> None:
    """The measured process: `explorer run`, the sweep handed no data in `per-worker`."""
    import explorer.sweep
    from explorer.cli import main

    if mode == "per-worker":
        original = explorer.sweep.run_sweep

        def without_shared_data(strategy, sink, options, **kwargs):  # type: ignore[no-untyped-def]
            kwargs.pop("loaded", None)  # the driver's copy: each worker loads its own instead
            original(strategy, sink, dataclasses.replace(options, data=None), **kwargs)

        explorer.sweep.run_sweep = without_shared_data  # type: ignore[assignment]
    main(["run", spec_path, "--runs-dir", runs, "--num-cpus", cpus, "--max-steps", max_steps])


def trial_workers(peaks: Peaks) -> list[tuple[int, int, int]]:
    """(RSS, PSS, USS) at each trial worker's highest PSS."""
    return [(p.rss, p.pss, p.uss) for p in peaks.per_process.values()
            if "ImplicitFunc" in p.cmdline or "run_trial" in p.cmdline]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--inner":
        inner(*sys.argv[2:7])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=40)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="shared-data-"))
    path = scratch / "spec.yaml"
    path.write_text(yaml.safe_dump(spec(args.trials)))
    for mode in ("per-worker", "shared"):
        runs = scratch / f"runs-{mode}"
        got = measure([sys.executable, __file__, "--inner", mode, str(path), str(runs),
                       str(args.max_steps), str(args.trials)], interval=0.3)
        if got.returncode != 0:
            sys.exit(f"{mode}: explorer run failed: {got.stderr.strip()[-800:]}")
        workers = trial_workers(got.peaks)
        print(f"{mode:>10}: {len(workers)} trial workers; per worker at its peak: " + "; ".join(
            f"RSS {mb(r)} PSS {mb(p)} USS {mb(u)}" for r, p, u in workers))
        print(f"{'':>10}  workers' PSS summed {mb(sum(p for _, p, _ in workers))}; whole tree "
              f"peak PSS {mb(got.peaks.pss_sum)}, {got.seconds:.0f} s")


if __name__ == "__main__":
    main()
