"""Analysis at the scale of the design-space papers: 10k, 100k and 1M-trial stores.

    python benchmarks/scale.py --out DIR [--sizes 400,10000,100000] [--runs 3]
        [--python PYTHON] [--pythonpath SRC] [--optuna-wait 120] [--build-only]

The one builder of the benchmark stores: other benchmarks (dashboard_scale.py) import
`build(out, trials)` and `store_path(out, trials)` from here, so a store of N trials is
built once, the same way, whoever asks for it first.

Builds each store once into DIR (``store-N.db``, SQLite; kept and reused by later runs)
the way a sweep writes it: a spec of four sampled spaces (``spec-N.yaml``, 2 seeds,
10 epochs) planned by the project's own `plan_run` (candidates and pending trials
through the Writer), then every trial's events (planned, started, provenance, ten
epochs, ended with its history) through the sweep's own `StoreSink`, as Tune would
send them, with a tick every 16 trials. Metrics are synthetic and seeded (error falls
with cardinality and depth, plus noise; 2 % of trials fail, 1 % are never run).

The 1,000,000-trial store is planned by the same `plan_run`, but its results take a
bulk path: one executemany per 50,000 trials straight into the same tables (trials
updated, epochs inserted), not the sink's per-event calls (that would take hours on a
shared 2-core machine). The schema and every row's contents are the same as the sink's.

Then, per size, it times the user's entry points as subprocesses (`explorer status`,
`export -o trials.csv`, `export --epochs -o epochs.parquet`, `compare --json`,
`report -o report.html`, with the report's size): wall time, CPU time (user + sys of
the child) and peak RSS, min and median over --runs. And the writer's per-trial cost:
the sink's events of one trial, from the build (per trial, over all trials) and
measured afresh on a copy of the store (200 new trials, `trial_planned` alone and
the whole sequence, one flush per trial), min and median over --runs per size, and at
the end how much the per-trial CPU cost grows from the smallest store to the largest
(the goal: flat within 2x from 400 to 100,000 trials). --python / --pythonpath run the
commands with another interpreter or source tree (e.g. a checkout of main, for
before/after).

With --optuna-wait S > 0 (needs the dev extra's optuna-dashboard), the same finished
trials are written to an Optuna study (RDB storage beside the store; intermediate
values per epoch) and optuna-dashboard is started on it; the time until its study API
answers is printed, or that it did not within S seconds.

Prints figures only; CPU is shared with other work, so read them as one run's
figures on that machine, not as guarantees.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

EXPERIMENT = "scale"
SEEDS = (0, 1)
EPOCHS = 10
TICK_TRIALS = 16
BULK_FROM = 1_000_000  # stores this size or larger take the bulk path for their results

# Four sampled spaces over a 3-stage CIFAR ResNeXt: NDS-style per-stage draws.
SPEC = """\
name: {name}
description: benchmark store of {trials} trials (benchmarks/scale.py)
model:
  template: cifar
  depths: [3, 3, 3]
  stem_width: 64
  widths: [256, 512, 1024]
  cardinality: 1
  bottleneck_width: 64
spaces:
  resnext_a:
    sample:
      n: {n}
      seed: 1
      stages:
        depths: {{low: 1, high: 16}}
        widths: {{low: 64, high: 1024, step: 16}}
        cardinality: [1, 2, 4, 8, 16, 32]
        bottleneck_width: [4, 8, 16, 32, 64]
      shared: [cardinality]
  resnext_b:
    sample:
      n: {n}
      seed: 2
      stages:
        depths: {{low: 1, high: 16}}
        widths: {{low: 64, high: 1024, step: 16}}
        cardinality: [1, 2, 4, 8, 16, 32]
        bottleneck_width: [4, 8, 16, 32, 64]
      non_decreasing: [widths]
  deeper:
    sample:
      n: {n}
      seed: 3
      stages:
        depths: {{low: 1, high: 24}}
        widths: {{low: 64, high: 1024, step: 16}}
        bottleneck_width: {{low: 2, high: 128, log: true}}
  wider:
    sample:
      n: {n}
      seed: 4
      stages:
        widths: {{low: 32, high: 2048, step: 8}}
        cardinality: [1, 2, 4, 8, 16, 32, 64]
        bottleneck_width: {{low: 2, high: 128, log: true}}
      shared: [cardinality, bottleneck_width]
data:
  dataset: cifar10
  resolution: 32
train:
  epochs: {epochs}
  batch_size: 128
  schedule: cosine
  seeds: {seeds}
"""


@dataclass(frozen=True)
class Outcome:
    status: str               # finished, failed, or "never" (left pending)
    final: float
    curve: tuple[float, ...]  # test error per epoch


def outcome(rng: random.Random, cardinality: int, depth: int, flops: int) -> Outcome:
    """A seeded synthetic result: error falls with cardinality, depth and flops."""
    roll = rng.random()
    status = "failed" if roll < 0.02 else "never" if roll < 0.03 else "finished"
    final = (9.0 - 0.35 * math.log2(max(cardinality, 1)) - 0.04 * depth
             - 0.5 * math.log10(max(flops, 1) / 1e8) + rng.gauss(0, 0.3))
    curve = tuple(final + (62 - final) * (1 - e / (EPOCHS - 1)) ** 3 + rng.gauss(0, 0.1)
                  for e in range(EPOCHS))
    return Outcome(status, final, curve)


def epoch_metrics(epoch: int, error: float) -> dict[str, Any]:
    return {"epoch": epoch + 1, "test_error": error, "test_top5_error": error / 9,
            "train_error": max(error - 2, 0.05), "train_loss": 0.04 * error, "lr": 0.1,
            "seconds": 1.0, "train_images_per_sec": 4000.0}


def final_metrics(result: Outcome) -> dict[str, Any]:
    return {"test_error": result.final, "test_top5_error": result.final / 9,
            "train_error": max(result.final - 2, 0.05), "train_images_per_sec": 4000.0,
            "seconds": 10.0 * EPOCHS, "epochs_completed": EPOCHS}


PROVENANCE = {"gpu_name": "bench", "precision": "fp32", "channels_last": False,
              "compiled": False, "torch_version": "bench", "node": "bench",
              "resumed_from_epoch": None}


# --- building -----------------------------------------------------------------------------


def store_path(out: Path, trials: int) -> Path:
    return out / f"store-{trials}.db"


def build(out: Path, trials: int, finish_bulk: bool = False) -> dict[str, float]:
    """Build the store of `trials` trials in `out` unless it is there; its build figures."""
    path = store_path(out, trials)
    done = path.with_suffix(".built.json")
    if done.exists():
        return dict(json.loads(done.read_text()))
    if finish_bulk and path.exists():  # a sink build cut short: the rest by the bulk path
        from explorer.store import Writer

        with Writer.open(path) as store:
            experiment_id = int(store.experiments()["experiment_id"].iloc[-1])
            before = store.status_counts(experiment_id)
            started = time.perf_counter()
            _bulk_results(store, experiment_id)
        finished = {"trials": trials, "sink_trials": trials - before["pending"],
                    "bulk_trials": before["pending"], "bulk_s": time.perf_counter() - started}
        done.write_text(json.dumps(finished))
        return finished
    from explorer.experiment import Unobserved, plan_run
    from explorer.spec import parse_spec
    from explorer.store import Writer as SinkWriter

    for stale in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        stale.unlink(missing_ok=True)
    n = -(-trials // (4 * len(SEEDS)))
    text = SPEC.format(name=EXPERIMENT, trials=trials, n=n, epochs=EPOCHS,
                       seeds=list(SEEDS))
    (out / f"spec-{trials}.yaml").write_text(text)
    spec = parse_spec(text)
    figures: dict[str, float] = {}
    started = time.perf_counter()
    with SinkWriter.open(path) as store:
        record = store.create_or_get_experiment(
            EXPERIMENT, text, spec.hash, json.dumps(spec.record()),
            environment={"git_revision": None, "package_versions": {}})
        planned = plan_run(store, record.id, spec)
        figures["plan_s"] = time.perf_counter() - started
        figures["trials"] = planned.planned
        started = time.perf_counter()
        if trials >= BULK_FROM:
            _bulk_results(store, record.id)
        else:
            figures["sink_s_per_trial"] = _sweep(store, record.id, planned.strategy,
                                                 Unobserved())
        figures["results_s"] = time.perf_counter() - started
    done.write_text(json.dumps(figures))
    return figures


def _sweep(store: Any, experiment_id: int, strategy: Any, observer: Any) -> float:
    """Every trial's events through the sweep's StoreSink; seconds per trial."""
    from explorer.experiment import StoreSink

    sink = StoreSink(store, experiment_id, observer)
    rng = random.Random(0)
    count = 0
    started = time.perf_counter()
    while (suggestion := strategy.ask()) is not None:
        plan, candidate = suggestion.plan, suggestion.candidate
        result = outcome(rng, plan.arch.stages[0].cardinality,
                         sum(s.depth for s in plan.arch.stages), candidate.complexity.flops)
        if result.status != "never":
            _one_trial(sink, plan, candidate, result)
        count += 1
        if count % TICK_TRIALS == 0:
            sink.tick()
    sink.flush()
    return (time.perf_counter() - started) / max(count, 1)


def _one_trial(sink: Any, plan: Any, candidate: Any, result: Outcome) -> None:
    key = plan.trial_key
    sink.trial_planned(plan, candidate)
    sink.trial_started(key, "benchnode", "cuda:0")
    sink.trial_provenance(key, PROVENANCE)
    history = [epoch_metrics(e, err) for e, err in enumerate(result.curve)]
    if result.status == "failed":
        history = history[:3]
    for metrics in history:
        sink.epoch(key, metrics)
    if result.status == "failed":
        sink.trial_ended(key, "failed", {}, "RuntimeError: CUDA out of memory", history)
    else:
        sink.trial_ended(key, "finished", final_metrics(result), None, history)


def _bulk_results(store: Any, experiment_id: int) -> None:
    """Results for the experiment's pending trials (every trial of the 1M store; those a
    sink build left when cut short with --finish-bulk): the rows the sink writes, by
    executemany in chunks."""
    from sqlalchemy import bindparam, select, update

    from explorer.store.schema import candidate_table, epoch_table, revision_table, trial_table

    t, c = trial_table.c, candidate_table.c
    with store.engine.connect() as conn:
        complexity = {key: (int(card or 1), int(flops or 1), len(json.loads(depths or "[]")),
                            sum(json.loads(depths or "[]")))
                      for key, card, flops, depths in conn.execute(
                          select(c.key, c.cardinality, c.flops, c.depths)
                          .where(c.experiment_id == experiment_id))}
        ids = conn.execute(select(t.id, t.candidate_key).where(
            t.experiment_id == experiment_id, t.status == "pending").order_by(t.id)).all()
    rng = random.Random(0)
    now = datetime.now(UTC)
    stmt = (update(trial_table).where(t.id == bindparam("tid"))
            .values(status=bindparam("st"), attempts=1, device="cuda:0@benchnod",
                    started_at=now, finished_at=now, error=bindparam("err"),
                    **{k: bindparam(k) for k in ("test_error", "test_top5_error",
                                                 "train_error", "train_images_per_sec",
                                                 "seconds", "epochs_completed")},
                    **{k: v for k, v in PROVENANCE.items() if v is not None}))
    chunk = 50_000
    for start in range(0, len(ids), chunk):
        updates, epochs = [], []
        for trial_id, key in ids[start:start + chunk]:
            card, flops, _stages, depth = complexity[key]
            result = outcome(rng, card, depth, flops)
            if result.status == "never":
                continue
            curve = result.curve if result.status == "finished" else result.curve[:3]
            final = final_metrics(result) if result.status == "finished" else {
                k: None for k in ("test_error", "test_top5_error", "train_error",
                                  "train_images_per_sec", "seconds")} | {
                "epochs_completed": len(curve)}
            updates.append({"tid": trial_id, "st": result.status,
                            "err": None if result.status == "finished"
                            else "RuntimeError: CUDA out of memory", **final})
            epochs += [{"trial_id": trial_id, **epoch_metrics(e, err)}
                       for e, err in enumerate(curve)]
        with store.engine.begin() as conn:
            conn.execute(stmt, updates)
            conn.execute(epoch_table.insert(), epochs)
            conn.execute(update(revision_table).values(value=revision_table.c.value + 1))


# --- measuring ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    wall: float
    cpu: float      # user + sys of the child
    rss_mb: float   # its peak resident memory
    code: int


def run_explorer(argv: Sequence[str], python: str, pythonpath: str | None,
                 timeout: float = 1800) -> Timing:
    """`explorer ARGV` as a child process (the user's entry point), timed by wait4."""
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    with tempfile.TemporaryFile() as errors:
        started = time.perf_counter()
        # Run from elsewhere: `python -c` puts the working directory first on sys.path,
        # which would shadow --pythonpath with this checkout's explorer.
        child = subprocess.Popen([python, "-c", "from explorer.cli import main; main()", *argv],
                                 stdout=subprocess.DEVNULL, stderr=errors, env=env,
                                 cwd=tempfile.gettempdir())
        deadline = started + timeout
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                child.kill()
                pid, status, usage = os.wait4(child.pid, 0)
                break
            time.sleep(0.02)
        wall = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode:
            errors.seek(0)
            print(f"  explorer {' '.join(argv)}: exit {child.returncode}: "
                  f"{errors.read().decode(errors='replace').strip()[-300:]}", flush=True)
    return Timing(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024,
                  child.returncode)


COMMANDS: dict[str, tuple[str, ...]] = {
    "status": ("status",),
    "export": ("export", EXPERIMENT, "-o", "{tmp}/trials.csv"),
    "export --epochs": ("export", EXPERIMENT, "--epochs", "-o", "{tmp}/epochs.parquet"),
    "compare --json": ("compare", EXPERIMENT, "--json"),
    "report": ("report", EXPERIMENT, "-o", "{tmp}/report.html"),
}


def measure_commands(db: Path, runs: int, python: str, pythonpath: str | None,
                     only: Sequence[str]) -> dict[str, list[Timing]]:
    out: dict[str, list[Timing]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, argv in COMMANDS.items():
            if only and name not in only:
                continue
            args = [a.format(tmp=tmp) for a in argv] + ["--store", str(db)]
            out[name] = [run_explorer(args, python, pythonpath) for _ in range(runs)]
            if name == "report":
                size = (Path(tmp) / "report.html").stat().st_size if (
                    Path(tmp) / "report.html").exists() else 0
                print(f"  report size: {size / 1e6:.1f} MB", flush=True)
            _print_timings(name, out[name])
    return out


WRITER_FIGURES = ("trial_planned_cpu_ms", "trial_flush_cpu_ms", "trial_batched_cpu_ms")


def _print_writer(size: int, runs: list[dict[str, float]]) -> None:
    """The writer's per-trial CPU cost at one store size: min and median over the runs."""
    parts = [f"{name.removesuffix('_cpu_ms')} {min(r[name] for r in runs):.2f} / "
             f"{statistics.median(r[name] for r in runs):.2f}"
             for name in WRITER_FIGURES if all(name in r for r in runs)]
    print(f"  writer per trial at {size:,} trials, CPU ms min / median: "
          + ", ".join(parts), flush=True)


def _print_writer_growth(by_size: dict[int, list[dict[str, float]]]) -> None:
    """How the per-trial CPU cost (min over runs) grows from the smallest store measured
    to each larger one: the writer's goal is flat within 2x."""
    sizes = sorted(by_size)
    if len(sizes) < 2:
        return
    for name in WRITER_FIGURES:
        if not all(name in r for s in sizes for r in by_size[s]):
            continue
        base = min(r[name] for r in by_size[sizes[0]])
        ratios = ", ".join(f"{s:,}: {min(r[name] for r in by_size[s]) / base:.2f}x"
                           for s in sizes[1:])
        print(f"writer {name.removesuffix('_cpu_ms')} per trial against {sizes[0]:,} trials: "
              f"{ratios}", flush=True)


def _print_timings(name: str, timings: list[Timing]) -> None:
    walls = [t.wall for t in timings]
    cpus = [t.cpu for t in timings]
    failed = sum(t.code != 0 for t in timings)
    print(f"  {name:16s} wall min {min(walls):6.2f} s median {statistics.median(walls):6.2f} s"
          f" | cpu min {min(cpus):6.2f} s median {statistics.median(cpus):6.2f} s"
          f" | peak RSS {max(t.rss_mb for t in timings):6.0f} MB"
          + (f" | {failed} FAILED" if failed else ""), flush=True)


def writer_cost(db: Path, trials: int = 200) -> dict[str, float]:
    """Per trial, on a copy of the store: the sink's trial_planned alone (a flush per
    trial where the sink batches), and a whole trial's events (a flush per trial, and a
    tick every TICK_TRIALS trials). Runs with whichever explorer is imported."""
    import dataclasses

    from explorer.arch import resnext29
    from explorer.complexity import count
    from explorer.experiment import StoreSink, Unobserved
    from explorer.plan import TrialPlan
    from explorer.space import Candidate
    from explorer.spec import parse_spec
    from explorer.store import Writer

    spec = parse_spec((db.parent / f"spec-{db.stem.split('-')[1]}.yaml").read_text())
    arch = resnext29(8, 16)
    cost = count(arch, 32, 10)
    candidate = Candidate("bench", arch, cost, cost)
    base = TrialPlan(trial_key="", candidate_key=candidate.key, spaces=("bench",), arch=arch,
                     seed=0, num_classes=10, data=spec.data, train=spec.train)
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(dir=db.parent) as tmp:
        copy = Path(tmp) / "copy.db"
        source = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        target = sqlite3.connect(copy)
        source.backup(target)
        source.close()
        target.close()
        with Writer.open(copy) as store:
            experiment = int(store.experiments()["experiment_id"].iloc[-1])
            sink = StoreSink(store, experiment, Unobserved())
            flush = getattr(sink, "flush", lambda: None)
            rng = random.Random(1)
            started, cpu = time.perf_counter(), time.process_time()
            for i in range(trials):
                sink.trial_planned(dataclasses.replace(base, trial_key=f"planned-{i}"),
                                   candidate)
                flush()
            figures["trial_planned_ms"] = (time.perf_counter() - started) / trials * 1e3
            figures["trial_planned_cpu_ms"] = (time.process_time() - cpu) / trials * 1e3
            for mode, every in (("trial_flush", 1), ("trial_batched", TICK_TRIALS)):
                started, cpu = time.perf_counter(), time.process_time()
                for i in range(trials):
                    plan = dataclasses.replace(base, trial_key=f"{mode}-{i}")
                    _one_trial(sink, plan, candidate, outcome(rng, 8, 9, cost.flops))
                    if (i + 1) % every == 0:
                        sink.tick()
                sink.tick()
                figures[f"{mode}_ms"] = (time.perf_counter() - started) / trials * 1e3
                figures[f"{mode}_cpu_ms"] = (time.process_time() - cpu) / trials * 1e3
    return figures


def optuna_dashboard(out: Path, size: int, wait: float) -> None:
    """The same finished trials as an Optuna study (RDB storage, built once), served by
    optuna-dashboard: how long its server takes to answer the study's API (all trials,
    what its page fetches before drawing the first chart), bounded by `wait` seconds."""
    import urllib.error
    import urllib.request

    import optuna
    from optuna.distributions import FloatDistribution, IntDistribution

    from explorer.store import Reader

    path = out / f"optuna-{size}.db"
    url = f"sqlite:///{path}"
    built = path.with_suffix(".built")
    if not built.exists():
        path.unlink(missing_ok=True)
        started = time.perf_counter()
        with Reader.open(store_path(out, size)) as reader:
            trials = reader.trials_frame(columns=["trial_id", "cardinality",
                                                  "bottleneck_width", "flops", "status",
                                                  "test_error"]).drop_duplicates("trial_id")
            trials = trials[trials["status"] == "finished"]
            curves: dict[int, dict[int, float]] = {}
            for chunk in reader.iter_epochs_frames([EXPERIMENT]):
                for trial_id, epoch, error in zip(chunk["trial_id"], chunk["epoch"],
                                                  chunk["test_error"], strict=True):
                    curves.setdefault(int(trial_id), {})[int(epoch)] = float(error)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(storage=url, study_name=EXPERIMENT)
        flops = trials["flops"].astype(float)
        distributions = {
            "cardinality": IntDistribution(1, 64),
            "bottleneck_width": IntDistribution(1, 128),
            "flops": FloatDistribution(float(flops.min()), float(flops.max()), log=True)}
        rows = list(zip(trials["trial_id"], trials["cardinality"], trials["bottleneck_width"],
                        flops, trials["test_error"], strict=True))
        for start in range(0, len(rows), 1000):
            study.add_trials([optuna.trial.create_trial(
                params={"cardinality": int(c), "bottleneck_width": int(d), "flops": float(f)},
                distributions=distributions, value=float(e),
                intermediate_values=curves.get(int(t), {}))
                for t, c, d, f, e in rows[start:start + 1000]])
        built.write_text(str(len(rows)))
        print(f"  optuna study: {len(rows):,} trials written in "
              f"{time.perf_counter() - started:.0f} s", flush=True)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "optuna_dashboard", url, "--port",
                               str(port), "--host", "127.0.0.1", "--quiet"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        started = time.perf_counter()
        base = f"http://127.0.0.1:{port}"
        while time.perf_counter() - started < wait:
            try:
                urllib.request.urlopen(f"{base}/api/meta", timeout=5).read()
                break
            except (urllib.error.URLError, OSError):
                time.sleep(0.5)
        up = time.perf_counter() - started
        asked = time.perf_counter()
        try:
            listed = json.loads(urllib.request.urlopen(f"{base}/api/studies",
                                                       timeout=max(wait - up, 1)).read())
            study_id = int(listed["studies"][0]["study_id"])
            body = urllib.request.urlopen(f"{base}/api/studies/{study_id}",
                                          timeout=max(wait - up, 1)).read()
            took = time.perf_counter() - asked
            print(f"  optuna-dashboard: server up in {up:.1f} s; the study's trials "
                  f"({len(body) / 1e6:.1f} MB of JSON) in {took:.1f} s", flush=True)
        except (urllib.error.URLError, OSError) as problem:
            print(f"  optuna-dashboard: server up in {up:.1f} s; no answer for the study's "
                  f"trials within {wait:.0f} s in all ({problem})", flush=True)
    finally:
        server.kill()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sizes", default="400,10000,100000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--build-only", action="store_true")
    parser.add_argument("--finish-bulk", action="store_true",
                        help="complete a store whose sink build was cut short by the bulk "
                             "path (its pending trials), and say how many went which way")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--pythonpath", default=None,
                        help="run the commands (and the writer's cost) with this source tree")
    parser.add_argument("--only", default="",
                        help="comma-separated command names (default: all, and the writer)")
    parser.add_argument("--optuna-wait", type=float, default=0,
                        help="also time optuna-dashboard on the same trials, waiting at most "
                             "this many seconds (0: not)")
    parser.add_argument("--writer-cost", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.writer_cost is not None:  # the child that measures the writer
        print(json.dumps(writer_cost(args.writer_cost)))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    only = [o for o in args.only.split(",") if o]
    writer: dict[int, list[dict[str, float]]] = {}
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (shared with other "
          f"work); code: {args.pythonpath or 'this checkout'}", flush=True)
    for size in (int(s) for s in args.sizes.split(",")):
        started = time.perf_counter()
        figures = build(args.out, size, args.finish_bulk)
        print(f"store {size:,}: {figures} ({time.perf_counter() - started:.1f} s)", flush=True)
        if args.build_only:
            continue
        db = store_path(args.out, size)
        print(f"store {size:,}: {db.stat().st_size / 1e6:.0f} MB, {args.runs} run(s), "
              f"load average {os.getloadavg()[0]:.1f}", flush=True)
        measure_commands(db, args.runs, args.python, args.pythonpath, only)
        if not only or "writer" in only:
            env = dict(os.environ, **({"PYTHONPATH": args.pythonpath} if args.pythonpath
                                      else {}))
            for _ in range(args.runs if size < BULK_FROM else 1):
                done = subprocess.run([args.python, __file__, "--out", str(args.out),
                                       "--writer-cost", str(db)], env=env, check=True,
                                      capture_output=True, text=True)
                print(f"  writer per trial (ms): {done.stdout.strip()}", flush=True)
                writer.setdefault(size, []).append(json.loads(done.stdout))
            _print_writer(size, writer[size])
        if args.optuna_wait > 0:
            optuna_dashboard(args.out, size, args.optuna_wait)
    _print_writer_growth(writer)


if __name__ == "__main__":
    main()
