"""How long `explorer refine` (and `explorer compare --equivalence`) take on a large store.

    python benchmarks/refine_10k.py [--models 10000] [--db PATH]   (an existing PATH is reused)

Builds a SQLite store through the store's Writer (as the sweep writes, no training):
one sampled AnyNet-like space of `--models` networks (per-stage depth 1-3, width
32-256 step 32, C in {1, 2, 4}, d in {4, 8, 16}, CIFAR template, exact complexity),
each finished with a synthetic error that is lowest at a stage-3 width of 192 and
2 points worse when the widths decrease, and a second space of the same size drawn
with non-decreasing widths. Then it times, through the `explorer` command (a fresh
process each, so imports count):

- `explorer refine NAME --space anynet --json` (2,000 bootstrap draws, every constraint),
- the same with `--write CHILD.yaml` and `explorer validate` of the child,
- `explorer compare NAME --equivalence 0.1` (two spaces, 2,000 bootstrap draws).

Prints wall and CPU seconds (on a shared machine the wall time includes waiting for a
core) and the child processes' peak RSS; asserts nothing but exit codes.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from itertools import pairwise
from pathlib import Path

from explorer.plan import plan_trials
from explorer.space import Candidate, enumerate_spec
from explorer.spec import parse_spec
from explorer.store import Writer

SPEC = """\
name: anynet-10k
model: {{template: cifar, depths: [1, 1, 1], stem_width: 16, widths: [64, 128, 256],
        cardinality: 1, bottleneck_width: 16}}
spaces:
  anynet:
    sample:
      n: {n}
      seed: 0
      stages: &stages
        depths: {{low: 1, high: 3}}
        widths: {{low: 32, high: 256, step: 32}}
        cardinality: [1, 2, 4]
        bottleneck_width: [4, 8, 16]
  ordered:
    sample:
      n: {n}
      seed: 1
      stages: *stages
      non_decreasing: [widths]
data: {{dataset: synthetic, num_classes: 10, resolution: 16}}
train: {{epochs: 1, seeds: [0]}}
"""


def error(candidate: Candidate) -> float:
    widths = candidate.arch.widths
    wobble = (int(candidate.key[:8], 16) % 1000) / 1000.0
    return (5.0 + 1.5 * abs(widths[2] - 192) / 32
            + 2.0 * any(b < a for a, b in pairwise(widths)) + 0.6 * wobble)


def build(url: str, n: int) -> None:
    text = SPEC.format(n=n)
    spec = parse_spec(text, "anynet-10k.yaml")
    candidates = enumerate_spec(spec).candidates
    with Writer.open(url) as store:
        record = store.create_or_get_experiment(spec.name, text, spec.hash,
                                                spec.model_dump(mode="json"))
        store.add_candidates(record.id, candidates)
        plans = plan_trials(spec, candidates)
        store.add_trials(record.id, [(p.trial_key, p.candidate_key, p.seed) for p in plans])
        by_key = {c.key: c for c in candidates}
        for plan in plans:
            value = error(by_key[plan.candidate_key])
            store.finish_trial(record.id, plan.trial_key, "finished",
                               {"test_error": value, "test_top5_error": value / 5})


def timed(args: list[str]) -> tuple[str, str]:
    """`explorer ARGS`: (its wall and CPU seconds in words, its stdout)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(["explorer", *args], capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if result.returncode != 0:
        sys.exit(f"explorer {' '.join(args)} exited {result.returncode}: {result.stderr}")
    return f"{wall:.2f} s wall, {cpu:.2f} s CPU", result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=10_000, help="models per space")
    parser.add_argument("--db", type=Path, help="the SQLite file to build (default: a temp dir)")
    options = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="refine-bench-"))
    db = options.db or folder / "explorer.db"
    url = f"sqlite:///{db}"
    if options.db is not None and options.db.exists():
        print(f"reusing {db} (built by an earlier run)")
    else:
        start = time.perf_counter()
        build(url, options.models)
        print(f"built {2 * options.models:,} finished trials through the Writer in "
              f"{time.perf_counter() - start:.1f} s ({db})")
    wall, out = timed(["refine", "anynet-10k", "--space", "anynet", "--store", url, "--json"])
    result = json.loads(out)
    print(f"explorer refine --json: {wall} for {result['models']:,} models, "
          f"{len(result['good_regions'])} good regions, {len(result['proposals'])} constraints "
          f"read; first: {result['proposals'][0]['name']} "
          f"({result['proposals'][0]['equivalence']['finding']})")
    child = folder / "child.yaml"
    wall, _ = timed(["refine", "anynet-10k", "--space", "anynet", "--store", url,
                     "--write", str(child)])
    print(f"explorer refine --write: {wall}")
    wall, _ = timed(["validate", str(child)])
    print(f"explorer validate CHILD: {wall}")
    wall, out = timed(["compare", "anynet-10k", "--store", url, "--equivalence", "0.1",
                       "--json"])
    pair = json.loads(out)["pairs"][0]
    print(f"explorer compare --equivalence 0.1: {wall}; "
          f"{pair['equivalence']['sentence']}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"peak RSS of the explorer processes: {peak:.0f} MiB")


if __name__ == "__main__":
    main()
