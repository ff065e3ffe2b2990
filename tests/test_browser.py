"""The dashboard in a real headless Chromium (Debian's, driven by Playwright).

`explorer dashboard` serves a fixture database; the page must draw one point
per candidate mean in the error-vs-FLOPs chart (read from the plotly figure in
the DOM), show no exception, and pick up a trial that finishes while the page
is open without being reloaded. A link with filters in its query string, opened in a
fresh browser context, must show the same filtered chart. Above the density-bin
threshold (passed to the app as an argument), a box dragged over the chart must draw
exactly the candidates inside it. A screenshot is saved under the test's tmp
folder (the README's picture, of real results, comes from docs/make_screenshot.py).

Skipped when /usr/bin/chromium or playwright is missing, except under CI
(env CI set), where that is a failure: CI installs both.
"""

from __future__ import annotations

import importlib.util
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fixtures_store import make_fixture_store

from explorer import analysis
from explorer.serve import NotServing, free_local_port, streamlit_command, wait_until_serving
from explorer.store import Reader, Writer

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = "cifar10-width"  # the newest of the fixture's experiments: shown by default

# Points of the traces whose meta.role is "candidates" in the chart named `chart`, or -1.
COUNT_POINTS = """(chart) => {
  for (const el of document.querySelectorAll('.js-plotly-plot')) {
    if (!el.layout || !el.layout.meta || el.layout.meta.chart !== chart || !el._fullData) continue;
    let n = 0;
    for (const t of el._fullData) {
      const meta = (el.data[t.index] || {}).meta || t.meta || {};
      if (meta.role === 'candidates') n += t._length;
    }
    return n;
  }
  return -1;
}"""


def _missing() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is missing (pip install playwright)"
    return None


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    missing = _missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"browser test under CI: {missing}")
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS,
                                             headless=True)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def serving(command: list[str], port: int) -> Iterator[str]:
    """The dashboard started by `command` on `port`, stopped after; yields its page URL."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    try:
        try:
            wait_until_serving(process, port)
        except NotServing as problem:
            pytest.fail(str(problem))
        yield f"http://127.0.0.1:{port}/"
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """`explorer dashboard` on a fixture database; yields (page URL, store URL)."""
    path = tmp_path / "explorer.db"
    make_fixture_store(path, seeds=2, failed=1, running=1)
    store = f"sqlite:///{path}"
    port = free_local_port()
    explorer = shutil.which("explorer")
    command = [explorer] if explorer else [sys.executable, "-m", "explorer.cli"]
    with serving([*command, "dashboard", "--store", store, "--port", str(port)], port) as url:
        yield url, store


def candidate_means(store: str) -> int:
    with Reader.open(store) as reader:
        return len(analysis.by_candidate(reader.trials_frame([EXPERIMENT])))


def test_dashboard_in_chromium(chromium: Any, server: tuple[str, str], tmp_path: Path) -> None:
    url, store = server
    expected = candidate_means(store)
    page = chromium.new_page(viewport={"width": 1400, "height": 1100})
    errors: list[str] = []
    page.on("pageerror", lambda problem: errors.append(str(problem)))
    page.goto(url, wait_until="domcontentloaded")
    page.wait_for_function(f"() => ({COUNT_POINTS})('error_vs_flops') > 0", timeout=45_000)
    assert page.evaluate(COUNT_POINTS, "error_vs_flops") == expected
    assert page.evaluate(COUNT_POINTS, "error_vs_params") == expected
    assert page.locator('[data-testid="stException"]').count() == 0
    assert page.get_by_text("1 trial failed").count() >= 1
    assert not errors, errors

    time.sleep(1.0)  # let the charts finish their transitions
    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000

    # Live: the running trial finishes while the page is open; the chart gains its point
    # without the page being reloaded (the marker set on window survives).
    page.evaluate("() => { window.__notReloaded = true; }")
    with Writer.open(store) as writer:
        trials = writer.trials_frame([EXPERIMENT])
        running = trials[trials["status"] == "running"].iloc[0]
        writer.finish_trial(int(running["experiment_id"]), str(running["trial_key"]),
                            "finished", {"test_error": 4.5})
    after = candidate_means(store)
    assert after == expected + 1
    page.wait_for_function(f"() => ({COUNT_POINTS})('error_vs_flops') === {after}",
                           timeout=20_000)
    assert page.evaluate("() => window.__notReloaded === true")
    page.close()


def test_a_shared_link_reproduces_a_filtered_view(chromium: Any, server: tuple[str, str]
                                                 ) -> None:
    """Filters picked in one page are in its URL; that URL opened in a fresh page (a new
    browser context: no shared session) shows the same filtered chart."""
    url, store = server
    with Reader.open(store) as reader:
        trials = reader.trials_frame([EXPERIMENT])
    cardinality = int(trials["cardinality"].min())
    expected = len(analysis.by_candidate(trials[trials["cardinality"] == cardinality]))
    assert 0 < expected < candidate_means(store)

    first = chromium.new_context(viewport={"width": 1400, "height": 1100})
    page = first.new_page()
    page.goto(f"{url}?C={cardinality}", wait_until="domcontentloaded")
    page.wait_for_function(f"() => ({COUNT_POINTS})('error_vs_flops') === {expected}",
                           timeout=45_000)
    # The page rewrites its URL with the whole view: the tab and the experiment too.
    page.wait_for_function("() => location.search.includes('experiment=')", timeout=20_000)
    shared = page.url
    assert f"C={cardinality}" in shared and "view=" in shared
    first.close()

    fresh = chromium.new_context(viewport={"width": 1400, "height": 1100})
    again = fresh.new_page()
    errors: list[str] = []
    again.on("pageerror", lambda problem: errors.append(str(problem)))
    again.goto(shared, wait_until="domcontentloaded")
    again.wait_for_function(f"() => ({COUNT_POINTS})('error_vs_flops') > 0", timeout=45_000)
    assert again.evaluate(COUNT_POINTS, "error_vs_flops") == expected
    picked = (again.locator('[data-testid="stMultiSelect"]').filter(has_text="cardinality C")
              .locator("[data-tag]")
              .evaluate_all("tags => tags.map(t => t.getAttribute('aria-label'))"))
    assert picked == [str(cardinality)]
    assert again.locator('[data-testid="stException"]').count() == 0
    assert not errors, errors
    fresh.close()


# The pixel box of chart `chart`'s plot area and its axes' ranges in data units there:
# [left, top, right, bottom] in page pixels, [x of left, x of right, y of bottom, y of top].
PLOT_AREA = """(chart) => {
  for (const el of document.querySelectorAll('.js-plotly-plot')) {
    if (!el.layout || !el.layout.meta || el.layout.meta.chart !== chart) continue;
    const drag = el.querySelector('.nsewdrag').getBoundingClientRect();
    const x = el._fullLayout.xaxis, y = el._fullLayout.yaxis;
    return [[drag.left, drag.top, drag.right, drag.bottom],
            [x.p2d(0), x.p2d(drag.width), y.p2d(drag.height), y.p2d(0)]];
  }
  return null;
}"""
# Points of the traces whose meta.role is `role` in chart `chart`, as [x, y] pairs.
POINTS = """([chart, role]) => {
  for (const el of document.querySelectorAll('.js-plotly-plot')) {
    if (!el.layout || !el.layout.meta || el.layout.meta.chart !== chart) continue;
    if (!el._fullData) return null;
    const out = [];
    for (const t of el._fullData) {
      const meta = (el.data[t.index] || {}).meta || t.meta || {};
      if (meta.role !== role) continue;
      for (let i = 0; i < t._length; i++) out.push([Number(t.x[i]), Number(t.y[i])]);
    }
    return out;
  }
  return null;
}"""


# Rows of density-bin cells drawn by a chart's heatmaps (its role "bins" traces).
BIN_ROWS = """(chart) => {
  for (const el of document.querySelectorAll('.js-plotly-plot')) {
    if (!el.layout || !el.layout.meta || el.layout.meta.chart !== chart || !el._fullData) continue;
    let n = 0;
    for (const t of el._fullData) {
      const meta = (el.data[t.index] || {}).meta || t.meta || {};
      if (meta.role === 'bins') n += (t.z || []).length;
    }
    return n;
  }
  return -1;
}"""


def test_a_box_selected_in_the_density_bins_shows_its_candidates(
        chromium: Any, tmp_path: Path) -> None:
    """Above the threshold (passed to the app, here one less than the candidates) error vs
    FLOPs draws density bins; a box dragged over part of the chart draws the candidates
    inside that box one by one: exactly those whose mean lies in it."""
    path = tmp_path / "explorer.db"
    make_fixture_store(path, seeds=2)
    store = f"sqlite:///{path}"
    with Reader.open(store) as reader:
        means = analysis.by_candidate(reader.trials_frame([EXPERIMENT]))
    port = free_local_port()
    with serving(streamlit_command(store, port=port, bin_above=len(means) - 1),
                 port) as url:
        page = chromium.new_page(viewport={"width": 1400, "height": 1100})
        errors: list[str] = []
        page.on("pageerror", lambda problem: errors.append(str(problem)))
        page.goto(url, wait_until="domcontentloaded")
        page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length > 0"
                               " && document.querySelector('.nsewdrag')", timeout=45_000)
        page.wait_for_function(f"() => ({BIN_ROWS})('error_vs_flops') > 0", timeout=45_000)
        assert page.evaluate(COUNT_POINTS, "error_vs_flops") == 0  # bins, no single points
        (left, top, right, bottom), (x0, x1, y0, y1) = page.evaluate(PLOT_AREA,
                                                                   "error_vs_flops")
        # From the left edge to midway between the two middle distinct FLOPs (in pixels, so
        # that no candidate lies near the box's edge), every error: the cheaper candidates.
        def pixel_of(flops: float) -> float:
            share = (math.log10(flops) - math.log10(x0)) / (math.log10(x1) - math.log10(x0))
            return left + share * (right - left)

        distinct = sorted(set(means["flops"].astype(float)))
        middle = len(distinct) // 2
        cut = (pixel_of(distinct[middle - 1]) + pixel_of(distinct[middle])) / 2
        page.mouse.move(left + 2, top + 2)
        page.mouse.down()
        page.mouse.move((left + cut) / 2, (top + bottom) / 2, steps=5)
        page.mouse.move(cut, bottom - 2, steps=5)
        page.mouse.up()
        page.wait_for_function(f"() => ({COUNT_POINTS})('error_vs_flops') > 0", timeout=45_000)
        drawn = page.evaluate(POINTS, ["error_vs_flops", "candidates"])
        assert page.evaluate(BIN_ROWS, "error_vs_flops") == 0

        # The box in data units, from the axes' ranges: log FLOPs across, error up.
        def flops_at(px: float) -> float:
            share = (px - left) / (right - left)
            return float(10 ** (math.log10(x0) + share * (math.log10(x1) - math.log10(x0))))

        def error_at(px: float) -> float:
            return y1 - (px - top) / (bottom - top) * (y1 - y0)

        low, high = flops_at(left + 2), flops_at(cut)
        best, worst = error_at(bottom - 2), error_at(top + 2)
        inside = means[means["flops"].astype(float).between(low, high)
                       & means["test_error_mean"].between(best, worst)]
        assert 0 < len(inside) < len(means)
        expected = sorted(zip(inside["flops"].astype(float), inside["test_error_mean"],
                              strict=True))
        assert sorted(map(tuple, drawn)) == pytest.approx(expected)

        # Back to every candidate: the bins again.
        page.get_by_role("button", name="show every candidate").first.click()
        page.wait_for_function(f"() => ({BIN_ROWS})('error_vs_flops') > 0", timeout=45_000)
        assert page.evaluate(COUNT_POINTS, "error_vs_flops") == 0
        assert page.locator('[data-testid="stException"]').count() == 0
        assert not errors, errors
