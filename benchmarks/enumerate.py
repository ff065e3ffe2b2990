"""How fast a large design space is enumerated with exact complexity, and how that
compares with building each network and counting it with fvcore.

    python benchmarks/enumerate.py [--fvcore 5] [--profile]

Builds (in memory, through parse_spec) a CIFAR-template spec whose grid over
depths x widths x stem_width x cardinality x bottleneck_width has 128,000
points, enumerates it with `enumerate_spec` (formula counts, dedupe, checks),
then builds a few of the candidates with explorer.models.build_model and
measures them with fvcore (explorer.models.measure). Prints measured figures;
asserts nothing but that fvcore and the formula agree on the sampled models.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import itertools
import pstats
import random
import time

from explorer.space import enumerate_spec
from explorer.spec import parse_spec

DEPTHS = [list(d) for d in itertools.product((1, 2, 3), repeat=3)][:20]  # 20 stage depths
WIDTHS = [[64, 128, 256], [128, 256, 512], [256, 512, 1024], [96, 192, 384], [128, 128, 128]]
STEM = [16, 24, 32, 48, 64, 80, 96, 128]
CARDINALITY = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32]
BOTTLENECK = [4, 6, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64, 72]


def benchmark_spec() -> str:
    def flow(values: list) -> str:
        return "[" + ", ".join(str(v).replace(" ", "") for v in values) + "]"

    return f"""\
name: enumerate-benchmark
model:
  template: cifar
  depths: [3, 3, 3]
  stem_width: 64
  widths: [256, 512, 1024]
  cardinality: 1
  bottleneck_width: 64
spaces:
  big:
    axes:
      depths: {flow(DEPTHS)}
      widths: {flow(WIDTHS)}
      stem_width: {flow(STEM)}
      cardinality: {flow(CARDINALITY)}
      bottleneck_width: {flow(BOTTLENECK)}
data:
  dataset: cifar10
  resolution: 32
"""


def solved_spec() -> str:
    """The same grid without the d axis: d is solved per point to preserve params."""
    text = benchmark_spec()
    head, _, _ = text.partition("      bottleneck_width:")
    return head + "    solve: {field: bottleneck_width, preserve: params, tolerance: 100}\n" + \
        "data:\n  dataset: cifar10\n  resolution: 32\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fvcore", type=int, default=5, help="candidates to measure with fvcore")
    parser.add_argument("--profile", action="store_true", help="cProfile the enumeration")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    start = time.perf_counter()
    spec = parse_spec(benchmark_spec(), "<benchmark>")
    parse_s = time.perf_counter() - start
    points = len(DEPTHS) * len(WIDTHS) * len(STEM) * len(CARDINALITY) * len(BOTTLENECK)

    profiler = cProfile.Profile() if args.profile else None
    start, cpu = time.perf_counter(), time.process_time()
    if profiler:
        profiler.enable()
    result = enumerate_spec(spec)
    if profiler:
        profiler.disable()
    enum_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu
    n = len(result.candidates)
    per_candidate = enum_s / max(1, len(result.candidates) + len(result.dropped))

    print(f"grid points:            {points:,}")
    print(f"candidates:             {n:,} ({len(result.dropped):,} dropped)")
    print(f"parse_spec:             {parse_s * 1e3:.1f} ms")
    print(f"enumerate_spec:         {enum_s:.2f} s wall, {cpu_s:.2f} s CPU (one process)")
    print(f"throughput:             {(n + len(result.dropped)) / enum_s:,.0f} points/s "
          f"({per_candidate * 1e6:.1f} us per point)")
    verdict = "met" if points >= 100_000 and enum_s < 10 else "NOT met"
    print(f"target (>=100k in <10s): {verdict} (wall)")
    if profiler:
        stream = io.StringIO()
        pstats.Stats(profiler, stream=stream).sort_stats("tottime").print_stats(15)
        print(stream.getvalue())

    solved = parse_spec(solved_spec(), "<benchmark-solved>")
    start, cpu = time.perf_counter(), time.process_time()
    with_solve = enumerate_spec(solved)
    solve_s, solve_cpu = time.perf_counter() - start, time.process_time() - cpu
    solve_points = len(with_solve.candidates) + len(with_solve.dropped)
    print(f"with d solved:          {solve_points:,} points in {solve_s:.2f} s wall, "
          f"{solve_cpu:.2f} s CPU: {solve_points / solve_s:,.0f} points/s")

    if args.fvcore <= 0:
        return
    import torch

    from explorer.models import build_model
    from explorer.models.measure import measure

    torch.set_num_threads(max(1, torch.get_num_threads()))
    sample = random.Random(args.seed).sample(result.candidates, min(args.fvcore, n))
    times = []
    for cand in sample:
        torch.manual_seed(0)
        t0 = time.perf_counter()
        model = build_model(cand.arch, spec.num_classes)
        t1 = time.perf_counter()
        measured = measure(model, spec.data.resolution)
        t2 = time.perf_counter()
        agree = (measured.params, measured.flops, measured.acts) == (
            cand.complexity.params, cand.complexity.flops, cand.complexity.acts)
        times.append((t1 - t0, t2 - t1))
        print(f"fvcore {cand.arch.label():<22} {cand.complexity.params / 1e6:7.2f}M params "
              f"{cand.complexity.flops / 1e9:6.2f}G flops: build {t1 - t0:.2f} s, "
              f"measure {t2 - t1:.2f} s, {'agrees' if agree else 'DIFFERS'}")
        if not agree:
            raise SystemExit(f"fvcore {measured} != formula {cand.complexity}")
    build = sum(b for b, _ in times) / len(times)
    fv = sum(m for _, m in times) / len(times)
    print(f"fvcore per model:       {fv:.3f} s measure (+ {build:.3f} s build)")
    print(f"formula per model:      {per_candidate * 1e6:.1f} us (whole enumeration / points)")
    print(f"speed-up per model:     {fv / per_candidate:,.0f}x measure only, "
          f"{(fv + build) / per_candidate:,.0f}x with the build")


if __name__ == "__main__":
    main()
