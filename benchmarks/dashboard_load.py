"""How fast the dashboard renders a large results store.

    python benchmarks/dashboard_load.py [--trials 10000] [--epochs 30] [--db PATH] [--profile]

Builds a SQLite store with 10,000 trials of 3,334 real ResNeXt-29-style
candidates (exact complexity from explorer.complexity) in four spaces, three
seeds each, and 30 epoch rows per trial (300,000 rows), by bulk insert into the
store's own tables (the writer API's one-transaction-per-call is made for a
live sweep, not for this). Then, with Streamlit's AppTest (the app in this
process, no browser), it measures:

- the first full render with empty caches (AppTest.run() wall time), with the
  modules already imported (their one-off import time is printed separately);
- a rerun after one trial finished (what the live poll triggers during a sweep);
- a filter change: a sidebar widget set, the app rerun;
- a switch to each other view.

Targets: first render under 3 s, a filter change under 0.5 s. Prints the
figures; asserts only that the app ran without an exception. (It finishes one
trial of the store it measures: pass --db only for a scratch file.)
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import random
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import insert, update

from explorer.arch import Arch, make_arch
from explorer.complexity import Complexity, count
from explorer.store import Writer
from explorer.store.schema import candidate_table, epoch_table, revision_table, trial_table

SPACES = ("cardinality", "deeper", "wider", "random")
CARDINALITY = (1, 2, 4, 8, 16, 32, 64)


def _arch(space: str, rng: random.Random) -> tuple[Arch, dict[str, Any]]:
    c, d = 1, 64
    depths: tuple[int, ...] = (3, 3, 3)
    widths: tuple[int, ...] = (256, 512, 1024)
    if space in ("cardinality", "random"):
        c = rng.choice(CARDINALITY)
        d = rng.randrange(2, 129)
        depths = rng.choice(((3, 3, 3), (2, 2, 2), (4, 4, 4), (3, 4, 6)))
    if space in ("deeper", "random"):
        depths = tuple(rng.randrange(1, 12) for _ in range(3))
    if space in ("wider", "random"):
        base = rng.randrange(4, 100) * 16
        widths = (base, base * rng.randrange(1, 4), base * rng.randrange(2, 6))
    arch = make_arch(template="cifar", stem_width=64, depths=depths, widths=widths,
                     cardinality=c, bottleneck_width=d)
    return arch, {"cardinality": c, "bottleneck_width": d, "depths": depths, "widths": widths}


def build_large_store(path: Path, trials: int = 10_000, epochs: int = 30, seeds: int = 3,
                      seed: int = 0) -> dict[str, int]:
    """Write the benchmark store at `path` (a new SQLite file); returns row counts."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    spec = {"name": "large", "train": {"epochs": epochs, "seeds": list(range(seeds))}}
    with Writer.open(path) as store:
        record = store.create_or_get_experiment(
            "large", "name: large\n", "large-hash", spec,
            environment={"git_revision": None, "package_versions": {}})
        n_candidates = -(-trials // seeds)
        candidates: list[dict[str, Any]] = []
        keys: list[tuple[Arch, Complexity]] = []
        seen: set[str] = set()
        tries = 0
        while len(candidates) < n_candidates:  # every space has far more than enough networks
            tries += 1
            if tries > 50 * n_candidates:
                raise RuntimeError("too few distinct networks in the benchmark's spaces")
            space = SPACES[len(candidates) % len(SPACES)]
            arch, fields = _arch(space, rng)
            if arch.key in seen:
                continue
            seen.add(arch.key)
            cost = count(arch, 32, 10)
            c = int(fields["cardinality"])
            latency = cost.flops / 1e9 * 0.9 + 0.05 * sum(arch.depths) + 0.02 * c
            candidates.append({
                "experiment_id": record.id, "space": space, "key": arch.key,
                "architecture": json.dumps(arch.canonical(), sort_keys=True),
                "template": "cifar", "block": "grouped", "stem_width": 64,
                "depths": json.dumps(list(fields["depths"])),
                "widths": json.dumps(list(fields["widths"])),
                "group_widths": None, "cardinality": fields["cardinality"],
                "bottleneck_width": fields["bottleneck_width"], "params": cost.params,
                "flops": cost.flops, "acts": cost.acts, "latency_ms": latency,
                "train_images_per_sec": 1000.0 * 128 / (3 * latency), "cost_device": "bench",
            })
            keys.append((arch, cost))
        trial_rows, epoch_rows = [], []
        trial_id = 0
        for (arch, cost), cand in zip(keys, candidates, strict=True):
            for s in range(seeds):
                if trial_id >= trials:
                    break
                trial_id += 1
                final = (5.6 - 0.3 * (int(cand["cardinality"]).bit_length() - 1)
                         - 0.1 * (sum(arch.depths) - 9) / 3 + rng.gauss(0, 0.15))
                roll = rng.random()
                status = "failed" if roll < 0.02 else "running" if roll < 0.05 else "finished"
                throughput = 2.6e12 / cost.flops
                trial_rows.append({
                    "id": trial_id, "experiment_id": record.id, "candidate_key": cand["key"],
                    "trial_key": f"{cand['key']}-{s}", "seed": s, "status": status,
                    "attempts": 1, "error": "RuntimeError: CUDA out of memory"
                    if status == "failed" else None, "device": "cuda:0", "created_at": now,
                    "started_at": now, "finished_at": now if status != "running" else None,
                    "test_error": final if status == "finished" else None,
                    "test_top5_error": final / 9 if status == "finished" else None,
                    "train_error": final - 2 if status == "finished" else None,
                    "train_images_per_sec": throughput, "epochs_completed": epochs,
                    "seconds": epochs * 50000 / throughput,
                })
                for e in range(epochs):
                    error = final + (62 - final) * (1 - e / max(epochs - 1, 1)) ** 3
                    epoch_rows.append({
                        "trial_id": trial_id, "epoch": e, "test_error": error,
                        "test_top5_error": error / 9, "train_error": max(error - 2, 0.05),
                        "train_loss": 0.04 * error, "lr": 0.1, "seconds": 1.0,
                        "train_images_per_sec": throughput, "peak_memory_bytes": None,
                    })
        with store.engine.begin() as conn:
            conn.execute(insert(candidate_table), candidates)
            conn.execute(insert(trial_table), trial_rows)
            for start in range(0, len(epoch_rows), 50_000):
                conn.execute(insert(epoch_table), epoch_rows[start:start + 50_000])
            conn.execute(update(revision_table).values(value=revision_table.c.value + 1))
    return {"candidates": len(candidates), "trials": len(trial_rows), "epochs": len(epoch_rows)}


def _script(url: str) -> None:
    from dashboard.app import render

    render(url)


def measure(url: str, profile: bool) -> None:
    started = time.perf_counter()
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    import dashboard.app  # noqa: F401  (imported once here, so the runs time the app alone)

    print(f"imports (once per server process): {time.perf_counter() - started:.2f} s")
    st.cache_data.clear()
    st.cache_resource.clear()
    at = AppTest.from_function(_script, args=(url,), default_timeout=120)
    profiler = cProfile.Profile() if profile else None
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    at.run()
    first = time.perf_counter() - started
    if profiler:
        profiler.disable()
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(30)
        print(text.getvalue())
    if at.exception:
        sys.exit(f"the app raised: {at.exception[0].value}")
    charts = len(at.get("plotly_chart"))
    print(f"first full render, empty caches: {first:.2f} s ({charts} charts)  target < 3 s")
    started = time.perf_counter()
    at.run()
    print(f"rerun, nothing changed: {time.perf_counter() - started:.2f} s")
    with Writer.open(url) as writer:  # what the live poll sees during a sweep: one trial ends
        running = writer.trials_frame()
        running = running[running["status"] == "running"].iloc[0]
        writer.finish_trial(int(running["experiment_id"]), str(running["trial_key"]),
                            "finished", {"test_error": 4.0})
    started = time.perf_counter()
    at.run()
    print(f"rerun after the sweep wrote (new data version, every read again): "
          f"{time.perf_counter() - started:.2f} s")
    for key, value in (("f_cardinality", [4, 8]), ("f_status", ["finished"]),
                       ("f_spaces", ["cardinality", "random"]), ("f_cardinality", [])):
        at.sidebar.multiselect(key=key).set_value(value)
        started = time.perf_counter()
        at.run()
        took = time.perf_counter() - started
        assert not at.exception, at.exception
        print(f"filter change {key}={value}: {took:.3f} s  target < 0.5 s")
    for view in ("Tradeoff", "Training curves", "EDFs", "Measured cost", "Trials",
                 "Error vs cost"):
        at.session_state["view"] = view
        started = time.perf_counter()
        at.run()
        assert not at.exception, at.exception
        print(f"view {view!r}: {time.perf_counter() - started:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--db", type=Path, default=None,
                        help="Reuse (or write) the store here instead of a temporary file.")
    parser.add_argument("--profile", action="store_true", help="Profile the first render.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.db or Path(tmp) / "large.db"
        if not path.exists():
            started = time.perf_counter()
            counts = build_large_store(path, args.trials, args.epochs)
            print(f"built {path}: {counts['candidates']:,} candidates, {counts['trials']:,} "
                  f"trials, {counts['epochs']:,} epoch rows in "
                  f"{time.perf_counter() - started:.1f} s")
        measure(f"sqlite:///{path.resolve()}", args.profile)


if __name__ == "__main__":
    main()
