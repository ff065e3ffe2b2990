"""The dashboard at 10k-1M trials, in a real browser, through `explorer dashboard`.

    python benchmarks/dashboard_scale.py measure --out DIR [--trials 100000] [--runs 3]
    python benchmarks/dashboard_scale.py optuna --out DIR [--trials 10000] [--wait 1800]

The stores are benchmarks/scale.py's (``DIR/store-N.db``, experiment 'scale': four
sampled spaces, 2 seeds, 10 epochs, every trial's events through the sweep's own
sink), built by its `build` when DIR has none yet and reused as they are otherwise.

`measure` starts `explorer dashboard --store URL` on a free loopback port and,
with Playwright driving Debian's headless Chromium (/usr/bin/chromium), for
each run in a new page:

- first chart: from navigation until the error-vs-FLOPs chart has drawn points;
- whole first view: until both charts of the first tab are drawn and the app
  says it is no longer running;
- a filter change: one cardinality picked in the sidebar, until the chart
  shows the filtered points (or, where they are still more than
  figures.BIN_THRESHOLD, as at 1M trials, the bins of just those): from the
  harness's click call until its poll (every 20 ms) sees them, and, in the
  page, from the click's mousedown to the animation frame that has them (the
  user's wait, without Playwright's own checks before it clicks);
- bytes sent to the browser: the app's data, the websocket frames it receives (the
  scripts come from the browser's cache, see below);
- the server's resident memory (its process tree, from /proc) after the view;
- a live refresh: one new finished trial written by the `Writer`, the time
  until the page shows it, and the server's CPU time (user + system of its
  process tree, /proc) from the write until the page has it, less the same
  span's idle poll cost measured just before.

Every run starts a fresh `explorer dashboard` and waits until it serves: the server
start is printed too, since it includes the server's read of the store for the first page
(dashboard.launch), and the first chart is timed from the navigation that follows. The
browser first loads
the app once from a 400-trial store on the same origin, so its scripts are cached as
after a user's first visit and the runs time the data, not the download of Streamlit's
own JavaScript. Prints min and median over the runs. The CPU is shared: the
figures are wall times on whatever the machine gives, so CPU times are printed
beside them. (The refresh adds a trial to the store: measure a copy.)

`optuna` puts the same finished trials in an Optuna study (scale.py's
`optuna_dashboard`, which also times optuna-dashboard's API), then times, in the same
browser, optuna-dashboard's study page until its first chart has points, beside
explorer's first chart on the same store, and both servers' memory. It takes minutes
of CPU: run it once, under nice.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scale import EPOCHS, build, optuna_dashboard, store_path
from sqlalchemy import func, select

from explorer.figures import BIN_THRESHOLD
from explorer.serve import NotServing, free_local_port, wait_until_serving
from explorer.store import Writer
from explorer.store.schema import candidate_table, trial_table

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


# --- the server and the browser ------------------------------------------------------------

# Points (candidates, or rows of density bins) drawn by the chart named `chart` (-1: no
# such chart yet).
DRAWN = """(chart) => {
  for (const el of document.querySelectorAll('.js-plotly-plot')) {
    if (!el.layout || !el.layout.meta || el.layout.meta.chart !== chart || !el._fullData) continue;
    let n = 0;
    for (const t of el._fullData) {
      const role = ((el.data[t.index] || {}).meta || {}).role;
      // A heatmap of bins counts its rows of cells (it has no _length).
      if (role === 'candidates') n += t._length || 0;
      if (role === 'bins') n += t._length || (t.z ? t.z.length : 0);
    }
    return n;
  }
  return -1;
}"""
# The chart named `chart` has `text` in its title (the binned charts name their count).
TITLED = """([chart, text]) => [...document.querySelectorAll('.js-plotly-plot')].some(el =>
  el.layout && el.layout.meta && el.layout.meta.chart === chart && el._fullData &&
  ((el.layout.title || {}).text || '').includes(text))"""
# Streamlit shows its status widget while a script run is under way.
# Some caption of the page says that `n` trials finished.
SHOWS_FINISHED = ("(n) => [...document.querySelectorAll('[data-testid=\"stCaptionContainer\"]')]"
                  ".some(e => e.innerText.replace(/[,\\s]/g, '').includes(n + 'finished'))")
SETTLED = "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
# In the page, from the click's mousedown to the first animation frame in which the
# predicate `holds` holds: the user's wait, without the harness's own steps before the
# click (Playwright's checks that the option is there, visible and still) or its polling
# after. Resolves to seconds.
IN_PAGE = """(holds) => new Promise(resolve => {
  let pressed = null;
  document.addEventListener('mousedown', () => { pressed = performance.now(); },
                            {capture: true, once: true});
  const check = () => {
    if (pressed !== null && holds()) resolve((performance.now() - pressed) / 1000);
    else requestAnimationFrame(check);
  };
  requestAnimationFrame(check);
})"""
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


def wait_until(page: Any, predicate: str, arg: Any = None, seconds: float = 600,
               every: float = 0.02) -> None:
    """Evaluate `predicate` in the page every `every` seconds until it holds; TimeoutError
    after `seconds`."""
    deadline = time.perf_counter() + seconds
    while not page.evaluate(predicate, arg):
        if time.perf_counter() > deadline:
            raise TimeoutError(f"not within {seconds:g} s: {predicate[:80]}")
        page.wait_for_timeout(every * 1000)


@contextmanager
def dashboard(url: str, port: int) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """`explorer dashboard` on a loopback port (the streamlit server replaces it), once it
    serves: after its read of the store for the first page (dashboard.launch)."""
    explorer = shutil.which("explorer") or "explorer"
    process = subprocess.Popen([explorer, "dashboard", "--store", url, "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    try:
        try:
            wait_until_serving(process, port, seconds=600)
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
    start: float = 0.0
    first_chart: float = 0.0
    first_view: float = 0.0
    first_view_cpu: float = 0.0
    bytes_first_view: int = 0
    filter_change: float = 0.0
    filter_in_page: float = 0.0
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
        build(Path(tmp), 400)
        with dashboard(f"sqlite:///{store_path(Path(tmp), 400)}", port) as (page_url, _process):
            page = context.new_page()
            page.goto(page_url, wait_until="domcontentloaded")
            wait_until(page, f"() => ({DRAWN})('error_vs_params') > 0")
            page.close()


def measure_once(context: Any, port: int, path: Path, serial: int, cardinality: int) -> Run:
    run = Run()
    url = f"sqlite:///{path.resolve()}"
    expected = _expected_filtered(path, cardinality)
    started = time.perf_counter()
    with dashboard(url, port) as (page_url, process):
        run.start = time.perf_counter() - started
        page = context.new_page()
        received = [0]

        def on_socket(socket: Any) -> None:
            socket.on("framereceived", lambda payload: received.__setitem__(
                0, received[0] + len(payload)))

        page.on("websocket", on_socket)
        cpu0 = cpu_seconds(process.pid)
        started = time.perf_counter()
        page.goto(page_url, wait_until="domcontentloaded")
        wait_until(page, f"() => ({DRAWN})('error_vs_flops') > 0")
        step("run.first_chart = time.perf_co")
        run.first_chart = time.perf_counter() - started
        wait_until(page, f"() => ({DRAWN})('error_vs_params') > 0")
        wait_until(page, SETTLED)
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
        try:
            wait_until(page, SHOWS_FINISHED, str(finished + 1), seconds=120)
            wait_until(page, SETTLED)
            run.refresh_wall = time.perf_counter() - started - wrote
            span = time.perf_counter() - started
            run.refresh_cpu = cpu_seconds(process.pid) - cpu0 - run.idle_cpu_per_s * span
        except TimeoutError:
            run.refresh_wall = run.refresh_cpu = float("nan")
            run.notes.append("the page did not show the new trial within 120 s")
        step("refreshed")
        run.bytes_refresh = received[0] - sent
        # A filter change: one cardinality picked in the sidebar.
        box = page.locator('[data-testid="stSidebar"] [data-testid="stMultiSelect"]').filter(
            has_text="cardinality C")
        box.locator("input").click()
        page.keyboard.type(str(cardinality))
        # The option itself: Enter picks every option the text matches ("4" and "64").
        option = page.get_by_role("option", name=str(cardinality), exact=True)
        option.wait_for()
        # Every candidate, one point each; or, still more than the bins' threshold (as at
        # 1M trials), the bins of just those, which the chart's title counts.
        filtered = (f"() => ({DRAWN})('error_vs_flops') === {expected}"
                    if expected <= BIN_THRESHOLD else
                    f"() => ({TITLED})(['error_vs_flops', '{expected:,} candidates'])")
        page.evaluate(f"() => {{ window.__filtered = ({IN_PAGE})({filtered}); }}")
        cpu0 = cpu_seconds(process.pid)
        started = time.perf_counter()
        option.click()
        try:
            wait_until(page, filtered, seconds=120)
            step("run.filter_change = time.perf_")
            run.filter_change = time.perf_counter() - started
            run.filter_in_page = page.evaluate("() => window.__filtered")
            wait_until(page, SETTLED)
            run.filter_cpu = cpu_seconds(process.pid) - cpu0
        except TimeoutError:
            run.filter_change = run.filter_in_page = run.filter_cpu = float("nan")
            run.notes.append(f"the chart did not show {expected:,} candidates within 120 s (it "
                             f"shows {page.evaluate(DRAWN, 'error_vs_flops')})")
        page.keyboard.press("Escape")

        page.close()
    return run


@contextmanager
def warm_browser() -> Iterator[tuple[Any, int]]:
    """Headless Chromium's context, its cache warmed on a loopback port (`warm_up`), and
    that port."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1100})
        port = free_local_port()
        try:
            warm_up(context, port)
            yield context, port
        finally:
            browser.close()


def measure(path: Path, runs: int, cardinality: int) -> None:
    done: list[Run] = []
    with warm_browser() as (context, port):
        for serial in range(runs):
            run = measure_once(context, port, path, serial, cardinality)
            done.append(run)
            print(f"run {serial + 1}: server start {run.start:.2f} s, first chart "
                  f"{run.first_chart:.2f} s, first view "
                  f"{run.first_view:.2f} s ({run.first_view_cpu:.2f} s server CPU, "
                  f"{run.bytes_first_view / 1e6:.2f} MB to the browser), filter change "
                  f"{run.filter_change:.3f} s ({run.filter_in_page:.3f} s in the page, "
                  f"{run.filter_cpu:.2f} s CPU), server RSS "
                  f"{run.rss_mb:.0f} MB, idle poll {run.idle_cpu_per_s:.3f} CPU s/s, live "
                  f"refresh {run.refresh_wall:.2f} s wall, {run.refresh_cpu:.3f} s server "
                  f"CPU, {run.bytes_refresh / 1e6:.3f} MB {'; '.join(run.notes)}", flush=True)
    print(f"{path.name}: {runs} runs (each a fresh server, the browser's cache warm), min / "
          "median (CPU shared with other work: wall times vary; CPU times beside them)")
    for name, unit in (("start", "s"), ("first_chart", "s"), ("first_view", "s"),
                       ("first_view_cpu", "s CPU"),
                       ("bytes_first_view", "bytes"), ("filter_change", "s"),
                       ("filter_in_page", "s"), ("filter_cpu", "s CPU"), ("rss_mb", "MB"),
                       ("refresh_wall", "s"), ("refresh_cpu", "s CPU"),
                       ("bytes_refresh", "bytes")):
        values = [float(getattr(r, name)) for r in done]
        print(f"  {name:17s} {min(values):12.3f} / {statistics.median(values):12.3f} {unit}")


# optuna-dashboard's study page: any plotly chart with points drawn.
OPTUNA_DRAWN = """() => [...document.querySelectorAll('.js-plotly-plot')].some(
  el => (el._fullData || []).some(t => (t._length || 0) > 0))"""


def first_chart(context: Any, page_url: str, drawn: str, process: subprocess.Popen[str],
                wait: float) -> tuple[float, float, float]:
    """Seconds from navigation until `drawn` holds, the server's CPU seconds meanwhile and
    its resident memory then; nan seconds when not within `wait`."""
    page = context.new_page()
    cpu0, started = cpu_seconds(process.pid), time.perf_counter()
    page.goto(page_url, wait_until="domcontentloaded", timeout=int(wait * 1000))
    try:
        wait_until(page, drawn, seconds=wait, every=0.1)
        took = time.perf_counter() - started
    except TimeoutError:
        took = float("nan")
    figures = took, cpu_seconds(process.pid) - cpu0, rss_mb(process.pid)
    page.close()
    return figures


@contextmanager
def optuna_server(storage: str, port: int) -> Iterator[subprocess.Popen[str]]:
    # optuna_dashboard has no __main__: its console script's entry point, in this Python.
    process = subprocess.Popen([sys.executable, "-c",
                                "from optuna_dashboard._cli import main; main()", storage,
                                "--port", str(port), "--host", "127.0.0.1", "--quiet"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    try:
        yield process
    finally:
        process.kill()
        process.wait()


def versus_optuna(out: Path, trials: int, runs: int, wait: float, api_wait: float) -> None:
    """optuna-dashboard's first chart against explorer's, on the same finished trials."""
    import urllib.request

    import optuna
    from scale import EXPERIMENT

    optuna_dashboard(out, trials, api_wait)  # writes out/optuna-N.db once (and times the API)
    storage = f"sqlite:///{out / f'optuna-{trials}.db'}"
    study_id = optuna.storages.RDBStorage(storage).get_study_id_from_name(EXPERIMENT)
    explorer_url = f"sqlite:///{store_path(out, trials).resolve()}"
    ours: list[tuple[float, float, float]] = []
    with warm_browser() as (context, port):
        for _ in range(runs):
            with dashboard(explorer_url, port) as (page_url, process):
                ours.append(first_chart(context, page_url, f"() => ({DRAWN})"
                                        "('error_vs_flops') > 0", process, wait))
            print(f"explorer: first chart {ours[-1][0]:.1f} s, server CPU "
                  f"{ours[-1][1]:.1f} s, RSS {ours[-1][2]:.0f} MB", flush=True)
        port = free_local_port()
        with optuna_server(storage, port) as process:
            base = f"http://127.0.0.1:{port}"
            deadline = time.perf_counter() + 120
            while True:
                try:
                    urllib.request.urlopen(f"{base}/api/meta", timeout=5).read()
                    break
                except OSError:
                    if time.perf_counter() > deadline:
                        sys.exit("optuna-dashboard did not come up in 120 s")
                    time.sleep(0.5)
            theirs = first_chart(context, f"{base}/dashboard/studies/{study_id}",
                                 OPTUNA_DRAWN, process, wait)
    print(f"{trials:,} trials, the same finished ones in both; first chart in Chromium "
          f"(explorer: min / median of {runs}, each a fresh server; optuna-dashboard: one "
          f"run, at most {wait:.0f} s)")
    for name, index, unit in (("first chart", 0, "s"), ("server CPU", 1, "s"),
                              ("server RSS", 2, "MB")):
        values = [run[index] for run in ours]
        print(f"  {name:12s} explorer {min(values):8.1f} / {statistics.median(values):8.1f} "
              f"{unit}; optuna-dashboard {theirs[index]:8.1f} {unit}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("measure", help="measure the dashboard on scale.py's store")
    rival = sub.add_parser("optuna", help="optuna-dashboard's first chart beside explorer's")
    for command, trials in ((check, 100_000), (rival, 10_000)):
        command.add_argument("--out", type=Path, required=True,
                             help="scale.py's folder of stores (store-N.db built if absent)")
        command.add_argument("--trials", type=int, default=trials)
        command.add_argument("--runs", type=int, default=3)
    check.add_argument("--cardinality", type=int, default=4,
                       help="the C picked for the filter change")
    rival.add_argument("--wait", type=float, default=1800,
                       help="seconds to wait for optuna-dashboard's first chart")
    rival.add_argument("--api-wait", type=float, default=1,
                       help="seconds scale.py's optuna_dashboard waits for its API")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    build(args.out, args.trials)
    if args.command == "measure":
        measure(store_path(args.out, args.trials), args.runs, args.cardinality)
    else:
        versus_optuna(args.out, args.trials, args.runs, args.wait, args.api_wait)


if __name__ == "__main__":
    main()
