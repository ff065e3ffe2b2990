"""How fast a large design space is enumerated with exact complexity, and how that
compares with building each network and counting it with fvcore.

    python benchmarks/enumerate.py [--fvcore 5] [--profile] [--no-cli] [--repeat N]
    python benchmarks/enumerate.py --engines-only --repeat 6   # section 1 alone

1. The two complexity engines on random ImageNet-template records of 4 stages:
   `count` (one Arch at a time, the reference) and `count_stages` (numpy
   columns, one call): candidates/s of each.
2. A CIFAR-template spec (built in memory through parse_spec) whose grid over
   depths x widths x stem_width x cardinality x bottleneck_width has 128,000
   points, enumerated by `enumerate_per_point` (per point) and by `CandidateStream`
   (vectorised), without and with d solved per point.
3. The `explorer enumerate` command end to end (a subprocess: interpreter
   start-up, parsing, enumeration, CSV writing) on benchmarks/enumerate_deep.yaml's
   `deep` (252,720 points of 5-27-block networks) and `deeper` (758,160)
   spaces: wall time and the child's peak RSS, for memory against size.
4. A few candidates built with explorer.models.build_model and measured with
   fvcore (explorer.models.measure).

Prints measured figures; asserts nothing but that the engines agree and that
fvcore and the formula agree on the sampled models.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import itertools
import os
import pstats
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from explorer.arch import Arch, Stage, stage_strides
from explorer.complexity import count, count_stages
from explorer.space import CandidateStream, enumerate_per_point
from explorer.spec import Spec, parse_spec

REPO = Path(__file__).resolve().parents[1]
DEEP = REPO / "benchmarks" / "enumerate_deep.yaml"

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


def engines(seed: int, n_vectorised: int = 1_000_000, n_reference: int = 20_000,
            repeat: int = 1) -> None:
    """Candidates/s of count (per record) and count_stages (columns), and that they agree;
    with `repeat`, count_stages' best CPU time of that many calls too (on a shared machine
    the CPU time of the best call is steadier than one call's wall time)."""
    rng = np.random.default_rng(seed)
    cols = {"stem_width": rng.integers(16, 129, n_vectorised),
            "depths": rng.integers(1, 18, (n_vectorised, 4)),
            "widths": rng.integers(64, 2049, (n_vectorised, 4)),
            "cardinalities": rng.integers(1, 65, (n_vectorised, 4)),
            "bottleneck_widths": rng.integers(1, 65, (n_vectorised, 4))}
    start = time.perf_counter()
    params, flops, acts = count_stages(template="imagenet", block="grouped", resolution=224,
                                       num_classes=1000, **cols)
    vec_s = time.perf_counter() - start
    cpu_s = []
    for _ in range(repeat - 1 if repeat > 1 else 0):
        cpu = time.process_time()
        count_stages(template="imagenet", block="grouped", resolution=224, num_classes=1000,
                     **cols)
        cpu_s.append(time.process_time() - cpu)
    strides = stage_strides("imagenet", 4)
    archs = [Arch("imagenet", int(cols["stem_width"][i]), tuple(
        Stage(int(cols["depths"][i, s]), int(cols["widths"][i, s]),
              int(cols["cardinalities"][i, s]), int(cols["bottleneck_widths"][i, s]), strides[s])
        for s in range(4))) for i in range(n_reference)]
    start = time.perf_counter()
    ref = [count(a, 224, 1000) for a in archs]
    ref_s = time.perf_counter() - start
    agree = all((c.params, c.flops, c.acts) == (int(params[i]), int(flops[i]), int(acts[i]))
                for i, c in enumerate(ref))
    print(f"count (per record):     {n_reference / ref_s:,.0f} candidates/s "
          f"({n_reference:,} random 4-stage ImageNet records, {ref_s:.2f} s)")
    print(f"count_stages (columns): {n_vectorised / vec_s:,.0f} candidates/s "
          f"({n_vectorised:,} records in one call, {vec_s:.2f} s); "
          f"{'agrees' if agree else 'DIFFERS'} on the first {n_reference:,}")
    if cpu_s:
        print(f"count_stages, best CPU time of {len(cpu_s)} more calls: "
              f"{n_vectorised / min(cpu_s):,.0f} candidates/s ({min(cpu_s):.3f} s CPU)")
    if not agree:
        raise SystemExit("count_stages differs from count")
    verdict = "met" if n_vectorised / vec_s >= 1_000_000 else "NOT met"
    print(f"target (>=1M/s library): {verdict}")


def streamed_keys(spec: Spec) -> tuple[list[str], int, float, float]:
    """CandidateStream over the spec: its keys, points, wall and CPU seconds."""
    start, cpu = time.perf_counter(), time.process_time()
    stream = CandidateStream(spec)
    keys = [k for batch in stream for k in batch.keys]
    return keys, stream.points_done, time.perf_counter() - start, time.process_time() - cpu


def cli(space: str) -> None:
    """`explorer enumerate benchmarks/enumerate_deep.yaml --space SPACE --output x.csv`, timed."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / f"{space}.csv"
        command = [sys.executable, "-m", "explorer.cli", "enumerate", str(DEEP), "--space", space,
                   "--output", str(out)]
        env = {**os.environ,
               "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        log, timing = Path(folder) / "stdout.txt", Path(folder) / "time.txt"
        gnu_time = Path("/usr/bin/time")
        if gnu_time.exists():  # its child is forked from a small process: a true peak RSS
            command = [str(gnu_time), "-o", str(timing), "-f", "%M", *command]
        start = time.perf_counter()
        with log.open("w") as sink:  # a file, not a pipe: wait4 must not wait on a full pipe
            proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
            _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        stdout = log.read_text()
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"explorer enumerate failed: {stdout}")
        peak_kib = int(timing.read_text().split()[-1]) if gnu_time.exists() else usage.ru_maxrss
        rows = sum(1 for _ in out.open()) - 1
        summary = next(x for x in stdout.splitlines() if " candidates, " in x)
        print(f"CLI {space:<7} {summary}: {rows:,} rows to CSV in {wall:.2f} s wall "
              f"({usage.ru_utime + usage.ru_stime:.2f} s CPU), peak RSS "
              f"{peak_kib / 1024:.0f} MiB, {rows / wall:,.0f} candidates/s end to end")
        if space == "deep":
            verdict = "met" if rows >= 200_000 and wall < 10 else "NOT met"
            print(f"target (>=200k to CSV in <10 s, through the CLI): {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fvcore", type=int, default=5, help="candidates to measure with fvcore")
    parser.add_argument("--profile", action="store_true", help="cProfile the enumeration")
    parser.add_argument("--no-cli", action="store_true", help="skip the end-to-end CLI runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=1,
                        help="count_stages calls to time again, best CPU time printed")
    parser.add_argument("--engines-only", action="store_true",
                        help="only section 1: count against count_stages")
    args = parser.parse_args()

    if not args.no_cli and not args.engines_only:  # first, while this process is small
        for space in ("deep", "deeper"):
            cli(space)
    engines(args.seed, repeat=args.repeat)
    if args.engines_only:
        return

    start = time.perf_counter()
    spec = parse_spec(benchmark_spec(), "<benchmark>")
    solved = parse_spec(solved_spec(), "<benchmark-solved>")
    # The vectorised engine first: enumerate_per_point's heap of Candidates would make every
    # garbage collection during the stream slow.
    stream_runs = {label: streamed_keys(parsed) for label, parsed in
                   (("grid", spec), ("d solved", solved))}
    parse_s = time.perf_counter() - start
    points = len(DEPTHS) * len(WIDTHS) * len(STEM) * len(CARDINALITY) * len(BOTTLENECK)

    profiler = cProfile.Profile() if args.profile else None
    start, cpu = time.perf_counter(), time.process_time()
    if profiler:
        profiler.enable()
    result = enumerate_per_point(spec)
    if profiler:
        profiler.disable()
    enum_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu
    n = len(result.candidates)
    per_candidate = enum_s / max(1, len(result.candidates) + len(result.dropped))

    print(f"grid points:            {points:,}")
    print(f"candidates:             {n:,} ({len(result.dropped):,} dropped)")
    print(f"parse_spec:             {parse_s * 1e3:.1f} ms")
    print(f"enumerate_per_point:    {enum_s:.2f} s wall, {cpu_s:.2f} s CPU (one process)")
    print(f"throughput:             {(n + len(result.dropped)) / enum_s:,.0f} points/s "
          f"({per_candidate * 1e6:.1f} us per point)")
    verdict = "met" if points >= 100_000 and enum_s < 10 else "NOT met"
    print(f"target (>=100k in <10s): {verdict} (wall)")
    if profiler:
        stream = io.StringIO()
        pstats.Stats(profiler, stream=stream).sort_stats("tottime").print_stats(15)
        print(stream.getvalue())

    start, cpu = time.perf_counter(), time.process_time()
    with_solve = enumerate_per_point(solved)
    solve_s, solve_cpu = time.perf_counter() - start, time.process_time() - cpu
    solve_points = len(with_solve.candidates) + len(with_solve.dropped)
    print(f"with d solved:          {solve_points:,} points in {solve_s:.2f} s wall, "
          f"{solve_cpu:.2f} s CPU: {solve_points / solve_s:,.0f} points/s")

    timed = (("grid", result, enum_s), ("d solved", with_solve, solve_s))
    for label, reference, reference_s in timed:
        keys, points, stream_s, stream_cpu = stream_runs[label]
        same = keys == [c.key for c in reference.candidates]
        rate = points / stream_s
        reference_rate = (len(reference.candidates) + len(reference.dropped)) / reference_s
        print(f"CandidateStream {label + ':':<9} {points:,} points in {stream_s:.2f} s wall, "
              f"{stream_cpu:.2f} s CPU: {rate:,.0f} points/s, "
              f"{rate / reference_rate:,.0f}x enumerate_per_point; "
              f"{'same candidates' if same else 'DIFFERENT candidates'}")
        if not same:
            raise SystemExit("CandidateStream and enumerate_per_point differ")

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
