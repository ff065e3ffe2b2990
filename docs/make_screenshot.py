"""Save docs/dashboard.png: the dashboard on real results, opened at a chosen tab.

Starts `explorer dashboard` on a runs folder, opens it in Debian's headless
Chromium (Playwright), picks the experiments and the tab, waits for the
charts, and writes the screenshot atomically.

    python docs/make_screenshot.py --runs-dir runs --experiment quickstart --tab Tradeoff
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from explorer.serve import NotServing, free_local_port, wait_until_serving

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--experiment", action="append", default=[],
                        help="experiments to pick (repeat); default: the dashboard's choice")
    parser.add_argument("--tab", default="Tradeoff")
    parser.add_argument("--output", default=str(Path(__file__).with_name("dashboard.png")))
    parser.add_argument("--height", type=int, default=1100)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    port = free_local_port()
    explorer = shutil.which("explorer") or "explorer"
    process = subprocess.Popen([explorer, "dashboard", "--runs-dir", args.runs_dir, "--port",
                                str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    try:
        try:
            wait_until_serving(process, port)
        except NotServing as problem:
            sys.exit(str(problem))
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": args.height})
            page.goto(f"http://127.0.0.1:{port}/", wait_until="domcontentloaded")
            page.wait_for_selector(".js-plotly-plot", timeout=60_000)
            picker = page.locator('[data-testid="stSidebar"] [data-testid="stMultiSelect"] input')
            for name in args.experiment:  # type into the experiments picker, Enter picks it
                picker.first.click()
                page.keyboard.type(name)
                page.keyboard.press("Enter")
                page.keyboard.press("Escape")
                page.wait_for_timeout(1500)
            page.get_by_role("tab", name=args.tab).click()
            page.wait_for_timeout(3000)  # the tab's charts draw and settle
            with tempfile.TemporaryDirectory() as folder:
                shot = Path(folder) / "shot.png"
                page.screenshot(path=str(shot))
                shutil.move(shot, args.output)
            browser.close()
    finally:
        process.terminate()
        process.wait(timeout=15)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
