"""Training throughput and latency of the paper's three block forms, side by side.

The grouped (Fig. 3c), concatenated (3b) and split (3a) forms compute the
same function (explorer.models proves it by weight conversion), with the
same flops and parameters; how fast each trains is a property of the
hardware and the kernels. This prints a markdown table for docs/block_forms.md.

    python benchmarks/block_forms.py --threads 2
    python benchmarks/block_forms.py --cardinality 32 --d 4 --device cuda
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
from pathlib import Path

import torch

from explorer.arch import BLOCK_FORMS, make_arch
from explorer.complexity import count
from explorer.cost import Timing, measure_cost
from explorer.spec import TrainSpec


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--width", type=int, default=64, help="first stage width (paper: 256)")
    parser.add_argument("--cardinality", type=int, default=8)
    parser.add_argument("--d", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3, help="best of this many rounds")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--channels-last", action="store_true")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = TrainSpec(
        batch_size=args.batch_size, precision="fp32", channels_last=args.channels_last
    )
    device = torch.device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    base = make_arch(
        template="cifar", stem_width=args.width // 2, depths=(3, 3, 3),
        widths=(args.width, 2 * args.width, 4 * args.width), cardinality=args.cardinality,
        bottleneck_width=args.d,
    )
    c = count(base, args.resolution, 10)
    print(f"device: {where} ({device.type}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"model: ResNeXt-29 {base.label()} widths {list(base.widths)}, "
          f"{c.params / 1e6:.2f} M params, {c.flops / 1e6:.1f} M multiply-adds/image at "
          f"{args.resolution}x{args.resolution}; batch {args.batch_size}, fp32, "
          f"{'channels_last' if args.channels_last else 'NCHW'}; best of {args.rounds} rounds")
    print()
    print("| block form | train images/s | vs grouped | batch-1 latency (ms) |")
    print("| --- | ---: | ---: | ---: |")
    results: dict[str, tuple[float, float]] = {}
    for form in BLOCK_FORMS:
        arch = dataclasses.replace(base, block=form)
        best_tp, best_lat = 0.0, float("inf")
        for _ in range(args.rounds):
            cost = measure_cost(arch, recipe, Timing(
                resolution=args.resolution, device=str(device), train_steps=args.steps,
                repeats=args.repeats,
            ))
            best_tp = max(best_tp, cost.train_images_per_sec)
            best_lat = min(best_lat, cost.latency_ms)
        results[form] = (best_tp, best_lat)
        rel = best_tp / results["grouped"][0]
        print(f"| {form} | {best_tp:.1f} | {rel:.2f}x | {best_lat:.2f} |", flush=True)
    if Path("/proc/loadavg").is_file():
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
        print(f"\nload average at the end: {load}")


if __name__ == "__main__":
    main()
