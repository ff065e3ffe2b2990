"""The explorer dashboard (Streamlit): widgets only.

Started by `explorer dashboard`, which runs ``streamlit run dashboard/app.py
-- --store URL``: streamlit runs this file as a script, with ``__name__ ==
"__main__"`` and that argument in ``sys.argv``, and the entry at the bottom,
the only place that reads it, hands the URL to `render`. Data comes from the
results store, opened read-only, and explorer.analysis (selection, tables);
every chart comes from explorer.figures.

Live: store reads are cached on ``Reader.data_version()``, which changes with
every write, and a fragment polls that number every few seconds; when it
changes, the app reruns (the browser page is not reloaded, and charts keep
their zoom through ``uirevision``). A rerun costs what changed: the trials
table is read in full once (only the columns drawn), then only the trials
changed since (`LiveTrials`), and the candidate means are recomputed only for
the candidates those trials belong to (`Means`). Caches are st.cache_resource
with a few entries each: shared, never pickled, flat in memory during a sweep.

Links: the view, the experiments, the filters and the views' settings are in the
page's query string (URL_PARAMS names them), read once when a session starts and
written back as the widgets change, so a copied link reproduces the view. Tables
show numbers for people (column_config formats); the CSV download has exact values.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import pandas as pd
import streamlit as st

from dashboard.live import bin_above, live_trials, newest_experiment, open_store, store_url
from explorer import analysis, figures
from explorer.compare import (
    DEFAULT_NORMALIZE,
    NORMALIZE_CHOICES,
    Comparison,
    cardinality_verdicts,
    compare_or_plain,
)
from explorer.metrics import SHOWN_STATUSES, Status
from explorer.store import StoreError

POLL_SECONDS = 3.0
VIEWS = ("Error vs cost", "Tradeoff", "Training curves", "EDFs", "Measured cost", "Trials")
# Filter widgets: (session key, label, trials column).
FILTERS = (
    ("f_spaces", "spaces", "space"),
    ("f_cardinality", "cardinality C", "cardinality"),
    ("f_bottleneck", "bottleneck width d", "bottleneck_width"),
    ("f_depths", "depths (blocks per stage)", "depths"),
    ("f_status", "status", "status"),
    ("f_seeds", "seeds", "seed"),
)
Filters = tuple[tuple[str, tuple[Any, ...]], ...]
NORMALIZE = NORMALIZE_CHOICES  # `explorer compare --normalize`'s, and its default below
COST_METRICS = ("latency_ms", "train_images_per_sec")
# What a link carries: each shared widget's session key, by its name in the URL.
URL_PARAMS = {
    "view": "view", "experiments": "experiment", "f_spaces": "space", "f_cardinality": "C",
    "f_bottleneck": "d", "f_depths": "depths", "f_status": "status", "f_seeds": "seed",
    "edf_normalize": "normalize", "cost_metric": "measure",
}
SINGLE_VALUED = {"view", "edf_normalize", "cost_metric"}
LINK_KEY = "_link"  # session state: what the page's URL asked for and is not applied yet
# Columns shown with thousands separators; numeric columns named for an error or a
# latency get 2 decimals. Only the display: the data and the CSV keep every digit.
COUNT_COLUMNS = {"params", "flops", "images/s", "train_images_per_sec"}


# --- cached reads: keyed on the store's data version ---------------------------------------
#
# Everything is cached with st.cache_resource: values are shared as they are (read-only, never
# pickled nor copied), and each cache holds a few entries, so memory stays flat however many
# versions a sweep writes. The trials table itself lives in a `LiveTrials` per selection of
# experiments: read once, then only the rows changed since.


@st.cache_resource(show_spinner=False, max_entries=2)
def load_experiments(url: str, version: int) -> pd.DataFrame:
    return open_store(url).experiment_versions()


@st.cache_resource(show_spinner=False, max_entries=2)
def load_trials(url: str, version: int, experiments: tuple[str, ...]) -> pd.DataFrame:
    trials = live_trials(url, experiments).at(open_store(url), experiments, version)
    return analysis.with_space_labels(trials)


@st.cache_resource(show_spinner=False, max_entries=1)
def load_full_trials(url: str, version: int, experiments: tuple[str, ...]) -> pd.DataFrame:
    """Every column (provenance, times): only for the Trials view and its CSV."""
    return analysis.with_space_labels(open_store(url).trials_frame(list(experiments)))


def filtered(trials: pd.DataFrame, chosen: Filters) -> pd.DataFrame:
    options = dict(chosen)
    return analysis.filter_trials(
        trials, spaces=options.get("space", ()), statuses=options.get("status", ()),
        seeds=options.get("seed", ()), cardinalities=options.get("cardinality", ()),
        bottleneck_widths=options.get("bottleneck_width", ()), depths=options.get("depths", ()),
    )


@st.cache_resource(show_spinner=False, max_entries=4)
def select(url: str, version: int, experiments: tuple[str, ...], chosen: Filters
           ) -> pd.DataFrame:
    return filtered(load_trials(url, version, experiments), chosen)


class Means:
    """Candidate means over seeds for one choice of seeds and statuses, kept current like
    the trials: after a refresh only the candidates whose trials changed are recomputed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.version = -1
        self.frame: pd.DataFrame | None = None

    def at(self, url: str, version: int, experiments: tuple[str, ...], seeds: tuple[int, ...],
           statuses: tuple[str, ...], bin_above: int) -> pd.DataFrame:
        with self._lock:
            if self.frame is not None and version <= self.version:
                return self.frame
            trials = load_trials(url, version, experiments)
            previous = self.frame
            keys = None if previous is None else \
                live_trials(url, experiments).changed_keys(self.version)
            if previous is None or keys is None:
                self.frame = candidate_means(trials, seeds, statuses, bin_above=bin_above)
            elif keys:
                part = candidate_means(trials[trials["key"].astype(str).isin(keys)], seeds,
                                       statuses, labels="arch_label" in previous.columns)
                kept = previous[~previous["key"].astype(str).isin(keys)]
                self.frame = pd.concat([kept, part], ignore_index=True) if not part.empty \
                    else kept.reset_index(drop=True)
            self.version = version
            return self.frame


def candidate_means(trials: pd.DataFrame, seeds: tuple[int, ...], statuses: tuple[str, ...],
                    labels: bool | None = None, bin_above: int = figures.BIN_THRESHOLD
                    ) -> pd.DataFrame:
    """analysis.by_candidate of the trials with these seeds and statuses, with hover labels
    (`labels`; by default when no chart bins them: then no chart shows them all)."""
    means = analysis.by_candidate(analysis.filter_trials(trials, seeds=seeds,
                                                         statuses=statuses))
    wanted = len(means) <= bin_above if labels is None else labels
    return figures.with_labels(means) if wanted else means


@st.cache_resource(show_spinner=False, max_entries=4)
def means_for(url: str, experiments: tuple[str, ...], seeds: tuple[int, ...],
              statuses: tuple[str, ...], bin_above: int) -> Means:
    return Means()


def aggregate(url: str, version: int, experiments: tuple[str, ...], seeds: tuple[int, ...],
              statuses: tuple[str, ...], bin_above: int) -> pd.DataFrame:
    return means_for(url, experiments, seeds, statuses, bin_above).at(
        url, version, experiments, seeds, statuses, bin_above)


@st.cache_resource(show_spinner=False, max_entries=8)
def load_candidates(url: str, version: int, experiments: tuple[str, ...], chosen: Filters,
                    bin_above: int = figures.BIN_THRESHOLD) -> pd.DataFrame:
    """Mean ± std over seeds per candidate of the selection.

    The architecture filters (space, C, d, depths) pick whole candidates, so
    the means are computed once per choice of seeds and statuses and then
    filtered: changing those filters costs no aggregation.
    """
    options = dict(chosen)
    means = aggregate(url, version, experiments, options.get("seed", ()),
                      options.get("status", ()), bin_above)
    chosen_means = analysis.filter_trials(
        means, spaces=options.get("space", ()), cardinalities=options.get("cardinality", ()),
        bottleneck_widths=options.get("bottleneck_width", ()), depths=options.get("depths", ()))
    # A filter that leaves few enough to draw one by one: their hover labels, once.
    few = len(chosen_means) <= bin_above
    return figures.with_labels(chosen_means) \
        if few and "arch_label" not in chosen_means.columns else chosen_means


@st.cache_resource(show_spinner=False, max_entries=4)
def load_edf(url: str, version: int, experiments: tuple[str, ...], chosen: Filters,
             normalize_by: str | None) -> pd.DataFrame:
    return analysis.edf_table(select(url, version, experiments, chosen),
                              normalize_by=normalize_by, quantile_grid=True)


@st.cache_resource(show_spinner=False, max_entries=4)
def load_comparison(url: str, version: int, experiments: tuple[str, ...], chosen: Filters,
                    normalize: str) -> tuple[Comparison, str | None]:
    return compare_or_plain(select(url, version, experiments, chosen), normalize=normalize)


@st.cache_resource(show_spinner=False, max_entries=4)
def load_regions(url: str, version: int, experiments: tuple[str, ...], chosen: Filters,
                 space: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    # Every stage's C and d, which the slim table the charts draw from does not carry: a
    # narrow read of the columns refine's population needs, not every column.
    from explorer.refine import POPULATION_COLUMNS, space_regions  # see regions_view

    trials = open_store(url).trials_frame(list(experiments), columns=POPULATION_COLUMNS)
    return space_regions(filtered(trials, chosen), space)


@st.cache_resource(show_spinner=False, max_entries=4)
def load_verdicts(url: str, version: int, experiments: tuple[str, ...], chosen: Filters
                  ) -> list[str]:
    return [v.sentence for v in cardinality_verdicts(select(url, version, experiments, chosen))]


@st.cache_resource(show_spinner=False, max_entries=4)
def load_curves(url: str, version: int, experiments: tuple[str, ...], chosen: Filters,
                trial_ids: tuple[int, ...]) -> pd.DataFrame:
    epochs = open_store(url).epochs_frame(trial_ids=trial_ids)
    return analysis.curves(epochs, select(url, version, experiments, chosen))


@st.cache_resource(show_spinner=False, max_entries=1)
def trial_rows(url: str, version: int, experiments: tuple[str, ...], chosen: Filters
               ) -> pd.DataFrame:
    """The Trials view's table: every column of the selected trials."""
    return analysis.trial_table(filtered(load_full_trials(url, version, experiments), chosen))


def trial_csv(url: str, version: int, experiments: tuple[str, ...], chosen: Filters) -> str:
    return trial_rows(url, version, experiments, chosen).to_csv(index=False)


# --- the view in the URL, numbers for people ------------------------------------------------


def link_wishes() -> dict[str, list[str]]:
    """The shared widgets' values the page's URL asks for, read once per session: later
    reruns keep the widgets' own state."""
    if LINK_KEY not in st.session_state:
        st.session_state[LINK_KEY] = {key: st.query_params.get_all(name)
                                      for key, name in URL_PARAMS.items()
                                      if st.query_params.get_all(name)}
    wishes: dict[str, list[str]] = st.session_state[LINK_KEY]
    return wishes


def from_link(key: str, options: Sequence[Any]) -> None:
    """Start widget `key` from the link's values, matched to its options by their text.

    Called just before the widget is drawn, once its options are known; values the
    options lack are named in one line and left out.
    """
    wanted = link_wishes().pop(key, None)
    if wanted is None:
        return
    by_text = {str(option): option for option in options}
    picked = [by_text[value] for value in wanted if value in by_text]
    unknown = [value for value in wanted if value not in by_text]
    if unknown:
        st.sidebar.warning(f"The link's {URL_PARAMS[key]}={', '.join(unknown)} is not in "
                           "this selection; left out.")
    if picked:
        st.session_state[key] = picked[-1] if key in SINGLE_VALUED else picked


def to_link() -> None:
    """Write the shared widgets' state into the URL, so that a copied link reproduces the
    view; link values not applied yet (their widget is not drawn) stay in it."""
    wanted = {URL_PARAMS[key]: values for key, values in link_wishes().items()}
    for key, name in URL_PARAMS.items():
        value = st.session_state.get(key)
        if value is None or (key not in SINGLE_VALUED and not value):
            continue
        wanted[name] = [str(v) for v in ([value] if key in SINGLE_VALUED else value)]
    now = {name: st.query_params.get_all(name) for name in st.query_params}
    if now != wanted:
        st.query_params.from_dict(wanted)


def number_formats(table: pd.DataFrame) -> dict[str, Any]:
    """column_config for `table`: errors and latencies to 2 decimals, counts with thousands
    separators (in the reader's locale)."""
    formats: dict[str, Any] = {}
    for column in table.columns:
        values = table[column]
        if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            continue
        name = str(column)
        if name in COUNT_COLUMNS:
            formats[name] = st.column_config.NumberColumn(format="localized", step=1)
        elif "error" in name or "latency" in name:
            formats[name] = st.column_config.NumberColumn(format="%.2f")
    return formats


# --- widgets --------------------------------------------------------------------------------


@st.fragment(run_every=POLL_SECONDS)
def live(url: str, shown: int) -> None:
    """Poll the data version; rerun the app when the sweep wrote something."""
    try:
        now = open_store(url).data_version()
    except Exception:  # a transient read error: try again at the next poll
        return
    if now != shown:
        st.rerun(scope="app")
    st.caption(f"live: data version {now}, checked {time.strftime('%H:%M:%S')}")


def sidebar(experiments: pd.DataFrame) -> tuple[str, ...]:
    names = experiments["experiment"].drop_duplicates().tolist()
    newest = newest_experiment(experiments)
    from_link("experiments", names)
    default = None if "experiments" in st.session_state else [newest]
    chosen = st.sidebar.multiselect("experiments", names, default=default, key="experiments")
    return tuple(chosen)


@st.cache_resource(show_spinner=False, max_entries=2)
def filter_options(url: str, version: int, experiments: tuple[str, ...]
                   ) -> dict[str, list[object]]:
    """The values present in each filtered column, sorted."""
    return options_for(url, experiments).at(url, version, experiments)


def options_of(trials: pd.DataFrame) -> dict[str, list[object]]:
    """The values present in each filtered column of `trials`, sorted."""
    options = {}
    for _key, _label, column in FILTERS:
        values = trials[column].dropna().unique().tolist()  # few distinct, many rows
        if column == "depths":
            values = list({analysis.tuple_label(v) for v in values})
        options[column] = _sorted(values)
    return options


def _sorted(values: Any) -> list[object]:
    return sorted(values, key=lambda v: (str(type(v)), v))


class Options:
    """The filters' values, kept current like the candidate means: after a refresh only the
    changed trials' values are added. A trial keeps its architecture and seed, so only a
    full read (None from `changed_keys`) can take a value away; statuses change, so they
    are counted again over every trial (three distinct values: cheap)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.version = -1
        self.values: dict[str, list[object]] | None = None

    def at(self, url: str, version: int, experiments: tuple[str, ...]
           ) -> dict[str, list[object]]:
        with self._lock:
            if self.values is not None and version <= self.version:
                return self.values
            trials = load_trials(url, version, experiments)
            keys = None if self.values is None else \
                live_trials(url, experiments).changed_keys(self.version)
            if self.values is None or keys is None:
                self.values = options_of(trials)
            else:
                added = options_of(trials[trials["key"].astype(str).isin(keys)])
                self.values = {column: _sorted(set(values) | set(added[column]))
                               for column, values in self.values.items()}
                self.values["status"] = _sorted(trials["status"].dropna().unique().tolist())
            self.version = version
            return self.values


@st.cache_resource(show_spinner=False, max_entries=4)
def options_for(url: str, experiments: tuple[str, ...]) -> Options:
    return Options()


def filter_widgets(options: dict[str, list[object]]) -> Filters:
    """Multiselects over the values present; empty means all."""
    chosen = []
    for key, label, column in FILTERS:
        from_link(key, options[column])
        picked = st.sidebar.multiselect(label, options[column], key=key, placeholder="all")
        chosen.append((column, tuple(picked)))
    return tuple(chosen)


@st.cache_resource(show_spinner=False, max_entries=2)
def status_counts(url: str, version: int, experiments: tuple[str, ...]
                  ) -> dict[str, dict[str, int]]:
    """Per experiment, its trials by status (a trial in several spaces counted once)."""
    per_trial = load_trials(url, version, experiments).drop_duplicates("trial_id")
    counts = per_trial.groupby(["experiment", "status"]).size()
    return {str(name): {str(status): int(n) for status, n in part.droplevel(0).items()}
            for name, part in counts.groupby(level=0)}


def messages(experiments: pd.DataFrame, names: tuple[str, ...], counts: dict[str, dict[str, int]],
             trials: pd.DataFrame) -> None:
    """What has no results yet (`counts`: status_counts of every trial), and what failed."""
    latest = experiments[experiments["latest"] & experiments["experiment"].isin(names)]
    for row in latest.itertuples(index=False):
        have = counts.get(str(row.experiment), {})
        if not have:
            st.info(f"Experiment {row.experiment!r} (version {row.version}) has no trials yet; "
                    "this page updates by itself as the sweep records them.")
        elif have.get(Status.FINISHED, 0) == 0:
            waiting = ", ".join(f"{have.get(status, 0)} {status}" for status in
                                (Status.PENDING, Status.RUNNING, Status.FAILED))
            st.info(f"Experiment {row.experiment!r} (version {row.version}) has no finished "
                    f"trials yet: {waiting}. The charts appear as trials finish.")
    failed = trials.loc[trials["status"] == Status.FAILED, "trial_id"].nunique() \
        if not trials.empty else 0
    if failed:
        st.warning(f"{failed} trial{'s' if failed != 1 else ''} failed; "
                   "their errors are listed below (`explorer run SPEC` again retries them).")
        # Built and sent only while open: at 100,000 trials a few thousand failed ones
        # are a 0.3 MB table that a closed expander would still send on every rerun.
        with st.expander(f"failed trials ({failed})", expanded=failed <= 5,
                         key="failed_trials", on_change="rerun") as box:
            if box.open:
                st.dataframe(analysis.failed_table(trials), hide_index=True,
                             key="failed_table")


# WebGL charts draw one canvas pixel per CSS pixel. plotly's default, 2, draws four times
# the pixels: sharper points on a high-density screen, but where the browser renders WebGL
# without a GPU, 0.46 s instead of 0.25 s to draw 6,000 candidates (headless Chromium).
CHART_CONFIG: Mapping[str, object] = MappingProxyType({"displaylogo": False,
                                                     "plotGlPixelRatio": 1})


def chart(fig: object, key: str) -> None:
    st.plotly_chart(fig, key=key, config=dict(CHART_CONFIG))


def render(url: str | None, bin_above: int | None = None) -> None:
    """The page, then its state written back into the URL. Above `bin_above` candidates
    (default figures.BIN_THRESHOLD) error vs cost draws density bins."""
    try:
        page(url, figures.BIN_THRESHOLD if bin_above is None else bin_above)
    finally:
        to_link()


def page(url: str | None, bin_above: int) -> None:
    st.set_page_config(page_title="explorer", layout="wide")
    st.title("explorer: ResNeXt design spaces")
    if not url:
        st.error("No results store given: start the dashboard with `explorer dashboard`.")
        return
    try:
        store = open_store(url)
        version = store.data_version()
    except StoreError as problem:
        st.error(str(problem))
        return
    experiments = load_experiments(url, version)
    st.caption(f"results: {store.where} (read-only), data version {version}")
    if experiments.empty:
        st.info(f"No experiments in {store.where} yet: run `explorer run SPEC`. "
                "This page updates by itself as soon as the sweep records one.")
        live(url, version)
        return
    names = sidebar(experiments)
    if st.sidebar.toggle("live updates", value=True, key="live"):
        live(url, version)
    if not names:
        st.info("Pick one or more experiments in the sidebar.")
        return
    chosen = filter_widgets(filter_options(url, version, names))
    selected = select(url, version, names, chosen)
    # The notices take their place here but are written after the charts, so that the
    # first chart reaches the browser before the failed-trials table is built.
    notices = st.container()
    if selected.empty:
        counts = status_counts(url, version, names)
        with notices:
            messages(experiments, names, counts, selected)
        st.info("No trials match the filters in the sidebar." if counts else
                "No trials recorded for this selection yet.")
        return
    candidates = load_candidates(url, version, names, chosen, bin_above)
    counts = selected.drop_duplicates("trial_id")["status"].value_counts()
    st.caption(" · ".join(f"{int(counts.get(s, 0))} {s}"
                          for s in SHOWN_STATUSES)
               + f" · {len(candidates)} candidate means (over seeds)")
    from_link("view", VIEWS)
    tabs = st.tabs(list(VIEWS), on_change="rerun", key="view")
    views = dict(zip(VIEWS, tabs, strict=True))
    nothing = "No finished trials in this selection yet."
    with views["Error vs cost"]:
        if views["Error vs cost"].open:
            if candidates.empty:
                st.info(nothing)
            else:
                for cost in ("flops", "params"):
                    error_cost_view(url, version, names, chosen, cost, bin_above)
    with views["Tradeoff"]:
        if views["Tradeoff"].open:
            tradeoff_view(candidates, nothing, load_verdicts(url, version, names, chosen))
    with views["Training curves"]:
        if views["Training curves"].open:
            curves_view(url, version, names, chosen, selected)
    with views["EDFs"]:
        if views["EDFs"].open:
            edf_view(url, version, names, chosen, candidates, nothing)
    with views["Measured cost"]:
        if views["Measured cost"].open:
            cost_view(candidates, nothing)
    with views["Trials"]:
        if views["Trials"].open:
            table = trial_rows(url, version, names, chosen)
            st.dataframe(table, hide_index=True, key="trial_table",
                         column_config=number_formats(table))
            st.download_button(
                "Download CSV", lambda: trial_csv(url, version, names, chosen),
                file_name=f"{'_'.join(names)}-trials.csv", mime="text/csv", key="csv",
                on_click="ignore")
    with notices:
        messages(experiments, names, status_counts(url, version, names), selected)


# Session state: per cost axis, the region (cost range, error range) box-selected in its
# error-vs-cost chart, drawn alone until "show every candidate".
REGION_KEY = "_region"
APPLIED_KEY = "_region_applied"  # per chart key, the box last turned into a region
Region = tuple[tuple[float, float], tuple[float, float]]


def error_cost_view(url: str, version: int, names: tuple[str, ...], chosen: Filters,
                    cost: str, bin_above: int) -> None:
    """Error vs `cost` of the selection's candidates: density bins above `bin_above`
    candidates, where a box selected in the chart (a region of cost and error) is drawn
    again with its own candidates, exactly once there are `bin_above` or fewer of them."""
    name = f"error_vs_{cost}"
    region: Region | None = st.session_state.get(REGION_KEY, {}).get(cost)
    fig, shown, total = cost_figure(url, version, names, chosen, bin_above, cost, region)
    if region is not None:
        (low, high), (best, worst) = region
        st.caption(f"{shown:,} of {total:,} candidates: {cost} {low:,.3g} to "
                   f"{high:,.3g}, test error {best:.2f} to {worst:.2f} %")
        st.button("show every candidate", key=f"all_{cost}", on_click=forget_region,
                  args=(cost,))
    key = name if region is None else f"{name}_region"
    if shown > bin_above:  # bins: a box selected draws the candidates in it
        st.caption("Select a box in the chart (box select, top right) to see the candidates "
                   "in it one by one.")
        st.plotly_chart(fig, key=key, config=dict(CHART_CONFIG), on_select=lambda: None,
                        selection_mode="box")
        box = selected_box(st.session_state.get(key))
        applied = st.session_state.setdefault(APPLIED_KEY, {})
        if box is not None and box != applied.get(key):  # a new box, not one shown before
            applied[key] = box
            st.session_state.setdefault(REGION_KEY, {})[cost] = box
            st.rerun()
    else:
        chart(fig, key)


@st.cache_resource(show_spinner=False, max_entries=8)
def cost_figure(url: str, version: int, names: tuple[str, ...], chosen: Filters,
                bin_above: int, cost: str, region: Region | None) -> tuple[object, int, int]:
    """Error vs `cost` of the selection's candidates (those in `region`, if one), how many
    it shows and how many there are. Cached on the data version and the filters, like the
    candidates: a rerun that changes neither (another tab, a widget elsewhere, a filter
    picked back) reuses the figure instead of drawing it again."""
    candidates = load_candidates(url, version, names, chosen, bin_above)
    shown = candidates if region is None else in_region(candidates, cost, region)
    if region is not None and len(shown) <= bin_above and "arch_label" not in shown.columns:
        shown = figures.with_labels(shown)
    return figures.error_vs_cost(shown, cost, bin_above=bin_above), len(shown), \
        len(candidates)


def selected_box(event: Any) -> Region | None:
    """The last box of a chart's selection event: (x range, y range), in data units."""
    try:
        box = event["selection"]["box"][-1]
        xs, ys = [float(v) for v in box["x"]], [float(v) for v in box["y"]]
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    return (min(xs), max(xs)), (min(ys), max(ys))


def in_region(candidates: pd.DataFrame, cost: str, region: Region) -> pd.DataFrame:
    (low, high), (best, worst) = region
    x = pd.to_numeric(candidates[cost], errors="coerce").astype("float64")
    y = candidates["test_error_mean"].astype("float64")
    return candidates[x.between(low, high) & y.between(best, worst)]


def forget_region(cost: str) -> None:
    st.session_state.get(REGION_KEY, {}).pop(cost, None)


def tradeoff_view(candidates: pd.DataFrame, nothing: str, verdicts: Sequence[str] = ()
                  ) -> None:
    if candidates.empty:
        st.info(nothing)
        return
    kinds = analysis.space_kinds(candidates)
    varying = [space for space, kind in kinds.items() if "cardinality" in kind]
    for sentence in verdicts:  # the paper's question, answered in one sentence per space
        st.info(f"Verdict on doubling C: {sentence}")
    if varying and not verdicts:
        st.caption("No space here trades d for C at preserved complexity, so there is no "
                   "verdict on doubling C (`explorer compare` explains the test).")
    if varying:
        chart(figures.cardinality_tradeoff(candidates), "cardinality_tradeoff")
        table = analysis.tradeoff(candidates[candidates["space"].astype(str).isin(varying)])
        shown = table[["space", "setting", "params", "flops", "test_error_mean",
                       "test_error_std", "seeds"]]
        st.dataframe(shown, hide_index=True, key="tradeoff_table",
                     column_config=number_formats(shown))
    else:
        st.info("No space in this selection varies cardinality: the error-vs-C chart needs one "
                "(e.g. `axes: {cardinality: [1, 2, 4, 8, 32]}` with `solve`).")
    chart(figures.capacity_comparison(candidates), "capacity_comparison")


def curves_view(url: str, version: int, names: tuple[str, ...], chosen: Filters,
                selected: pd.DataFrame) -> None:
    per_trial = selected.drop_duplicates("trial_id")
    per_trial = per_trial[per_trial["epochs_completed"].fillna(0) > 0]
    if per_trial.empty:
        st.info("No trial in this selection has finished an epoch yet.")
        return
    labels = dict(zip(per_trial["trial_id"].astype(int),
                      analysis.arch_labels(per_trial) + " seed " + per_trial["seed"].astype(str)
                      + " (" + per_trial["status"].astype(str) + ")", strict=True))
    default = [t for t in analysis.best_trials(per_trial) if t in labels]
    picked = st.multiselect("trials", list(labels), default=default, key="curve_trials",
                            format_func=lambda t: f"#{t} {labels.get(t, '')}",
                            help="Default: the running trials, then the best finished ones.")
    if not picked:
        st.info("Pick trials above to see their curves.")
        return
    curves = load_curves(url, version, names, chosen, tuple(sorted(int(t) for t in picked)))
    chart(figures.training_curves(curves), "training_curves")


def edf_view(url: str, version: int, names: tuple[str, ...], chosen: Filters,
             candidates: pd.DataFrame, nothing: str) -> None:
    if candidates.empty:
        st.info(nothing)
        return
    from_link("edf_normalize", NORMALIZE)
    # Seeded in the state, not by index: a link's value set there must not meet a default.
    st.session_state.setdefault("edf_normalize", DEFAULT_NORMALIZE)
    how = st.radio("normalise complexity", NORMALIZE, horizontal=True,
                   key="edf_normalize",
                   help="Weight models so that each space's complexity distribution is flat "
                        "(Radosavovic et al. 2019): compares spaces at equal complexity.")
    comparison, note = load_comparison(url, version, names, chosen, how)
    if note is not None:
        # As `explorer compare`: its default falls back to plain EDFs with a notice.
        say = st.info if how == DEFAULT_NORMALIZE else st.warning
        say(f"The spaces shown share no {how} bin, so they cannot be normalised to the "
            "same complexity distribution: showing the plain EDFs (pick fewer spaces "
            "in the sidebar to normalise).")
    normalize = None if comparison.normalize == "none" else comparison.normalize
    edf = load_edf(url, version, names, chosen, normalize)
    chart(figures.edf_figure(edf, normalize_by=normalize), "error_edf")
    pairs = pd.DataFrame([{"a": p.a, "b": p.b, "KS statistic": p.ks_statistic,
                           "p-value": p.p_value, "n a": p.n_a, "n b": p.n_b}
                          for p in comparison.pairs])
    if not pairs.empty:
        st.caption("Two-sample Kolmogorov–Smirnov tests between the spaces' EDFs"
                   + (" (weighted; p-values from Kish effective sizes)" if normalize else
                      " (scipy.stats.ks_2samp)") + "; the same as `explorer compare`.")
        st.dataframe(pairs, hide_index=True, key="ks_table")
    regions_view(url, version, names, chosen, candidates)


def regions_view(url: str, version: int, names: tuple[str, ...], chosen: Filters,
                 candidates: pd.DataFrame) -> None:
    """The sampled spaces' good regions, as `explorer refine` finds them."""
    # Imported here, not with the page: refine brings the spec's pydantic models (0.2 s),
    # which only this view needs, and a new server's first run would wait for them
    # before its first chart.
    from explorer.refine import recorded_sampled_spaces

    experiments = load_experiments(url, version)
    records = experiments[experiments["latest"] & experiments["experiment"].isin(names)]
    shown = set(candidates["space"].astype(str))
    spaces = sorted({s for text in records["spec_text"].astype(str)
                     for s in recorded_sampled_spaces(text) if s in shown})
    if not spaces:
        return
    st.subheader("Good regions (Radosavovic et al. 2020)")
    space = st.selectbox("sampled space", spaces, key="regions_space")
    points, bands = load_regions(url, version, names, chosen, space)
    chart(figures.good_regions_figure(points, bands, title=f"Good regions of {space}"),
          "good_regions")
    st.caption("Each model's value against its error, per parameter and stage; shaded: the 95% "
               "interval of the best model's value over 2,000 bootstrap draws of a quarter of "
               "the models; the same as `explorer refine`, which also proposes constraints.")


def cost_view(candidates: pd.DataFrame, nothing: str) -> None:
    if candidates.empty:
        st.info(nothing)
        return
    from_link("cost_metric", COST_METRICS)
    metric = st.radio("measure", COST_METRICS, horizontal=True,
                      key="cost_metric", format_func=figures.COST_LABELS.__getitem__)
    if candidates[metric].notna().any():
        chart(figures.cost_figure(candidates, metric), f"cost_{metric}")
    else:
        st.info(f"No {figures.COST_LABELS[metric]} measured for this selection yet "
                "(`explorer cost SPEC` measures latency; trials report their throughput).")


if __name__ == "__main__":  # how streamlit runs this file, on every rerun
    render(store_url(sys.argv[1:]), bin_above(sys.argv[1:]))
