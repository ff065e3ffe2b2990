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
their zoom through ``uirevision``).

Links: the view, the experiments, the filters and the views' settings are in the
page's query string (URL_PARAMS names them), read once when a session starts and
written back as the widgets change, so a copied link reproduces the view. Tables
show numbers for people (column_config formats); the CSV download has exact values.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any

import pandas as pd
import streamlit as st

from explorer import analysis, figures, stats
from explorer.compare import (
    DEFAULT_NORMALIZE,
    NORMALIZE_CHOICES,
    CompareError,
    Comparison,
    cardinality_verdicts,
    compare_spaces,
)
from explorer.metrics import SHOWN_STATUSES
from explorer.refine import recorded_sampled_spaces, space_regions
from explorer.store import Reader, StoreError

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


def store_url(argv: Sequence[str]) -> str | None:
    """The --store URL from the script's arguments (nothing else is read from them)."""
    parser = argparse.ArgumentParser(prog="dashboard", add_help=False)
    parser.add_argument("--store", default=None)
    known, _unknown = parser.parse_known_args(list(argv))
    return known.store


# --- cached reads: keyed on the store's data version ---------------------------------------


@st.cache_resource(show_spinner=False)
def open_store(url: str) -> Reader:
    return Reader.open(url)


@st.cache_data(show_spinner=False, max_entries=8)
def load_experiments(url: str, version: int) -> pd.DataFrame:
    return open_store(url).experiments()


@st.cache_data(show_spinner=False, max_entries=8)
def load_trials(url: str, version: int, experiments: tuple[str, ...]) -> pd.DataFrame:
    trials = open_store(url).trials_frame(list(experiments))
    return analysis.with_space_labels(trials)


@st.cache_data(show_spinner=False, max_entries=32)
def select(url: str, version: int, experiments: tuple[str, ...], chosen: Filters
           ) -> pd.DataFrame:
    trials = load_trials(url, version, experiments)
    options = dict(chosen)
    return analysis.filter_trials(
        trials, spaces=options.get("space", ()), statuses=options.get("status", ()),
        seeds=options.get("seed", ()), cardinalities=options.get("cardinality", ()),
        bottleneck_widths=options.get("bottleneck_width", ()), depths=options.get("depths", ()),
    )


@st.cache_data(show_spinner=False, max_entries=16)
def aggregate(url: str, version: int, experiments: tuple[str, ...], seeds: tuple[int, ...],
              statuses: tuple[str, ...]) -> pd.DataFrame:
    trials = analysis.filter_trials(load_trials(url, version, experiments), seeds=seeds,
                                    statuses=statuses)
    return figures.with_hover(analysis.by_candidate(trials))


@st.cache_data(show_spinner=False, max_entries=32)
def load_candidates(url: str, version: int, experiments: tuple[str, ...], chosen: Filters
                    ) -> pd.DataFrame:
    """Mean ± std over seeds per candidate of the selection.

    The architecture filters (space, C, d, depths) pick whole candidates, so
    the means are computed once per choice of seeds and statuses and then
    filtered: changing those filters costs no aggregation.
    """
    options = dict(chosen)
    means = aggregate(url, version, experiments, options.get("seed", ()),
                      options.get("status", ()))
    return analysis.filter_trials(
        means, spaces=options.get("space", ()), cardinalities=options.get("cardinality", ()),
        bottleneck_widths=options.get("bottleneck_width", ()), depths=options.get("depths", ()))


@st.cache_data(show_spinner=False, max_entries=16)
def load_edf(url: str, version: int, experiments: tuple[str, ...], chosen: Filters,
             normalize_by: str | None) -> pd.DataFrame:
    return analysis.edf_table(select(url, version, experiments, chosen),
                              normalize_by=normalize_by)


@st.cache_data(show_spinner=False, max_entries=16)
def load_comparison(url: str, version: int, experiments: tuple[str, ...], chosen: Filters,
                    normalize: str) -> Comparison:
    return compare_spaces(select(url, version, experiments, chosen), normalize=normalize)


@st.cache_data(show_spinner=False, max_entries=16)
def load_regions(url: str, version: int, experiments: tuple[str, ...], chosen: Filters,
                 space: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    return space_regions(select(url, version, experiments, chosen), space)


@st.cache_data(show_spinner=False, max_entries=16)
def load_verdicts(url: str, version: int, experiments: tuple[str, ...], chosen: Filters
                  ) -> list[str]:
    return [v.sentence for v in cardinality_verdicts(select(url, version, experiments, chosen))]


@st.cache_data(show_spinner=False, max_entries=16)
def load_curves(url: str, version: int, experiments: tuple[str, ...], chosen: Filters,
                trial_ids: tuple[int, ...]) -> pd.DataFrame:
    epochs = open_store(url).epochs_frame(trial_ids=trial_ids)
    return analysis.curves(epochs, select(url, version, experiments, chosen))


@st.cache_data(show_spinner=False, max_entries=8)
def trial_csv(url: str, version: int, experiments: tuple[str, ...], chosen: Filters) -> str:
    return analysis.trial_table(select(url, version, experiments, chosen)).to_csv(index=False)


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
    newest = experiments.sort_values("created_at")["experiment"].iloc[-1]
    from_link("experiments", names)
    default = None if "experiments" in st.session_state else [newest]
    chosen = st.sidebar.multiselect("experiments", names, default=default, key="experiments")
    return tuple(chosen)


@st.cache_data(show_spinner=False, max_entries=8)
def filter_options(url: str, version: int, experiments: tuple[str, ...]
                   ) -> dict[str, list[object]]:
    """The values present in each filtered column, sorted."""
    trials = load_trials(url, version, experiments)
    options = {}
    for _key, _label, column in FILTERS:
        values = trials[column].dropna()
        if column == "depths":
            values = values.map(analysis.tuple_label)
        options[column] = sorted(values.unique().tolist(), key=lambda v: (str(type(v)), v))
    return options


def filter_widgets(options: dict[str, list[object]]) -> Filters:
    """Multiselects over the values present; empty means all."""
    chosen = []
    for key, label, column in FILTERS:
        from_link(key, options[column])
        picked = st.sidebar.multiselect(label, options[column], key=key, placeholder="all")
        chosen.append((column, tuple(picked)))
    return tuple(chosen)


def messages(experiments: pd.DataFrame, names: tuple[str, ...], trials: pd.DataFrame) -> None:
    """What has no results yet, and what failed."""
    latest = experiments[experiments["latest"] & experiments["experiment"].isin(names)]
    for row in latest.itertuples(index=False):
        if row.trials == 0:
            st.info(f"Experiment {row.experiment!r} (version {row.version}) has no trials yet; "
                    "this page updates by itself as the sweep records them.")
        elif row.finished == 0:
            st.info(f"Experiment {row.experiment!r} (version {row.version}) has no finished "
                    f"trials yet: {row.pending} pending, {row.running} running, "
                    f"{row.failed} failed. The charts appear as trials finish.")
    failed = analysis.failed_table(trials)
    if not failed.empty:
        st.warning(f"{len(failed)} trial{'s' if len(failed) != 1 else ''} failed; "
                   "their errors are listed below (`explorer run SPEC` again retries them).")
        with st.expander(f"failed trials ({len(failed)})", expanded=len(failed) <= 5):
            st.dataframe(failed, hide_index=True, key="failed_table")


def chart(fig: object, key: str) -> None:
    st.plotly_chart(fig, key=key, config={"displaylogo": False})


def render(url: str | None) -> None:
    """The page, then its state written back into the URL."""
    try:
        page(url)
    finally:
        to_link()


def page(url: str | None) -> None:
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
    messages(experiments, names, selected)
    if selected.empty:
        any_trials = bool(experiments.loc[experiments["latest"]
                                          & experiments["experiment"].isin(names), "trials"].sum())
        st.info("No trials match the filters in the sidebar." if any_trials else
                "No trials recorded for this selection yet.")
        return
    candidates = load_candidates(url, version, names, chosen)
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
                chart(figures.error_vs_cost(candidates, "flops"), "error_vs_flops")
                chart(figures.error_vs_cost(candidates, "params"), "error_vs_params")
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
            table = analysis.trial_table(selected)
            st.dataframe(table, hide_index=True, key="trial_table",
                         column_config=number_formats(table))
            st.download_button(
                "Download CSV", lambda: trial_csv(url, version, names, chosen),
                file_name=f"{'_'.join(names)}-trials.csv", mime="text/csv", key="csv",
                on_click="ignore")


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
    normalize = None if how == "none" else how
    try:
        edf = load_edf(url, version, names, chosen, normalize)
        comparison = load_comparison(url, version, names, chosen, how)
    except (stats.NoCommonComplexity, CompareError):
        # As `explorer compare`: its default falls back to plain EDFs with a notice.
        say = st.info if how == DEFAULT_NORMALIZE else st.warning
        say(f"The spaces shown share no {how} bin, so they cannot be normalised to the "
            "same complexity distribution: showing the plain EDFs (pick fewer spaces "
            "in the sidebar to normalise).")
        normalize, how = None, "none"
        edf = load_edf(url, version, names, chosen, None)
        comparison = load_comparison(url, version, names, chosen, "none")
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
    render(store_url(sys.argv[1:]))
