"""Save one chart of an `explorer report` HTML file as a PNG, for the docs.

Opens the report (standalone, offline) in Debian's headless Chromium
(Playwright, as docs/make_screenshot.py does), waits for the chart, and writes
a screenshot of its element atomically.

    explorer report cifar10-nds-cpu --runs-dir nds_runs -o report.html
    python docs/make_report_figure.py report.html --figure figure-compare_edf \
        --output docs/nds_cpu_edf.png
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from make_screenshot import ARGS, CHROMIUM


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--figure", default="figure-compare_edf",
                        help="the chart's element id in the report")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--width", type=int, default=1000)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": args.width, "height": 800})
        page.goto(args.report.resolve().as_uri(), wait_until="load")
        chart = page.locator(f"#{args.figure}")
        chart.locator(".main-svg").first.wait_for(timeout=60_000)
        page.wait_for_timeout(1000)  # the chart's transitions settle
        with tempfile.TemporaryDirectory() as folder:
            shot = Path(folder) / "shot.png"
            chart.screenshot(path=str(shot))
            shutil.move(shot, args.output)
        browser.close()
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
