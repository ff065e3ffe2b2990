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
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

from explorer import analysis, figures, stats
from explorer.compare import (
    TRIAL_COLUMNS,
    Comparison,
    compare_or_plain,
    plan_samples,
    plan_sentence,
)
from explorer.errors import ExplorerError
from explorer.files import atomic_write
from explorer.metrics import SHOWN_STATUSES, Status
from explorer.refine import POPULATION_COLUMNS, recorded_sampled_spaces, space_regions
from explorer.store import Reader

__all__ = [
    "CURVE_TRIALS",
    "SECTIONS",
    "TRIAL_COLUMNS_READ",
    "ProxyFidelity",
    "ReportError",
    "ReportSummary",
    "early_epoch",
    "proxy_from_early_epoch",
    "render_report",
    "write_report",
]

CURVE_TRIALS = 6
_TABLE_ROWS = 500  # a longer table is cut: the report stays small, the export has every row
# The EDFs drawn stay within this of the exact ones (0.2 % of the models, under a pixel of a
# 480-pixel chart), however many models a space has (analysis.screen_grid).
_EDF_TOLERANCE = 0.002
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
# The trials frame's columns the report reads (Reader.trials_frame(columns=...)): the
# comparison's and the good regions', the failed trials' table (its error text, epochs
# and trial key) and the candidates' means over seeds (analysis.by_candidate). Not the
# provenance, timestamps or stored records, which a large experiment's read spends its
# time on.
TRIAL_COLUMNS_READ = tuple(dict.fromkeys((
    *TRIAL_COLUMNS, *POPULATION_COLUMNS, "trial_key", "error", "epochs_completed")))

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { margin-bottom: 0.2em; } .meta { color: #666; margin-top: 0; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
section { margin: 2em 0; } pre { background: #f7f7f7; padding: 1em; overflow-x: auto; }
.warning { background: #fff4e5; border-left: 4px solid #f0a020; padding: 0.5em 1em; }
"""


class ReportError(ExplorerError):
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
    trials = store.trials_frame([experiment], columns=TRIAL_COLUMNS_READ)
    # The means over seeds from the trials already read: cheaper than a second,
    # aggregating read (Reader.candidate_means), and the same frame.
    candidates = analysis.by_candidate(trials)
    curve_ids = analysis.best_trials(trials, CURVE_TRIALS)
    epochs = store.epochs_frame(trial_ids=curve_ids)
    fidelity: ProxyFidelity | None
    if proxy_experiment is not None:
        _latest_record(store, proxy_experiment)
        fidelity = _proxy_from_experiment(
            trials, store.trials_frame([proxy_experiment], columns=TRIAL_COLUMNS_READ),
            proxy_experiment, candidates)
    else:
        # Only the one early epoch of every trial is read, not every epoch.
        early = early_epoch(trials)
        fidelity = None if early is None else proxy_from_early_epoch(
            trials, store.epoch_errors(early[0], [experiment]), candidates)
    text = render_report(trials, epochs, record, where=store.where, curve_trials=curve_ids,
                         proxy=fidelity, candidates=candidates)
    atomic_write(output, lambda tmp: _write_shareable(tmp, text))
    per_trial = trials.drop_duplicates("trial_id")
    return ReportSummary(
        experiment=experiment, version=int(record["version"]), trials=len(per_trial),
        finished=int((per_trial["status"] == Status.FINISHED).sum()),
        # + the compare section's EDFs, + a good-regions chart per sampled space
        figures=len(SECTIONS) + 1 + (fidelity is not None) + len(_region_spaces(record)),
        bytes=len(text.encode("utf-8")),
        proxy=fidelity,
    )


def _latest_record(store: Reader, experiment: str) -> dict[str, Any]:
    experiments = store.experiment_versions()  # no trial counts: a read of one table
    record = experiments[(experiments["experiment"] == experiment) & experiments["latest"]]
    if record.empty:
        raise ReportError(f"no experiment {experiment!r} in the store; "
                          "`explorer status` lists them")
    return dict(record.iloc[0].to_dict())


def _proxy_from_experiment(trials: pd.DataFrame, proxy_trials: pd.DataFrame,
                          proxy_name: str, candidates: pd.DataFrame | None = None
                          ) -> ProxyFidelity:
    """Fidelity of another experiment's errors (a cheaper recipe) to this one's.
    `candidates`: `trials`' means over seeds when already made."""
    table = analysis.proxy_table(analysis.by_candidate(proxy_trials),
                                 _or_means(trials, candidates))
    epochs = analysis.finished(proxy_trials)["epochs_completed"].dropna()
    recipe = f" ({int(epochs.max())} epochs)" if not epochs.empty else ""
    return ProxyFidelity(f"experiment {proxy_name}{recipe}", table, analysis.kendall_tau(table))


def early_epoch(trials: pd.DataFrame) -> tuple[int, int] | None:
    """The epoch a quarter of the way through training and the run's length; None when
    runs are one epoch long."""
    completed = analysis.finished(trials)["epochs_completed"].dropna()
    if completed.empty or int(completed.max()) < 2:
        return None
    total = int(completed.max())
    return max(1, total // 4), total


def proxy_from_early_epoch(trials: pd.DataFrame, epochs: pd.DataFrame,
                           candidates: pd.DataFrame | None = None) -> ProxyFidelity | None:
    """Fidelity of the test error a quarter of the way through training (what an early stop
    such as ASHA would judge by) to the final one; None when runs are one epoch long.
    `epochs` needs that epoch's rows only (Reader.epoch_errors); `candidates`: `trials`'
    means over seeds when already made."""
    found = early_epoch(trials)
    if found is None:
        return None
    early, total = found
    table = analysis.proxy_table(
        analysis.by_candidate(analysis.errors_at_epoch(trials, epochs, early)),
        _or_means(trials, candidates))
    return ProxyFidelity(f"epoch {early} of {total}", table, analysis.kendall_tau(table))


def _or_means(trials: pd.DataFrame, candidates: pd.DataFrame | None) -> pd.DataFrame:
    return analysis.by_candidate(trials) if candidates is None else candidates


def _report_figures(trials: pd.DataFrame, epochs: pd.DataFrame, candidates: pd.DataFrame,
                   curve_trials: Sequence[int] = ()) -> tuple[dict[str, go.Figure],
                                                             dict[str, tuple[int, int]]]:
    """figures.all_figures's charts, each drawn from what a screen shows of it: a
    scatter of more than analysis.SCREEN_SAMPLE_FROM points from its screen sample (the
    Pareto front whole), the EDFs read within _EDF_TOLERANCE. Also, per sampled chart,
    the points drawn and the points there are."""
    sampled: dict[str, tuple[int, int]] = {}

    def shown(key: str, x: str, y: str) -> pd.DataFrame:
        every = candidates.dropna(subset=[x, y]) if not candidates.empty else candidates
        sample = analysis.screen_sample(every, x, y)
        if len(sample) < len(every):
            sampled[key] = (len(sample), len(every))
        # The labels once, for the hover text and the chart's own hover data.
        return _with_short_hover(figures.with_labels(sample))

    chosen = epochs[epochs["trial_id"].isin(list(curve_trials))] if curve_trials else epochs
    drawn = {
        "error_vs_flops": figures.error_vs_cost(
            shown("error_vs_flops", "flops", "test_error_mean"), "flops"),
        "error_vs_params": figures.error_vs_cost(
            shown("error_vs_params", "params", "test_error_mean"), "params"),
        "cardinality_tradeoff": figures.cardinality_tradeoff(
            shown("cardinality_tradeoff", "cardinality", "test_error_mean")),
        "capacity_comparison": figures.capacity_comparison(
            shown("capacity_comparison", "params", "test_error_mean")),
        "error_edf": figures.edf_figure(analysis.edf_table(
            trials, candidates=candidates, tolerance=_EDF_TOLERANCE)),
        "training_curves": figures.training_curves(analysis.curves(chosen, trials)),
        "cost_latency_ms": figures.cost_figure(
            shown("cost_latency_ms", "flops", "latency_ms"), "latency_ms"),
        "cost_train_images_per_sec": figures.cost_figure(
            shown("cost_train_images_per_sec", "flops", "train_images_per_sec"),
            "train_images_per_sec"),
    }
    return drawn, sampled


def _with_short_hover(candidates: pd.DataFrame) -> pd.DataFrame:
    """The candidates with a hover text a report can afford per point (the key shortened
    to 12 characters, as git shortens a hash; the full key is in the export)."""
    if candidates.empty:
        return candidates
    texts = [f"<b>{space}</b><br>{arch}<br>key {str(key)[:12]}<br>test error {mean:.2f} ± "
             f"{std:.2f} % ({seeds} seed{'s' if seeds != 1 else ''})<br>params {params:,.0f}"
             f" · flops {flops:,.0f}"
             for space, arch, key, mean, std, seeds, params, flops in zip(
                 candidates["space"].astype(str),
                 candidates["arch_label"] if "arch_label" in candidates.columns
                 else analysis.arch_labels(candidates),
                 candidates["key"], candidates["test_error_mean"],
                 candidates["test_error_std"], candidates["seeds"],
                 candidates["params"].astype("float64"), candidates["flops"].astype("float64"),
                 strict=True)]
    return candidates.assign(hover=pd.Series(texts, index=candidates.index, dtype=object))


def render_report(trials: pd.DataFrame, epochs: pd.DataFrame, experiment: dict[str, Any], *,
                  where: str, curve_trials: list[int] | None = None,
                  generated: datetime | None = None, proxy: ProxyFidelity | None = None,
                  candidates: pd.DataFrame | None = None) -> str:
    """The whole HTML document for one experiment's trials (and the chosen trials' epochs).

    `candidates`: the trials' means over seeds when already made (Reader.candidate_means).
    """
    name = str(experiment["experiment"])
    version = int(experiment["version"])
    when = (generated or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC")
    if candidates is None:
        candidates = analysis.by_candidate(trials)
    drawn, sampled = _report_figures(trials, epochs, candidates, curve_trials or ())
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
    if counts.get(Status.FINISHED, 0) == 0:
        parts.append('<p class="warning">No finished trials yet: the charts are empty.</p>')
    parts += ["<section><h2>Summary per space</h2>",
              _table(analysis.summary_table(trials, candidates)), "</section>"]
    failed = analysis.failed_table(trials)
    if not failed.empty:
        parts += [f"<section><h2>Failed trials ({len(failed)})</h2>",
                  _table(failed.head(_TABLE_ROWS)), _more(len(failed)), "</section>"]
    first = True
    for key, title in SECTIONS:
        fig = drawn[key]
        note = "" if key not in sampled else (
            f'<p class="meta">{sampled[key][0]:,} of {sampled[key][1]:,} candidates drawn: '
            f"one per {analysis.SCREEN_CELLS[0]}×{analysis.SCREEN_CELLS[1]}th of the chart "
            "per space (points that would overlap on the screen), the Pareto front whole; "
            "every value is in <code>explorer export</code>.</p>")
        parts += [f'<section id="section-{key}"><h2>{_e(title)}</h2>', note,
                  pio.to_html(fig, full_html=False, include_plotlyjs=first,
                              div_id=f"figure-{key}", default_width="100%",
                              default_height="520px",
                              config={"displaylogo": False, "responsive": True}),
                  "</section>"]
        first = False
    parts += _compare_section(trials, candidates)
    parts += _regions_section(trials, _region_spaces(experiment))
    if proxy is not None:
        parts += _proxy_section(proxy)
    if not candidates.empty:
        best = candidates.sort_values("test_error_mean", kind="stable").head(_TABLE_ROWS)
        table = best.assign(architecture=analysis.arch_labels(best))
        columns = ["space", "architecture", "key", "params", "flops", "test_error_mean",
                   "test_error_std", "seeds", "latency_ms", "train_images_per_sec"]
        parts += ["<section><h2>Candidates (mean over seeds, best first)</h2>",
                  _table(table[columns]), _more(len(candidates)), "</section>"]
    spec_text = experiment.get("spec_text")
    if spec_text:
        parts += ["<section><details><summary>The experiment's spec</summary>",
                  f"<pre>{_e(str(spec_text))}</pre></details></section>"]
    parts.append("</body></html>")
    return "\n".join(parts)


def _comparison_for_report(trials: pd.DataFrame,
                          candidates: pd.DataFrame | None = None) -> Comparison:
    """`explorer compare`'s default comparison of every space, with the closed-form plan;
    unnormalised where the spaces share no complexity bin."""
    result, _ = compare_or_plain(trials, candidates=candidates)
    return dataclasses.replace(result, plan=plan_samples(result, trials, simulate=False,
                                                         candidates=candidates))


def _compare_section(trials: pd.DataFrame, candidates: pd.DataFrame) -> list[str]:
    """The spaces as distributions: normalised EDFs with bands, per-space figures, the KS
    table, the verdict on doubling C, and the planner's line."""
    result = _comparison_for_report(trials, candidates)
    by = None if result.normalize == "none" else result.normalize
    fig = figures.edf_figure(analysis.edf_table(trials, normalize_by=by, candidates=candidates,
                                                tolerance=_EDF_TOLERANCE), normalize_by=by)
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


def _region_spaces(experiment: dict[str, Any]) -> list[str]:
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
    listed = table.head(_TABLE_ROWS)
    shown = listed.assign(architecture=analysis.arch_labels(listed)) if not table.empty \
        else table
    columns = ["architecture", "key", "params", "proxy_error", "full_error", "proxy_rank",
               "full_rank"]
    drawn = analysis.screen_sample(table, "proxy_error", "full_error", log_x=False)
    fig = figures.proxy_figure(drawn, proxy.tau, proxy.proxy)
    if len(drawn) < len(table):
        verdict += (f" The chart draws {len(drawn):,} of the {len(table):,} candidates "
                    "(one per cell of the screen, per space).")
    return [f'<section id="section-proxy_fidelity"><h2>Proxy fidelity: {_e(proxy.proxy)} '
            "against the full run</h2>", f"<p>{verdict}</p>",
            pio.to_html(fig, full_html=False, include_plotlyjs=False,
                        div_id="figure-proxy_fidelity", default_width="100%",
                        default_height="480px",
                        config={"displaylogo": False, "responsive": True}),
            _table(shown[[c for c in columns if c in shown.columns]]), _more(len(table)),
            "</section>"]


def _more(total: int) -> str:
    """What a table cut at _TABLE_ROWS rows leaves out, and where it is."""
    if total <= _TABLE_ROWS:
        return ""
    return (f'<p class="meta">The first {_TABLE_ROWS:,} of {total:,} rows; every row is in '
            "<code>explorer export</code>.</p>")


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
