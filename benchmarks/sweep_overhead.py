"""What a Ray Tune sweep costs beyond its trials' own training.

Runs a sweep of N tiny digits trials at a given concurrency through the
experiment runner (`explorer.experiment.run_experiment`, as `explorer run`
does) on a local Ray started here, and prints:

- Ray's start-up time (``ray.init``);
- the sweep's wall time (planning, Tune, workers, trials, store writes);
- the ideal time: the trials' own seconds ÷ concurrency, where a trial's own
  seconds are the sum of its epochs' (training + evaluation, from the store);
- the ratio of wall time to the ideal (the goal: ≤ 1.15, Ray's start-up apart),
  and where the rest went: the wait until the first trial reports that it
  started (Tune, worker processes, imports), each trial's set-up inside its
  worker (started → finished minus its epochs), and the gaps between trials.

On a GPU (``torch.cuda.is_available()``) it also compares the aggregate
training images/s of 4 small trials sharing the GPU (gpus_per_trial 0.25)
with one trial alone (gpus_per_trial 1).

    python benchmarks/sweep_overhead.py
    python benchmarks/sweep_overhead.py --trials 16 --concurrency 2 --epochs 6 --resolution 16
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from explorer.console import SweepDisplay
from explorer.experiment import RunRequest, run_experiment
from explorer.spec import parse_spec
from explorer.store import Reader

CARDINALITIES = [1, 2, 4, 8]


def spec_text(name: str, *, cardinalities: list[int], seeds: int, epochs: int,
              resolution: int, concurrency: int, gpus_per_trial: float = 0.0) -> str:
    """A tiny digits spec: one trial per cardinality and seed."""
    cuda = gpus_per_trial > 0
    return yaml.safe_dump({
        "name": name,
        "model": {"family": "resnext", "template": "cifar", "depths": [1, 1], "stem_width": 8,
                  "widths": [16, 32], "cardinality": 1, "bottleneck_width": 4,
                  "block": "grouped"},
        "spaces": {"grid": {"axes": {"cardinality": cardinalities}}},
        "data": {"dataset": "digits", "resolution": resolution},
        "train": {"epochs": epochs, "batch_size": 64, "precision": "bf16" if cuda else "fp32",
                  "channels_last": cuda, "seeds": list(range(seeds))},
        "search": {"strategy": "grid"},
        "resources": {"cpus_per_trial": 1, "gpus_per_trial": gpus_per_trial,
                      "max_concurrent": concurrency},
    }, sort_keys=False)


def sweep(runs: Path, text: str) -> tuple[float, Any, Any]:
    """Run the spec's sweep; its wall time and the store's trials and epochs frames."""
    spec = parse_spec(text)
    started = time.monotonic()
    summary = run_experiment(RunRequest(spec=spec, spec_text=text, runs_dir=runs),
                             SweepDisplay(Console(file=io.StringIO())))
    wall = time.monotonic() - started
    if summary.failed or summary.finished != summary.planned:
        raise SystemExit(f"{spec.name}: {summary.finished} of {summary.planned} trials "
                         f"finished, failed: {summary.failed}")
    with Reader.open(runs) as store:
        trials = store.trials_frame([spec.name]).drop_duplicates("trial_key")
        epochs = store.epochs_frame(experiment_names=[spec.name])
    return wall, trials.set_index("trial_key"), epochs


def overhead(args: argparse.Namespace, runs: Path, ray_start: float) -> None:
    text = spec_text("overhead", cardinalities=CARDINALITIES,
                     seeds=args.trials // len(CARDINALITIES), epochs=args.epochs,
                     resolution=args.resolution, concurrency=args.concurrency)
    began = time.time()
    wall, trials, epochs = sweep(runs, text)
    own = epochs.groupby("trial_key")["seconds"].sum()
    start = trials["started_at"].map(lambda t: t.timestamp()) - began
    end = trials["finished_at"].map(lambda t: t.timestamp()) - began
    in_worker = (end - start) - own
    ideal = own.sum() / args.concurrency
    span_ideal = (end - start).sum() / args.concurrency
    first = start.min()
    after_last = wall - end.max()
    # Time a worker slot stood idle between one trial's end and the next one's start.
    order = sorted(zip(start, end, strict=True))
    gaps = [max(nxt - prev_end, 0.0) for (_, prev_end), (nxt, _) in
            zip(order[:-args.concurrency], order[args.concurrency:], strict=True)]

    print(f"sweep: {len(trials)} trials × {args.epochs} epochs, digits at "
          f"{args.resolution}px, concurrency {args.concurrency}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"  Ray start-up (ray.init)                  {ray_start:7.1f} s")
    print(f"  sweep wall time (Ray already up)         {wall:7.1f} s")
    print(f"  ideal: trials' own seconds ÷ concurrency {ideal:7.1f} s  "
          f"(their epochs: {own.sum():.1f} s in all, {own.mean():.2f} s a trial)")
    print(f"  ratio wall ÷ ideal                       {wall / ideal:7.2f}   (goal ≤ 1.15, Ray's "
          f"start-up apart; fixed cost wall - ideal = {wall - ideal:.1f} s)")
    print(f"  started→finished per trial ÷ concurrency {span_ideal:7.1f} s  "
          f"(ratio wall ÷ it {wall / span_ideal:.2f})")
    print("where the rest went:")
    print(f"  sweep start → first trial started        {first:7.1f} s  "
          "(planning, Tune, worker processes, their imports)")
    print(f"  set-up inside a trial, mean (max)        {in_worker.mean():7.2f} s  "
          f"({in_worker.max():.2f} s; the first trial of a worker loads torch and the data)")
    print(f"  idle slot between trials, mean (max)     "
          f"{(sum(gaps) / len(gaps)) if gaps else 0.0:7.2f} s  ({max(gaps, default=0.0):.2f} s)")
    print(f"  last trial finished → sweep returned     {after_last:7.1f} s")


def gpu_sharing(args: argparse.Namespace, root: Path) -> None:
    import torch

    if not torch.cuda.is_available():
        print("GPU sharing: no GPU: skipped")
        return
    rates = {}
    for name, trials, share in (("gpu-alone", 1, 1.0), ("gpu-shared", 4, 0.25)):
        # The same network each time, with 1 or 4 seeds.
        text = spec_text(name, cardinalities=[1], seeds=trials, epochs=args.gpu_epochs,
                         resolution=args.gpu_resolution, concurrency=trials,
                         gpus_per_trial=share)
        _, frame, epochs = sweep(root / name, text)
        assert len(frame) == trials, (name, len(frame))
        # Epochs after the first (cuDNN autotuning, allocator warm-up), per trial, summed:
        # the trials run side by side, so their rates add up.
        steady = epochs[epochs["epoch"] > 1] if args.gpu_epochs > 1 else epochs
        rates[name] = steady.groupby("trial_key")["train_images_per_sec"].mean().sum()
    print(f"GPU sharing ({torch.cuda.get_device_name()}), digits at {args.gpu_resolution}px:")
    print(f"  one trial alone (gpus_per_trial 1)       {rates['gpu-alone']:10.0f} images/s")
    print(f"  4 trials sharing it (gpus_per_trial 0.25) {rates['gpu-shared']:9.0f} images/s "
          f"aggregate ({rates['gpu-shared'] / rates['gpu-alone']:.2f}×)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8, help="a multiple of 4 (default 8)")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--resolution", type=int, default=16)
    parser.add_argument("--gpu-epochs", type=int, default=3)
    parser.add_argument("--gpu-resolution", type=int, default=32)
    parser.add_argument("--runs-dir", type=Path, help="keep the results here (default: a "
                        "temporary folder, removed afterwards)")
    args = parser.parse_args()
    if args.trials % len(CARDINALITIES):
        parser.error("--trials must be a multiple of 4")

    import ray
    import torch

    root = args.runs_dir or Path(tempfile.mkdtemp(prefix="sweep-overhead-"))
    gpus = torch.cuda.device_count()
    started = time.monotonic()
    # All CPUs when a GPU needs 4 trials side by side; the CPU sweep is capped by max_concurrent.
    ray.init(address="local", num_cpus=max(args.concurrency, 4) if gpus else args.concurrency,
             include_dashboard=False, log_to_driver=False)
    ray_start = time.monotonic() - started
    try:
        overhead(args, root / "cpu", ray_start)
        gpu_sharing(args, root)
    finally:
        ray.shutdown()
        if args.runs_dir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
