"""The floor under the dashboard's first chart: Streamlit and the browser with no data.

    python benchmarks/dashboard_floor.py [--loads 4] [--store sqlite:///PATH]

Starts a minimal Streamlit app (one `st.plotly_chart` of three points, nothing else)
with the same Streamlit and Chromium (/usr/bin/chromium, through Playwright) that
benchmarks/dashboard_scale.py uses, and times, for each of --loads new pages in one
browser (its cache warm after the first), the span from navigation until the chart has
drawn its points: what any Streamlit page pays on this machine before it shows a
chart, whatever explorer does. With --store, the same is timed on `explorer dashboard`
over that store (one server for every load, so from the second load on its imports are
done and its caches warm), so the two can be read side by side. Prints each load and
min / median; CPU is shared, so read them as one machine's figures.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dashboard_scale import DRAWN, dashboard, wait_until

from explorer.serve import NotServing, free_local_port, wait_until_serving

# The chart is named as the dashboard names its error-vs-FLOPs chart, so one predicate
# (dashboard_scale.DRAWN) says when either has drawn its points.
MINIMAL_APP = """\
import plotly.graph_objects as go
import streamlit as st

figure = go.Figure(go.Scattergl(x=[1, 2, 3], y=[3, 1, 2], mode="markers",
                                meta={"role": "candidates"}))
figure.update_layout(meta={"chart": "error_vs_flops"})
st.plotly_chart(figure)
"""


@contextmanager
def minimal_app() -> Iterator[str]:
    """The minimal app served on a free loopback port; yields its URL."""
    with tempfile.TemporaryDirectory() as folder:
        app = Path(folder) / "app.py"
        app.write_text(MINIMAL_APP)
        port = free_local_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(app), "--server.port", str(port),
             "--server.address", "127.0.0.1", "--server.headless", "true",
             "--browser.gatherUsageStats", "false"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
        try:
            try:
                wait_until_serving(process, port, seconds=120)
            except NotServing as problem:
                sys.exit(f"the minimal app: {problem}")
            yield f"http://127.0.0.1:{port}/"
        finally:
            process.terminate()
            process.wait(timeout=30)


def first_charts(context: Any, url: str, loads: int, label: str) -> list[float]:
    """Seconds from navigation to the drawn chart, for `loads` new pages."""
    spans = []
    for load in range(1, loads + 1):
        page = context.new_page()
        started = time.perf_counter()
        page.goto(url, wait_until="domcontentloaded")
        wait_until(page, f"() => ({DRAWN})('error_vs_flops') > 0", seconds=300)
        spans.append(time.perf_counter() - started)
        print(f"{label}, load {load}: first chart {spans[-1]:.2f} s", flush=True)
        page.close()
    return spans


def summary(label: str, spans: list[float]) -> None:
    print(f"{label}: first chart min {min(spans):.2f} s, median {statistics.median(spans):.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loads", type=int, default=4)
    parser.add_argument("--store", default=None,
                        help="Also time `explorer dashboard` over this store URL.")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium")
        context = browser.new_context()
        runs: list[tuple[str, Callable[[], Any]]] = [("minimal Streamlit app", minimal_app)]
        if args.store:
            runs.append(("explorer dashboard", lambda: _explorer(args.store)))
        for label, serve in runs:
            with serve() as url:
                summary(label, first_charts(context, url, args.loads, label))
        browser.close()


@contextmanager
def _explorer(store: str) -> Iterator[str]:
    with dashboard(store, free_local_port()) as (url, _process):
        yield url


if __name__ == "__main__":
    main()
