"""`explorer report`: an experiment's charts and tables as one standalone HTML file.

The figures are the dashboard's (dashboard.figures), drawn from the store's
frames through explorer.analysis. plotly.js is embedded inline once, so the
file opens offline and loads nothing from anywhere; every text from the store
is HTML-escaped. The file is written atomically.
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.io as pio

from dashboard import figures
from explorer import analysis
from explorer.files import atomic_write

CURVE_TRIALS = 6
SECTIONS = (
    ("error_vs_flops", "Test error vs FLOPs (mean ± std over seeds; dashed: Pareto front)"),
    ("error_vs_params", "Test error vs parameters"),
    ("cardinality_tradeoff", "Cardinality at preserved complexity (the paper's Table 3)"),
    ("capacity_comparison", "More cardinality vs more width vs more depth (Fig. 7 / Table 4)"),
    ("training_curves", "Training curves of the best trials"),
    ("error_edf", "Error EDFs per space"),
    ("cost_latency_ms", "Measured latency"),
    ("cost_train_images_per_sec", "Measured training throughput"),
)

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { margin-bottom: 0.2em; } .meta { color: #666; margin-top: 0; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
section { margin: 2em 0; } pre { background: #f7f7f7; padding: 1em; overflow-x: auto; }
.warning { background: #fff4e5; border-left: 4px solid #f0a020; padding: 0.5em 1em; }
"""


class ReportError(Exception):
    """Nothing to report (e.g. no such experiment); one line for the user."""


@dataclass(frozen=True)
class ReportSummary:
    experiment: str
    version: int
    trials: int
    finished: int
    figures: int
    bytes: int


def write_report(store: Any, experiment: str, output: str | Path) -> ReportSummary:
    """Read `experiment` (its latest version) from a store and write the report to `output`."""
    trials = store.trials_frame([experiment])
    experiments = store.experiments()
    record = experiments[(experiments["experiment"] == experiment) & experiments["latest"]]
    if record.empty:
        raise ReportError(f"no experiment {experiment!r} in the store; "
                          "`explorer status` lists them")
    curve_ids = figures.best_trials(trials, CURVE_TRIALS)
    epochs = store.epochs_frame(trial_ids=curve_ids)
    text = render_report(trials, epochs, record.iloc[0].to_dict(), where=store.where,
                         curve_trials=curve_ids)
    atomic_write(output, lambda tmp: _write_shareable(tmp, text))
    per_trial = trials.drop_duplicates("trial_id")
    return ReportSummary(
        experiment=experiment, version=int(record.iloc[0]["version"]), trials=len(per_trial),
        finished=int((per_trial["status"] == "finished").sum()), figures=len(SECTIONS),
        bytes=len(text.encode("utf-8")),
    )


def render_report(trials: pd.DataFrame, epochs: pd.DataFrame, experiment: dict[str, Any], *,
                  where: str, curve_trials: list[int] | None = None,
                  generated: datetime | None = None) -> str:
    """The whole HTML document for one experiment's trials (and the chosen trials' epochs)."""
    name = str(experiment["experiment"])
    version = int(experiment["version"])
    when = (generated or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC")
    candidates = analysis.by_candidate(trials)
    drawn = figures.all_figures(trials, epochs, curve_trials=curve_trials or ())
    per_trial = trials.drop_duplicates("trial_id") if not trials.empty else trials
    counts = per_trial["status"].value_counts() if not per_trial.empty else pd.Series(dtype=int)
    status = ", ".join(f"{int(counts.get(s, 0))} {s}"
                       for s in ("finished", "running", "pending", "failed"))
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(name)}: explorer report</title>", f"<style>{_STYLE}</style></head><body>",
        f"<h1>{_e(name)}</h1>",
        f'<p class="meta">version {version} · {len(per_trial)} trials: {_e(status)} · '
        f"results from {_e(where)} · generated {_e(when)}</p>",
    ]
    if counts.get("finished", 0) == 0:
        parts.append('<p class="warning">No finished trials yet: the charts are empty.</p>')
    parts += ["<section><h2>Summary per space</h2>",
              _table(figures.summary_table(trials, candidates)), "</section>"]
    failed = figures.failed_table(trials)
    if not failed.empty:
        parts += [f"<section><h2>Failed trials ({len(failed)})</h2>", _table(failed),
                  "</section>"]
    first = True
    for key, title in SECTIONS:
        fig = drawn[key]
        parts += [f'<section id="section-{key}"><h2>{_e(title)}</h2>',
                  pio.to_html(fig, full_html=False, include_plotlyjs=first,
                              div_id=f"figure-{key}", default_width="100%",
                              default_height="520px",
                              config={"displaylogo": False, "responsive": True}),
                  "</section>"]
        first = False
    if not candidates.empty:
        table = candidates.sort_values("test_error_mean").assign(
            architecture=figures.arch_labels(candidates.sort_values("test_error_mean")))
        columns = ["space", "architecture", "key", "params", "flops", "test_error_mean",
                   "test_error_std", "seeds", "latency_ms", "train_images_per_sec"]
        parts += ["<section><h2>Candidates (mean over seeds, best first)</h2>",
                  _table(table[columns]), "</section>"]
    spec_text = experiment.get("spec_text")
    if spec_text:
        parts += ["<section><details><summary>The experiment's spec</summary>",
                  f"<pre>{_e(str(spec_text))}</pre></details></section>"]
    parts.append("</body></html>")
    return "\n".join(parts)


def _write_shareable(path: Path, text: str) -> None:
    """Write, with the usual permissions (a temporary file starts as 0600): a report is
    meant to be shared."""
    path.write_text(text, encoding="utf-8")
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _table(frame: pd.DataFrame) -> str:
    shown = frame.copy()
    for column in shown.columns:
        if shown[column].dtype.kind == "f":
            shown[column] = shown[column].map(
                lambda v: "" if v != v else f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.2f}")
    return shown.to_html(index=False, escape=True, border=0, na_rep="")
