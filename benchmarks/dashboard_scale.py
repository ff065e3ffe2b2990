"""The dashboard at 10k-1M finished trials, in a real browser, through `explorer dashboard`.

    python benchmarks/dashboard_scale.py build --trials 100000 --store /tmp/x/100k.db
    python benchmarks/dashboard_scale.py measure --store /tmp/x/100k.db [--runs 3]

`build` makes a store the way a sweep does: a spec of four sampled design
spaces (NDS-style per-stage draws, ``n = trials / 4`` each, one seed, 10
epochs) is planned by the project's own `plan_run` through the `Writer` (its
candidates with exact complexity, its trials and trial keys), then every trial
is given a result: status finished (one a second, the last just now), a final
error that follows the paper's trend (more cardinality and depth, lower error)
plus seeded noise, and 10 epoch rows. The results go in by batched inserts into
the schema's own tables, 5,000 trials per transaction, each bumping the store
revision as the writer does (the writer's one-transaction-per-trial API is made
for a live sweep; its cost at scale is measured elsewhere).

`measure` starts `explorer dashboard --store URL` on a free loopback port and,
with Playwright driving Debian's headless Chromium (/usr/bin/chromium), for
each run in a new page:

- first chart: from navigation until the error-vs-FLOPs chart has drawn points;
- whole first view: until both charts of the first tab are drawn and the app
  says it is no longer running;
- a filter change: one cardinality picked in the sidebar, until the chart
  shows the filtered points;
- bytes sent to the browser: the app's data, the websocket frames it receives (the
  scripts come from the browser's cache, see below);
- the server's resident memory (its process tree, from /proc) after the view;
- a live refresh: one new finished trial written by the `Writer`, the time
  until the page shows it, and the server's CPU time (user + system of its
  process tree, /proc) from the write until the page has it, less the same
  span's idle poll cost measured just before.

Every run starts a fresh `explorer dashboard` (empty caches); the browser first loads
the app once from a 400-trial store on the same origin, so its scripts are cached as
after a user's first visit and the runs time the data, not the download of Streamlit's
own JavaScript. Prints min and median over the runs. The CPU is shared: the
figures are wall times on whatever the machine gives, so CPU times are printed
beside them.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, insert, select, update

from explorer.experiment import plan_run
from explorer.serve import NotServing, free_local_port, wait_until_serving
from explorer.spec import parse_spec
from explorer.store import Writer
from explorer.store.schema import candidate_table, epoch_table, revision_table, trial_table

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
EPOCHS = 10
BATCH = 5000
SPACING = timedelta(seconds=1)
NAME = "scale"

# Four sampled spaces of a CIFAR ResNeXt: plain ResNet (C = 1), ResNeXt with C shared by
# the stages, ResNeXt with C per stage, and a deeper one. Ranges wide enough that 250,000
# distinct networks per space exist.
SPEC = """\
name: {name}
description: four sampled spaces for the dashboard's scale benchmark
model:
  family: resnext
  template: cifar
  depths: [1, 1, 1]
  stem_width: 16
  widths: [64, 128, 256]
  cardinality: 1
  bottleneck_width: 16
  block: grouped
spaces:
  resnet:
    sample:
      n: {n}
      seed: 0
      stages:
        depths: {{low: 1, high: 8}}
        widths: {{low: 32, high: 512, step: 32}}
        cardinality: [1]
        bottleneck_width: {{low: 8, high: 128, step: 8}}
      non_decreasing: [widths]
  resnext-shared:
    sample:
      n: {n}
      seed: 1
      stages:
        depths: {{low: 1, high: 8}}
        widths: {{low: 32, high: 512, step: 32}}
        cardinality: [2, 4, 8, 16, 32]
        bottleneck_width: {{low: 1, high: 32, log: true}}
      shared: [cardinality]
      non_decreasing: [widths]
  resnext-free:
    sample:
      n: {n}
      seed: 2
      stages:
        depths: {{low: 1, high: 8}}
        widths: {{low: 32, high: 512, step: 32}}
        cardinality: [1, 2, 4, 8, 16, 32]
        bottleneck_width: {{low: 1, high: 32, log: true}}
      non_decreasing: [widths]
  deep:
    sample:
      n: {n}
      seed: 3
      stages:
        depths: {{low: 4, high: 16}}
        widths: {{low: 32, high: 256, step: 32}}
        cardinality: [1, 4, 16]
        bottleneck_width: {{low: 4, high: 64, step: 4}}
      shared: [cardinality]
data:
  dataset: cifar10
  resolution: 32
train:
  epochs: {epochs}
  batch_size: 128
  schedule: cosine
  seeds: [0]
search:
  strategy: grid
"""
ENVIRONMENT = {"git_revision": None, "package_versions": {"explorer": "benchmark"}}


# --- the store -----------------------------------------------------------------------------


def build(path: Path, trials: int, seed: int = 0) -> None:
    """Plan `trials` trials through plan_run, then record a result for every one."""
    if path.exists():
        sys.exit(f"{path} exists: give a new path (or measure it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    text = SPEC.format(name=NAME, n=-(-trials // 4), epochs=EPOCHS)
    spec = parse_spec(text, "scale.yaml")
    started = time.perf_counter()
    with Writer.open(path) as store:
        record = store.create_or_get_experiment(NAME, text, spec.hash,
                                                spec.model_dump(mode="json"),
                                                environment=ENVIRONMENT)
        planned = plan_run(store, record.id, spec)
        planned_at = time.perf_counter()
        print(f"planned {planned.planned:,} trials through plan_run in "
              f"{planned_at - started:.1f} s", flush=True)
        _record_results(store, record.id, seed)
    print(f"results recorded in {time.perf_counter() - planned_at:.1f} s; "
          f"{path} is {path.stat().st_size / 1e6:.0f} MB", flush=True)


def _record_results(store: Writer, experiment_id: int, seed: int) -> None:
    """Every trial finished, with EPOCHS epoch rows, in batches of BATCH trials."""
    rng = random.Random(seed)
    t, c = trial_table.c, candidate_table.c
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(t.id, t.trial_key, c.cardinality, c.depths, c.flops)
            .join(candidate_table, (c.experiment_id == t.experiment_id)
                  & (c.key == t.candidate_key))
            .where(t.experiment_id == experiment_id).order_by(t.id)).all()
    seen: set[int] = set()
    unique = [row for row in rows if not (row.id in seen or seen.add(row.id))]
    # As a sweep would have: one trial ending every SPACING, the last one just now.
    end = datetime.now(UTC)
    for start in range(0, len(unique), BATCH):
        trial_rows, epoch_rows = [], []
        for i, row in enumerate(unique[start:start + BATCH], start):
            finished_at = end - (len(unique) - 1 - i) * SPACING
            final = _final_error(int(row.cardinality or 1), str(row.depths), rng)
            throughput = 2.6e12 / max(int(row.flops or 1), 1)
            trial_rows.append({"tid": row.id, "started_at": finished_at - 10 * SPACING,
                               "finished_at": finished_at, "test_error": final,
                               "test_top5_error": final / 9, "train_error": final - 2,
                               "train_images_per_sec": throughput,
                               "seconds": EPOCHS * 50000 / throughput})
            for epoch in range(EPOCHS):
                error = final + (62 - final) * (1 - epoch / (EPOCHS - 1)) ** 3
                epoch_rows.append({"trial_id": row.id, "epoch": epoch, "test_error": error,
                                   "test_top5_error": error / 9,
                                   "train_error": max(error - 2, 0.05),
                                   "train_loss": 0.04 * error, "lr": 0.1, "seconds": 1.0,
                                   "train_images_per_sec": throughput})
        with store.engine.begin() as conn:
            conn.execute(insert(epoch_table), epoch_rows)
            conn.execute(update(trial_table).where(t.id == bindparam("tid")).values(
                status="finished", attempts=1, device="cuda:0", epochs_completed=EPOCHS,
                **{name: bindparam(name) for name in trial_rows[0] if name != "tid"}),
                trial_rows)
            conn.execute(update(revision_table).values(value=revision_table.c.value + 1))


def _final_error(cardinality: int, depths: str, rng: random.Random) -> float:
    blocks = sum(int(v) for v in depths.strip("[]").split(","))
    return (8.0 - 0.35 * (cardinality.bit_length() - 1) - 0.08 * (blocks - 3)
            + rng.gauss(0, 0.4))



# --- the server and the browser ------------------------------------------------------------

# Points drawn by every data trace of the chart named `chart` (-1: no such chart yet).
DRAWN = """(chart) => {
  for (const el of document.querySelectorAll('.js-plotly-plot')) {
    if (!el.layout || !el.layout.meta || el.layout.meta.chart !== chart || !el._fullData) continue;
    let n = 0;
    for (const t of el._fullData) {
      const role = ((el.data[t.index] || {}).meta || {}).role;
      if (role === 'candidates' || role === 'bins') n += t._length || 0;
    }
    return n;
  }
  return -1;
}"""
# Streamlit shows its status widget while a script run is under way.
SETTLED = "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of the process (all its threads) and of its reaped children."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / TICKS


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextmanager
def dashboard(url: str, port: int) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """`explorer dashboard` on a loopback port (the streamlit server replaces it)."""
    explorer = shutil.which("explorer") or "explorer"
    process = subprocess.Popen([explorer, "dashboard", "--store", url, "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    try:
        try:
            wait_until_serving(process, port, seconds=120)
        except NotServing as problem:
            sys.exit(str(problem))
        yield f"http://127.0.0.1:{port}/", process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Run:
    first_chart: float = 0.0
    first_view: float = 0.0
    first_view_cpu: float = 0.0
    bytes_first_view: int = 0
    filter_change: float = 0.0
    filter_cpu: float = 0.0
    rss_mb: float = 0.0
    refresh_wall: float = 0.0
    refresh_cpu: float = 0.0
    idle_cpu_per_s: float = 0.0
    bytes_refresh: int = 0
    notes: list[str] = field(default_factory=list)


def _expected_filtered(path: Path, cardinality: int) -> int:
    """Candidates (space, key) of finished trials whose stage-1 C is `cardinality`."""
    with Writer.open(path) as store, store.engine.connect() as conn:
        c, t = candidate_table.c, trial_table.c
        rows = conn.execute(
            select(c.space, c.key).distinct()
            .join(trial_table, (t.experiment_id == c.experiment_id)
                  & (t.candidate_key == c.key))
            .where(c.cardinality == cardinality, t.status == "finished")).all()
    return len(rows)


def _finished_count(path: Path) -> int:
    from sqlalchemy import func

    with Writer.open(path) as store, store.engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(trial_table)
                               .where(trial_table.c.status == "finished")) or 0)


def _one_new_trial(path: Path, serial: int) -> None:
    """What the sweep writes for one trial: added, started, finished (three transactions)."""
    with Writer.open(path) as store:
        with store.engine.connect() as conn:
            row = conn.execute(select(trial_table.c.experiment_id, trial_table.c.candidate_key)
                               .order_by(trial_table.c.id).limit(1)).one()
        key = f"{row.candidate_key}-bench-{serial}-{time.time_ns()}"
        store.add_trials(row.experiment_id, [(key, row.candidate_key, 1000 + serial)])
        store.mark_running(row.experiment_id, key, "cuda:0")
        store.finish_trial(row.experiment_id, key, "finished",
                           {"test_error": 5.0, "epochs_completed": EPOCHS})


def step(what: str) -> None:
    if os.environ.get("BENCH_VERBOSE"):
        print(f"  {time.strftime('%H:%M:%S')} {what}", file=sys.stderr, flush=True)


def warm_up(context: Any, port: int) -> None:
    """Load the app once from a small store on the same origin, so that the browser has
    the app's scripts cached (as after a user's first visit) and the runs time the data."""
    with tempfile.TemporaryDirectory() as tmp:
        small = Path(tmp) / "small.db"
        build(small, 400)
        with dashboard(f"sqlite:///{small}", port) as (page_url, _process):
            page = context.new_page()
            page.goto(page_url, wait_until="domcontentloaded")
            page.wait_for_function(f"() => ({DRAWN})('error_vs_params') > 0",
                                   timeout=600_000)
            page.close()


def measure_once(context: Any, port: int, path: Path, serial: int, cardinality: int) -> Run:
    run = Run()
    url = f"sqlite:///{path.resolve()}"
    expected = _expected_filtered(path, cardinality)
    with dashboard(url, port) as (page_url, process):
        page = context.new_page()
        received = [0]

        def on_socket(socket: Any) -> None:
            socket.on("framereceived", lambda payload: received.__setitem__(
                0, received[0] + len(payload)))

        page.on("websocket", on_socket)
        cpu0 = cpu_seconds(process.pid)
        started = time.perf_counter()
        page.goto(page_url, wait_until="domcontentloaded")
        page.wait_for_function(f"() => ({DRAWN})('error_vs_flops') > 0", timeout=600_000,
                               polling=50)
        step("run.first_chart = time.perf_co")
        run.first_chart = time.perf_counter() - started
        page.wait_for_function(f"() => ({DRAWN})('error_vs_params') > 0", timeout=600_000,
                               polling=50)
        page.wait_for_function(SETTLED, timeout=600_000, polling=50)
        step("run.first_view = time.perf_cou")
        run.first_view = time.perf_counter() - started
        run.first_view_cpu = cpu_seconds(process.pid) - cpu0
        run.bytes_first_view = received[0]
        run.rss_mb = rss_mb(process.pid)

        # Idle: what the live poll costs when nothing changes (two polls).
        page.wait_for_timeout(1000)
        cpu0, started = cpu_seconds(process.pid), time.perf_counter()
        page.wait_for_timeout(6500)
        step("run.idle_cpu_per_s = (")
        run.idle_cpu_per_s = (cpu_seconds(process.pid) - cpu0) / (time.perf_counter() - started)

        # A live refresh: one new finished trial; the page's count of finished trials rises.
        finished = _finished_count(path)
        sent = received[0]
        cpu0 = cpu_seconds(process.pid)
        started = time.perf_counter()
        _one_new_trial(path, serial)
        wrote = time.perf_counter() - started
        page.wait_for_function(
            "(n) => [...document.querySelectorAll('[data-testid=\"stCaptionContainer\"]')]"
            ".some(e => e.innerText.replace(/[,\\s]/g, '').includes(n + 'finished'))",
            arg=str(finished + 1), timeout=600_000, polling=50)
        page.wait_for_function(SETTLED, timeout=600_000, polling=50)
        run.refresh_wall = time.perf_counter() - started - wrote
        span = time.perf_counter() - started
        run.refresh_cpu = cpu_seconds(process.pid) - cpu0 - run.idle_cpu_per_s * span
        run.bytes_refresh = received[0] - sent
        # A filter change: one cardinality picked in the sidebar.
        box = page.locator('[data-testid="stSidebar"] [data-testid="stMultiSelect"]').filter(
            has_text="cardinality C")
        box.locator("input").click()
        page.keyboard.type(str(cardinality))
        cpu0 = cpu_seconds(process.pid)
        started = time.perf_counter()
        page.keyboard.press("Enter")
        page.wait_for_function(f"() => ({DRAWN})('error_vs_flops') === {expected}",
                               timeout=600_000, polling=20)
        step("run.filter_change = time.perf_")
        run.filter_change = time.perf_counter() - started
        page.wait_for_function(SETTLED, timeout=600_000, polling=50)
        run.filter_cpu = cpu_seconds(process.pid) - cpu0
        page.keyboard.press("Escape")

        page.close()
    return run


def measure(path: Path, runs: int, cardinality: int) -> None:
    from playwright.sync_api import sync_playwright

    done: list[Run] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1100})
        port = free_local_port()
        try:
            warm_up(context, port)
            for serial in range(runs):
                run = measure_once(context, port, path, serial, cardinality)
                done.append(run)
                print(f"run {serial + 1}: first chart {run.first_chart:.2f} s, first view "
                      f"{run.first_view:.2f} s ({run.first_view_cpu:.2f} s server CPU, "
                      f"{run.bytes_first_view / 1e6:.2f} MB to the browser), filter change "
                      f"{run.filter_change:.3f} s ({run.filter_cpu:.2f} s CPU), server RSS "
                      f"{run.rss_mb:.0f} MB, idle poll {run.idle_cpu_per_s:.3f} CPU s/s, live "
                      f"refresh {run.refresh_wall:.2f} s wall, {run.refresh_cpu:.3f} s server "
                      f"CPU, {run.bytes_refresh / 1e6:.3f} MB", flush=True)
        finally:
            browser.close()
    print(f"{path.name}: {runs} runs (each a fresh server, the browser's cache warm), min / "
          "median (CPU shared with other work: wall times vary; CPU times beside them)")
    for name, unit in (("first_chart", "s"), ("first_view", "s"), ("first_view_cpu", "s CPU"),
                       ("bytes_first_view", "bytes"), ("filter_change", "s"),
                       ("filter_cpu", "s CPU"), ("rss_mb", "MB"), ("refresh_wall", "s"),
                       ("refresh_cpu", "s CPU"), ("bytes_refresh", "bytes")):
        values = [float(getattr(r, name)) for r in done]
        print(f"  {name:17s} {min(values):12.3f} / {statistics.median(values):12.3f} {unit}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("build", help="build a store of finished trials")
    make.add_argument("--trials", type=int, default=100_000)
    make.add_argument("--store", type=Path, required=True, help="a new SQLite file")
    check = sub.add_parser("measure", help="measure the dashboard on a store")
    check.add_argument("--store", type=Path, required=True, help="a store `build` made")
    check.add_argument("--runs", type=int, default=3)
    check.add_argument("--cardinality", type=int, default=4,
                       help="the C picked for the filter change")
    args = parser.parse_args()
    if args.command == "build":
        build(args.store, args.trials)
    else:
        measure(args.store, args.runs, args.cardinality)


if __name__ == "__main__":
    main()
