"""`explorer report`: an experiment's charts and tables as one standalone HTML file.

The figures are the dashboard's (explorer.figures), drawn from the store's
frames through explorer.analysis, which also makes the tables. plotly.js is
embedded inline once, so the file opens offline and loads nothing from
anywhere; every text from the store is HTML-escaped. The file is written atomically.
"""

from __future__ import annotations

import dataclasses
import html
import math
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.io as pio

from explorer import analysis, figures, stats
from explorer.compare import (
    DEFAULT_NORMALIZE,
    CompareError,
    Comparison,
    compare_spaces,
    plan_samples,
    plan_sentence,
)
from explorer.files import atomic_write
from explorer.metrics import SHOWN_STATUSES
from explorer.refine import recorded_sampled_spaces, space_regions
from explorer.store import Reader

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
class ProxyFidelity:
    """The same candidates ranked by a cheap proxy and by the full run (see analysis)."""

    proxy: str          # what the proxy was, in words: "epoch 2 of 8", "experiment x (3 epochs)"
    table: pd.DataFrame
    tau: float


@dataclass(frozen=True)
class ReportSummary:
    experiment: str
    version: int
    trials: int
    finished: int
    figures: int
    bytes: int
    proxy: ProxyFidelity | None = None


def write_report(store: Reader, experiment: str, output: str | Path, *,
                 proxy_experiment: str | None = None) -> ReportSummary:
    """Read `experiment` (its latest version) from a store and write the report to `output`.

    Proxy fidelity compares this experiment's candidates with the same candidates in
    `proxy_experiment` (e.g. the same spec with fewer epochs) or, without one, with
    this experiment's own test errors a quarter of the way through training.
    """
    record = _latest_record(store, experiment)
    trials = store.trials_frame([experiment])
    curve_ids = analysis.best_trials(trials, CURVE_TRIALS)
    epochs = store.epochs_frame(trial_ids=curve_ids)
    fidelity: ProxyFidelity | None
    if proxy_experiment is not None:
        _latest_record(store, proxy_experiment)
        fidelity = proxy_from_experiment(trials, store.trials_frame([proxy_experiment]),
                                         proxy_experiment)
    else:
        done = analysis.finished(trials)
        fidelity = proxy_from_early_epoch(
            trials, store.epochs_frame(trial_ids=done["trial_id"].unique().tolist()))
    text = render_report(trials, epochs, record, where=store.where, curve_trials=curve_ids,
                         proxy=fidelity)
    atomic_write(output, lambda tmp: _write_shareable(tmp, text))
    per_trial = trials.drop_duplicates("trial_id")
    return ReportSummary(
        experiment=experiment, version=int(record["version"]), trials=len(per_trial),
        finished=int((per_trial["status"] == "finished").sum()),
        # + the compare section's EDFs, + a good-regions chart per sampled space
        figures=len(SECTIONS) + 1 + (fidelity is not None) + len(region_spaces(record)),
        bytes=len(text.encode("utf-8")),
        proxy=fidelity,
    )


def _latest_record(store: Reader, experiment: str) -> dict[str, Any]:
    experiments = store.experiments()
    record = experiments[(experiments["experiment"] == experiment) & experiments["latest"]]
    if record.empty:
        raise ReportError(f"no experiment {experiment!r} in the store; "
                          "`explorer status` lists them")
    return dict(record.iloc[0].to_dict())


def proxy_from_experiment(trials: pd.DataFrame, proxy_trials: pd.DataFrame,
                          proxy_name: str) -> ProxyFidelity:
    """Fidelity of another experiment's errors (a cheaper recipe) to this one's."""
    table = analysis.proxy_table(analysis.by_candidate(proxy_trials),
                                 analysis.by_candidate(trials))
    epochs = analysis.finished(proxy_trials)["epochs_completed"].dropna()
    recipe = f" ({int(epochs.max())} epochs)" if not epochs.empty else ""
    return ProxyFidelity(f"experiment {proxy_name}{recipe}", table, analysis.kendall_tau(table))


def proxy_from_early_epoch(trials: pd.DataFrame, epochs: pd.DataFrame) -> ProxyFidelity | None:
    """Fidelity of the test error a quarter of the way through training (what an early stop
    such as ASHA would judge by) to the final one; None when runs are one epoch long."""
    completed = analysis.finished(trials)["epochs_completed"].dropna()
    if completed.empty or int(completed.max()) < 2:
        return None
    total = int(completed.max())
    early = max(1, total // 4)
    table = analysis.proxy_table(
        analysis.by_candidate(analysis.errors_at_epoch(trials, epochs, early)),
        analysis.by_candidate(trials))
    return ProxyFidelity(f"epoch {early} of {total}", table, analysis.kendall_tau(table))


def render_report(trials: pd.DataFrame, epochs: pd.DataFrame, experiment: dict[str, Any], *,
                  where: str, curve_trials: list[int] | None = None,
                  generated: datetime | None = None, proxy: ProxyFidelity | None = None) -> str:
    """The whole HTML document for one experiment's trials (and the chosen trials' epochs)."""
    name = str(experiment["experiment"])
    version = int(experiment["version"])
    when = (generated or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC")
    candidates = analysis.by_candidate(trials)
    drawn = figures.all_figures(trials, epochs, curve_trials=curve_trials or ())
    per_trial = trials.drop_duplicates("trial_id") if not trials.empty else trials
    counts = per_trial["status"].value_counts() if not per_trial.empty else pd.Series(dtype=int)
    status = ", ".join(f"{int(counts.get(s, 0))} {s}"
                       for s in SHOWN_STATUSES)
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
              _table(analysis.summary_table(trials, candidates)), "</section>"]
    failed = analysis.failed_table(trials)
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
    parts += _compare_section(trials)
    parts += _regions_section(trials, region_spaces(experiment))
    if proxy is not None:
        parts += _proxy_section(proxy)
    if not candidates.empty:
        table = candidates.sort_values("test_error_mean").assign(
            architecture=analysis.arch_labels(candidates.sort_values("test_error_mean")))
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


def comparison_for_report(trials: pd.DataFrame) -> Comparison:
    """`explorer compare`'s default comparison of every space, with the closed-form plan;
    unnormalised where the spaces share no complexity bin."""
    try:
        result = compare_spaces(trials, normalize=DEFAULT_NORMALIZE)
    except CompareError:
        result = compare_spaces(trials, normalize="none")
    return dataclasses.replace(result, plan=plan_samples(result, trials, simulate=False))


def _compare_section(trials: pd.DataFrame) -> list[str]:
    """The spaces as distributions: normalised EDFs with bands, per-space figures, the KS
    table, the verdict on doubling C, and the planner's line."""
    result = comparison_for_report(trials)
    by = None if result.normalize == "none" else result.normalize
    fig = figures.edf_figure(analysis.edf_table(trials, normalize_by=by), normalize_by=by)
    spaces = pd.DataFrame([{
        "space": s.name, "n": s.n, "min": s.min, "mean": s.mean,
        "weighted mean": s.weighted_mean, "n effective": s.n_effective,
        **{f"EDF {level:.0%}": v for level, v in zip(stats.QUANTILES, s.quantiles,
                                                       strict=True)},
    } for s in result.spaces])
    pairs = pd.DataFrame([{"a": p.a, "b": p.b, "KS statistic": p.ks_statistic,
                           "p-value": "" if p.p_value != p.p_value else f"{p.p_value:.3g}",
                           "n a": p.n_a, "n b": p.n_b}
                          for p in result.pairs])
    how = (f"complexity-normalised by {result.normalize} over {result.bins} log-spaced bins "
           "(every space weighted to the same, uniform distribution over the bins they share; "
           "p-values from Kish effective sizes)" if by else
           "not normalised (the spaces share no complexity bin); p-values are scipy's ks_2samp")
    verdicts = [f"<li>{_e(v.sentence)}</li>" for v in result.verdicts] or [
        "<li>No space trades d for C at preserved complexity, so there is no verdict on "
        "doubling C.</li>"]
    plan = result.plan
    return ['<section id="section-compare"><h2>Design spaces as distributions '
            "(Radosavovic et al. 2019)</h2>",
            f"<p>Each candidate's mean error over its finished seeds; {_e(how)}. "
            "The same as <code>explorer compare</code>.</p>",
            pio.to_html(fig, full_html=False, include_plotlyjs=False,
                        div_id="figure-compare_edf", default_width="100%",
                        default_height="480px",
                        config={"displaylogo": False, "responsive": True}),
            _table(spaces),
            "<h3>Two-sample Kolmogorov–Smirnov tests</h3>",
            _table(pairs) if not pairs.empty else "<p>One space only: nothing to test.</p>",
            "<h3>The verdict: what doubling C does</h3>", f"<ul>{''.join(verdicts)}</ul>",
            "<h3>Sample size</h3>",
            f"<p>{_e(plan_sentence(plan, result.normalize)) if plan else ''}. "
            f"Rule: {_e(plan.rule) if plan else ''}.</p>", "</section>"]


def region_spaces(experiment: dict[str, Any]) -> list[str]:
    """The experiment's sampled spaces, whose good regions the report draws."""
    return recorded_sampled_spaces(str(experiment.get("spec_text") or ""))


def _regions_section(trials: pd.DataFrame, spaces: list[str]) -> list[str]:
    """Per sampled space, each parameter's good region (`explorer refine`'s bootstrap)."""
    if not spaces:
        return []
    parts = ['<section id="section-good_regions"><h2>Good regions of the sampled spaces '
             "(Radosavovic et al. 2020)</h2>",
             "<p>Per parameter and stage: each finished model's value against its error; "
             "shaded, the 95% interval of the best model's value over 2,000 seeded bootstrap "
             "draws of a quarter of the models; dashed, its median. The same as "
             "<code>explorer refine NAME --space SPACE</code>, which also reads and ranks "
             "constraints and writes the next space's spec.</p>"]
    for space in spaces:
        points, bands = space_regions(trials, space)
        fig = figures.good_regions_figure(points, bands, title=f"Good regions of {space}")
        parts.append(pio.to_html(fig, full_html=False, include_plotlyjs=False,
                                 div_id=f"figure-good_regions-{space}", default_width="100%",
                                 default_height=f"{fig.layout.height or 480}px",
                                 config={"displaylogo": False, "responsive": True}))
    return [*parts, "</section>"]


def _proxy_section(proxy: ProxyFidelity) -> list[str]:
    table = proxy.table
    if table.empty:
        verdict = "No candidate has both a proxy and a full-run error yet."
    else:
        tau = "undefined (fewer than 3 candidates)" if math.isnan(proxy.tau) \
            else f"{proxy.tau:.2f}"
        same = table.sort_values("proxy_error").iloc[0]["key"] == table.iloc[0]["key"]
        verdict = (f"Kendall τ between the ranking by {_e(proxy.proxy)} and by the full run, "
                   f"over {len(table)} candidates (mean over seeds): <b>{_e(tau)}</b> (1: same "
                   "order, 0: unrelated). The proxy's best candidate is "
                   f"{'also' if same else 'not'} the full run's best.")
    shown = table.assign(architecture=analysis.arch_labels(table)) if not table.empty else table
    columns = ["architecture", "key", "params", "proxy_error", "full_error", "proxy_rank",
               "full_rank"]
    fig = figures.proxy_figure(table, proxy.tau, proxy.proxy)
    return [f'<section id="section-proxy_fidelity"><h2>Proxy fidelity: {_e(proxy.proxy)} '
            "against the full run</h2>", f"<p>{verdict}</p>",
            pio.to_html(fig, full_html=False, include_plotlyjs=False,
                        div_id="figure-proxy_fidelity", default_width="100%",
                        default_height="480px",
                        config={"displaylogo": False, "responsive": True}),
            _table(shown[[c for c in columns if c in shown.columns]]), "</section>"]


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
