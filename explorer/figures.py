"""DataFrame -> plotly Figure: every chart of the dashboard and the HTML report.

Pure functions of the frames `explorer.analysis` computes (no streamlit, no
I/O), so each one is unit-tested and the report draws exactly what the
dashboard shows. They only draw: choosing rows, labelling them and tables are
explorer.analysis's. Each figure names itself in ``layout.meta["chart"]`` and
each trace its role in ``trace.meta["role"]`` ("candidates", "pareto",
"legend", ...), so tests (and the browser test, through the DOM) can find the
points of a chart without depending on titles or trace order.

Conventions: errors are percentages (lower is better); cost axes are logarithmic; a
scatter with many points uses WebGL (``scattergl``), and error vs cost's WebGL
points have no error bars (hovering gives the std); hovers are one template per
trace over per-point values (a label and key per point in ``hovertext``, the numbers
in ``customdata``). Above BIN_THRESHOLD candidates, error vs cost draws density bins
(per space, a heatmap of its candidates' counts over one log-cost × error grid) and
the exact Pareto front; a filter that leaves fewer candidates draws every point.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from explorer import analysis

__all__ = [
    "BIN_THRESHOLD",
    "COST_LABELS",
    "WEBGL_THRESHOLD",
    "Shared",
    "Trace",
    "all_figures",
    "capacity_comparison",
    "cardinality_tradeoff",
    "cost_figure",
    "edf_figure",
    "envelope",
    "error_vs_cost",
    "good_regions_figure",
    "points",
    "proxy_figure",
    "training_curves",
    "with_labels",
]

# Above this many points a chart switches to WebGL: SVG slows down past a few thousand.
WEBGL_THRESHOLD = 1500
# Above this many candidates, error vs cost draws density bins (a screen shows no more).
BIN_THRESHOLD = 20_000
# Cells of the bins' grid: across (log cost) and up (error).
_BIN_GRID = (150, 90)
# Longest training curve drawn per trial and split, in points; a longer one is drawn as its
# envelope: the first, lowest, highest and last point of each of _MAX_CURVE_POINTS / 4 buckets.
_MAX_CURVE_POINTS = 200
# What hovering a candidate shows, through one template: its hovertext (`_hover_text`) and
# its customdata (`_hover_numbers`).
_HOVER_TEMPLATE = ("<b>%{fullData.name}</b><br>%{hovertext}<br>"
                   "test error %{customdata[0]:.2f} ± %{customdata[1]:.2f} % "
                   "(seeds: %{customdata[2]})<br>params %{customdata[3]:,.0f}<br>"
                   "flops %{customdata[4]:,.0f}")

_PALETTE = (
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#393b79", "#ad494a", "#637939", "#8c6d31", "#7b4173", "#3182bd",
)
# Symbols WebGL scatters draw as well as SVG ones, one per cardinality (cycled).
_SYMBOLS = ("circle", "square", "diamond", "cross", "x", "triangle-up", "triangle-down",
           "star", "hexagon", "pentagon", "triangle-left", "triangle-right")

COST_LABELS = {
    "flops": "FLOPs (multiply-adds per image)",
    "params": "parameters",
    "latency_ms": "latency (ms, batch 1)",
    "train_images_per_sec": "training throughput (images/s)",
}


# --- colours, symbols, thinning ----------------------------------------------------------


def _colors_for(names: Iterable[object]) -> dict[str, str]:
    """A stable colour per name (sorted), cycling the palette."""
    distinct = names.unique() if isinstance(names, pd.Series) else names  # few, many rows
    return {name: _PALETTE[i % len(_PALETTE)]
            for i, name in enumerate(sorted({str(n) for n in distinct}))}


def _symbols_for(cardinalities: Iterable[Any]) -> dict[int, str]:
    """A marker symbol per cardinality, in increasing order of C."""
    distinct = cardinalities.unique() if isinstance(cardinalities, pd.Series) \
        else cardinalities  # few, many rows
    values = sorted({int(c) for c in distinct if not analysis.missing(c)})
    return {c: _SYMBOLS[i % len(_SYMBOLS)] for i, c in enumerate(values)}


def envelope(frame: pd.DataFrame, x: str, y: str, max_points: int) -> pd.DataFrame:
    """At most about `max_points` rows of `frame` (sorted by `x`) that keep its shape: in
    each of max_points / 4 equal buckets of rows, the first, the lowest, the highest and
    the last. Every row's `y` lies between the lowest and highest kept in its bucket (`y`
must have no NaN)."""
    if len(frame) <= max_points:
        return frame
    ordered = frame.sort_values(x, kind="stable")
    values = ordered[y].to_numpy(dtype=float)
    buckets = max(max_points // 4, 1)
    edges = np.linspace(0, len(ordered), buckets + 1).round().astype(int)
    starts, stops = edges[:-1], edges[1:]
    filled = stops > starts
    starts, stops = starts[filled], stops[filled]
    # Every bucket at once (a chart of many curves has thousands): each bucket's first
    # row holding its lowest and its highest value, as np.argmin / np.argmax find them.
    bucket = np.repeat(np.arange(starts.size), stops - starts)
    keep = [starts, stops - 1]
    for extreme in (np.minimum, np.maximum):
        at = np.flatnonzero(values == extreme.reduceat(values, starts)[bucket])
        keep.append(at[np.unique(bucket[at], return_index=True)[1]])
    return ordered.iloc[np.unique(np.concatenate(keep))]


# --- figures ------------------------------------------------------------------------------
#
# Traces and layouts are plain dicts, assembled with validation off: plotly's validators cost
# ~0.1 s per thousand points, which a live dashboard pays on every rerun. The tests rebuild
# every figure with validation on (go.Figure(fig.to_dict())), so a misspelt property fails
# there.

Trace = dict[str, Any]


def _figure(traces: list[Trace], chart: str, title: str, x: str, y: str, *,
            log_x: bool = False, **layout: Any) -> go.Figure:
    base: dict[str, Any] = {
        "title": {"text": title}, "meta": {"chart": chart}, "uirevision": chart,
        "xaxis": {"title": {"text": x}, "type": "log" if log_x else "linear"},
        "yaxis": {"title": {"text": y}}, "legend": {"itemsizing": "constant"},
        "margin": {"l": 60, "r": 20, "t": 60, "b": 50}, "hovermode": "closest",
    }
    for key, value in layout.items():
        current = base.get(key)
        base[key] = {**current, **value} if isinstance(current, dict) else value
    return go.Figure(data=traces, layout=base, _validate=False)


def _empty_figure(chart: str, message: str) -> go.Figure:
    """A figure with no data and a centred message (what there is to say instead)."""
    return go.Figure(data=[], layout={
        "meta": {"chart": chart}, "xaxis": {"visible": False}, "yaxis": {"visible": False},
        "annotations": [{"text": message, "showarrow": False, "x": 0.5, "y": 0.5,
                         "xref": "paper", "yref": "paper"}],
    }, _validate=False)


def _scatter_type(n: int) -> str:
    return "scattergl" if n > WEBGL_THRESHOLD else "scatter"


def _floats(series: pd.Series) -> np.ndarray:
    return series.astype("float64").to_numpy()


class Shared(list[Any]):
    """A per-point list that is built once and only read: plotly deep-copies a figure's
    data when the figure is made and again when Streamlit serialises it (element by
    element: 0.1 s per copy of 18,000 candidates' hover values); this list hands
    itself out instead. orjson writes it as the list it is."""

    def __deepcopy__(self, memo: dict[int, Any]) -> Shared:
        return self


def _hover_text(part: pd.DataFrame) -> list[str]:
    """Per candidate, the words _HOVER_TEMPLATE shows: its architecture and key. The
    labels come from an "arch_label" column when the frame has one (see `with_labels`)."""
    labels = part["arch_label"] if "arch_label" in part.columns else analysis.arch_labels(part)
    return Shared(f"{label}<br>key {key}" for label, key in
                  zip(map(str, labels), part["key"].astype(str), strict=True))


def _hover_numbers(part: pd.DataFrame) -> np.ndarray:
    """Per candidate, the numbers _HOVER_TEMPLATE shows: error mean and std over seeds,
    seeds, params, flops. One float array, which plotly writes as one typed array,
    where rows of Python values are walked value by value on every serialisation
    (Streamlit serialises each chart on every rerun: 0.1 s for 6,000 candidates)."""
    return np.column_stack([_floats(part["test_error_mean"]), _floats(part["test_error_std"]),
                            _floats(part["seeds"]), _floats(part["params"]),
                            _floats(part["flops"])])


def with_labels(candidates: pd.DataFrame) -> pd.DataFrame:
    """The candidates with their architecture labels computed once (for several charts)."""
    return candidates.assign(arch_label=pd.Series(analysis.arch_labels(candidates).tolist(),
                                                  index=candidates.index, dtype=object))


def _hover(part: pd.DataFrame, extra: str = "") -> dict[str, Any]:
    return {"hovertext": _hover_text(part), "customdata": _hover_numbers(part),
            "hovertemplate": _HOVER_TEMPLATE + extra + "<extra></extra>"}


def error_vs_cost(candidates: pd.DataFrame, cost: str = "flops",
                  bin_above: int | None = None) -> go.Figure:
    """Mean test error ± std over seeds against `cost` (flops or params), log x.

    One trace of points per space (colour), marker symbol by cardinality,
    exactly one point per candidate and space (role "candidates"); the
    Pareto front over all of them (role "pareto"); empty traces for the
    legend of spaces and of symbols (role "legend"). Above `bin_above`
    candidates (default BIN_THRESHOLD), density bins per space (role "bins",
    see `_density_bins`) instead of the points, with the same exact front.
    """
    chart = f"error_vs_{cost}"
    title = f"Test error vs {'FLOPs' if cost == 'flops' else 'parameters'}"
    data = candidates.dropna(subset=[cost, "test_error_mean"]) if not candidates.empty \
        else candidates
    if data.empty:
        return _empty_figure(chart, "no finished trials to plot")
    binned = len(data) > (BIN_THRESHOLD if bin_above is None else bin_above)
    if binned:
        title += (f": {len(data):,} candidates as density bins (filter in the sidebar to "
                  "see each one)")
    kind = _scatter_type(len(data))
    colors = _colors_for(data["space"])
    symbols = {} if binned else _symbols_for(data["cardinality"].dropna())
    grid = _bin_edges(data[cost], data["test_error_mean"]) if binned else None
    traces: list[Trace] = []
    for space, part in data.groupby("space", sort=True):
        group = f"space:{space}"
        if grid is not None:
            traces.append({**_density_bins(part, cost, grid, colors[str(space)]),
                           "name": str(space), "legendgroup": group, "showlegend": False})
        else:
            # Error bars only on an SVG chart: over thousands of WebGL points they hide
            # the points, and draw slower than the points themselves (0.4 s of 1.1 s for
            # 6,000 candidates in headless Chromium); hovering gives the std either way.
            bars = {"error_y": {"type": "data", "array": _floats(part["test_error_std"]),
                                "visible": True, "thickness": 1}} if kind == "scatter" else {}
            traces.append({
                "type": kind, "x": _floats(part[cost]), "y": _floats(part["test_error_mean"]),
                **bars, "mode": "markers", "name": str(space), "legendgroup": group,
                "showlegend": False,
                "marker": {"color": colors[str(space)], "size": 9,
                           "symbol": _symbols(part["cardinality"], symbols),
                           "line": {"width": 0.5, "color": "white"}},
                **_hover(part), "meta": {"role": "candidates"},
            })
        # The space's legend entry: a plain dot in its colour (the points' symbols vary);
        # clicking it hides the space's points (same legend group).
        traces.append({
            "type": "scatter", "x": [None], "y": [None], "mode": "markers", "name": str(space),
            "legendgroup": group, "marker": {"color": colors[str(space)], "size": 9},
            "meta": {"role": "legend"},
        })
    # On plain floats: sorting nullable integers costs ten times more at 100,000 rows.
    front = analysis.pareto_front(pd.DataFrame({cost: _floats(data[cost]), "test_error_mean":
                                                _floats(data["test_error_mean"])}), cost)
    traces.append({
        "type": "scatter", "x": _floats(front[cost]), "y": _floats(front["test_error_mean"]),
        "mode": "lines", "line": {"shape": "hv", "color": "black", "width": 1.5, "dash": "dash"},
        "name": "Pareto front", "hoverinfo": "skip", "meta": {"role": "pareto"},
    })
    for c, symbol in symbols.items():
        traces.append({
            "type": "scatter", "x": [None], "y": [None], "mode": "markers", "name": f"C = {c}",
            "legendgroup": "symbols:cardinality", "legendgrouptitle": {"text": "cardinality"},
            "marker": {"symbol": symbol, "color": "#555", "size": 9}, "meta": {"role": "legend"},
        })
    return _figure(traces, chart, title, COST_LABELS[cost], "test error (%)", log_x=True)


def _symbols(cardinalities: pd.Series, symbols: dict[int, str]) -> list[str]:
    """Each point's marker symbol by its cardinality (circle where it has none); a list,
    which orjson writes as it is (see `_hover_data`)."""
    codes = pd.to_numeric(cardinalities, errors="coerce").astype("float64").to_numpy()
    out = np.full(len(codes), "circle", dtype=object)
    for c, symbol in symbols.items():
        out[codes == c] = symbol
    return Shared(out.tolist())


def _bin_edges(cost: pd.Series, error: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """The bins' grid over all spaces: _BIN_GRID cells, log-spaced in cost."""
    low, high = np.log10(_floats(cost).min()), np.log10(_floats(cost).max())
    # Widened by a hair at both ends, so that the cheapest and dearest candidates lie
    # inside the outer edges after 10 ** log10 (which the heatmap's edges go through).
    return (np.linspace(low - 1e-9, high + 1e-9, _BIN_GRID[0] + 1),
            np.linspace(_floats(error).min(), _floats(error).max() + 1e-9, _BIN_GRID[1] + 1))


def _density_bins(part: pd.DataFrame, cost: str, grid: tuple[np.ndarray, np.ndarray],
                  color: str) -> Trace:
    """The space's candidates counted in the cells of `grid` (log10 cost edges, error
    edges), drawn as a heatmap over the cells it occupies: an empty cell is transparent
    (a gap), an occupied one in the space's colour, paler for fewer candidates on a log
    scale, so that a lone candidate (often the best) still shows; hovering says how many.
    A heatmap is drawn as one image, with no WebGL context and no marker per cell: the
    cheapest trace for a browser (0.5 s against 1.1 s for the same bins as WebGL markers,
    headless Chromium)."""
    x, y = np.log10(_floats(part[cost])), _floats(part["test_error_mean"])
    counts, _, _ = np.histogram2d(y, x, bins=[grid[1], grid[0]])
    rows, columns = np.flatnonzero(counts.any(axis=1)), np.flatnonzero(counts.any(axis=0))
    counts = counts[rows[0]:rows[-1] + 1, columns[0]:columns[-1] + 1]
    most = max(float(counts.max()), 2.0)  # the colour scale's top (a span even for 1s)
    return {
        "type": "heatmap",  # the cells' edges, cropped to those the space occupies
        "x": 10 ** grid[0][columns[0]:columns[-1] + 2], "y": grid[1][rows[0]:rows[-1] + 2],
        "z": np.where(counts > 0, counts, np.nan).astype("float32"),
        "zmin": 1.0, "zmax": most, "showscale": False,
        "colorscale": _log_shades(color, most),
        "opacity": 0.8,  # overlapping spaces stay visible
        "hovertemplate": ("<b>%{fullData.name}</b><br>%{z:,.0f} candidates<br>"
                          "test error about %{y:.2f} %<br>cost about %{x:,.3s}<extra></extra>"),
        "hoverongaps": False,
        "meta": {"role": "bins"},
    }


def _log_shades(color: str, most: float, steps: int = 8) -> list[list[Any]]:
    """A colorscale over counts 1 to `most` that shades by log(count): plotly maps z to
    colour linearly, so the stops sit at counts spaced evenly in log."""
    red, green, blue = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    stops = []
    for share in np.linspace(0.0, 1.0, steps):
        count = most ** share
        stops.append([float((count - 1) / (most - 1)),
                      f"rgba({red},{green},{blue},{0.3 + 0.7 * share:.3f})"])
    return stops


def cardinality_tradeoff(candidates: pd.DataFrame, max_lines: int = 8) -> go.Figure:
    """The paper's Table 3 as a chart: error against cardinality C, each point labelled C×d.

    Only spaces that vary cardinality (at preserved complexity, d shrinks as
    C grows). A line per space and, where a space also varies them, per depths
    and widths (the paper's ResNet-50 and ResNet-101 regimes); a space with
    more than `max_lines` such shapes is drawn as points only.
    """
    chart = "cardinality_tradeoff"
    kinds = analysis.space_kinds(candidates) if not candidates.empty else {}
    chosen = [s for s, k in kinds.items() if "cardinality" in k]
    if not chosen:
        return _empty_figure(chart, "no space of the selection varies cardinality")
    table = analysis.tradeoff(candidates[candidates["space"].astype(str).isin(chosen)])
    table = table.assign(_shape=table["depths"].map(analysis.tuple_label) + " / "
                         + table["widths"].map(analysis.tuple_label))
    colors = _colors_for(chosen)
    traces: list[Trace] = []
    for space, in_space in table.groupby("space", sort=True):
        shapes = in_space["_shape"].nunique()
        groups = in_space.groupby("_shape", sort=True) if shapes <= max_lines \
            else [("", in_space)]
        for shape, part in groups:
            lines = shapes <= max_lines
            many = len(part) > 60
            traces.append({
                "type": _scatter_type(len(part)), "x": _floats(part["cardinality"]),
                "y": _floats(part["test_error_mean"]),
                "error_y": {"type": "data", "array": _floats(part["test_error_std"]),
                            "visible": True},
                "mode": ("lines+" if lines else "") + "markers" + ("" if many else "+text"),
                "text": None if many else part["setting"].tolist(),
                "textposition": "top center",
                "name": f"{space} ({shape})" if lines and shapes > 1 else str(space),
                "line": {"color": colors[str(space)]},
                "marker": {"color": colors[str(space)], "size": 8},
                **_hover(part), "meta": {"role": "tradeoff"},
            })
    ticks = sorted({int(c) for c in table["cardinality"].dropna()})
    return _figure(traces, chart, "Error vs cardinality at preserved complexity (Table 3)",
                   "cardinality C (bottleneck width d annotated)", "test error (%)",
                   log_x=True, xaxis={"tickvals": ticks, "ticktext": [str(t) for t in ticks]})


def capacity_comparison(candidates: pd.DataFrame, max_line_points: int = 60) -> go.Figure:
    """Fig. 7 / Table 4: error against params, a line per space, named by what it increases
    (more cardinality, more width, more depth). A space with more than
    `max_line_points` candidates is drawn as points (a line through them says nothing)."""
    chart = "capacity_comparison"
    data = candidates.dropna(subset=["params", "test_error_mean"]) if not candidates.empty \
        else candidates
    if data.empty:
        return _empty_figure(chart, "no finished trials to plot")
    kinds = analysis.space_kinds(data)
    colors = _colors_for(kinds)
    dash = {"cardinality": "solid", "width": "dash", "depth": "dot"}
    traces: list[Trace] = []
    for space, part in data.groupby("space", sort=True):
        part = part.sort_values(["params", "test_error_mean"])
        kind = kinds[str(space)]
        lines = len(part) <= max_line_points
        traces.append({
            "type": _scatter_type(len(part)), "x": _floats(part["params"]),
            "y": _floats(part["test_error_mean"]),
            "error_y": {"type": "data", "array": _floats(part["test_error_std"]),
                        "visible": True},
            "mode": "lines+markers" if lines else "markers",
            "name": f"{space}: {analysis.kind_label(kind)}",
            "line": {"color": colors[str(space)], "dash": dash.get(kind, "dashdot")},
            "marker": {"color": colors[str(space)], "size": 8},
            **_hover(part), "meta": {"role": "capacity", "kind": kind},
        })
    return _figure(traces, chart, "More cardinality vs more width vs more depth (Fig. 7)",
                   COST_LABELS["params"], "test error (%)", log_x=True)


def training_curves(curves: pd.DataFrame, max_points: int = _MAX_CURVE_POINTS) -> go.Figure:
    """Train (dotted) and test (solid) error against epoch, one colour per trial."""
    chart = "training_curves"
    if curves.empty:
        return _empty_figure(chart, "no epochs recorded for the chosen trials")
    names = {int(t): f"#{int(t)} {label}" for t, label in
             curves.drop_duplicates("trial_id")[["trial_id", "label"]].itertuples(index=False)}
    colors = _colors_for(names.values())
    traces: list[Trace] = []
    for (trial_id, split), part in curves.groupby(["trial_id", "split"], sort=True):
        name = names[int(trial_id)]
        part = envelope(part, "epoch", "error", max_points)
        traces.append({
            "type": "scatter", "x": part["epoch"].to_numpy(), "y": _floats(part["error"]),
            "mode": "lines+markers" if len(part) < 30 else "lines",
            "name": f"{name} {split}", "legendgroup": name,
            "line": {"color": colors[name], "dash": "solid" if split == "test" else "dot"},
            "hovertemplate": f"{name} {split}<br>epoch %{{x}}: %{{y:.2f}} %<extra></extra>",
            "meta": {"role": "curve", "trial_id": int(trial_id), "split": str(split)},
        })
    return _figure(traces, chart, "Training curves (solid: test, dotted: train)", "epoch",
                   "error (%)")


def edf_figure(edf: pd.DataFrame, group: str = "space",
               normalize_by: str | None = None) -> go.Figure:
    """Error EDFs per space with their bootstrap bands (Radosavovic et al. 2019)."""
    chart = "error_edf"
    if edf.empty:
        return _empty_figure(chart, "no finished trials to plot")
    colors = _colors_for(edf[group])
    traces: list[Trace] = []
    for name, part in edf.groupby(group, sort=True):
        color = colors[str(name)]
        x = _floats(part["error"])
        traces.append({
            "type": "scatter", "x": np.concatenate([x, x[::-1]]),
            "y": np.concatenate([_floats(part["high"]), _floats(part["low"])[::-1]]),
            "fill": "toself", "fillcolor": color, "opacity": 0.18, "line": {"width": 0},
            "hoverinfo": "skip", "showlegend": False, "legendgroup": str(name),
            "meta": {"role": "band"},
        })
        traces.append({
            "type": "scatter", "x": x, "y": _floats(part["edf"]), "mode": "lines",
            "line": {"color": color, "shape": "hv"},
            "name": f"{name} (n={int(part['models'].iloc[0])})", "legendgroup": str(name),
            "hovertemplate": "error ≤ %{x:.2f} %: %{y:.0%}<extra>" + str(name) + "</extra>",
            "meta": {"role": "edf"},
        })
    how = f", complexity-normalised by {normalize_by}" if normalize_by else ""
    return _figure(traces, chart, f"Error EDF per space{how} (bands: bootstrap 90%)",
                   "test error (%)", "fraction of models with lower error",
                   yaxis={"range": [0, 1.02]})


def good_regions_figure(points: pd.DataFrame, bands: pd.DataFrame, title: str = "",
                        columns: int = 3, max_points: int = 2000) -> go.Figure:
    """Each parameter's value against the models' error, one panel per parameter and stage,
    the good region's interval shaded and its median dashed (the RegNet paper's figures)."""
    chart = "good_regions"
    if bands.empty:
        return _empty_figure(chart, "no parameter varies between enough finished models")
    panels = bands["panel"].tolist()
    rows = math.ceil(len(panels) / columns)
    gap_x, gap_y = 0.06, 0.5 / max(rows, 1) * 0.3
    traces: list[Trace] = []
    layout: dict[str, Any] = {"showlegend": False, "annotations": [], "shapes": []}
    for i, (panel, band) in enumerate(zip(panels, bands.itertuples(), strict=True)):
        row, col = divmod(i, columns)
        suffix = "" if i == 0 else str(i + 1)
        x0 = col / columns + (gap_x / 2 if col else 0)
        x1 = (col + 1) / columns - (gap_x / 2 if col < columns - 1 else 0)
        y1 = 1 - row / rows - (gap_y if row else 0)
        y0 = 1 - (row + 1) / rows + (gap_y if row < rows - 1 else 0)
        layout[f"xaxis{suffix}"] = {"domain": [x0, x1], "anchor": f"y{suffix}"}
        layout[f"yaxis{suffix}"] = {"domain": [y0, y1], "anchor": f"x{suffix}",
                                    **({"title": {"text": "error (%)"}} if col == 0 else {})}
        part = envelope(points[points["panel"] == panel], "value", "error", max_points)
        traces.append({
            "type": _scatter_type(len(part)), "mode": "markers", "x": _floats(part["value"]),
            "y": _floats(part["error"]), "xaxis": f"x{suffix}", "yaxis": f"y{suffix}",
            "marker": {"size": 4, "color": _PALETTE[0], "opacity": 0.5}, "name": panel,
            "hovertemplate": f"{panel}: %{{x}}<br>error %{{y:.2f}} %<extra></extra>",
            "meta": {"role": "models"},
        })
        layout["shapes"] += [
            {"type": "rect", "xref": f"x{suffix}", "yref": f"y{suffix} domain",
             "x0": band.low, "x1": band.high, "y0": 0, "y1": 1, "fillcolor": _PALETTE[1],
             "opacity": 0.15, "line": {"width": 0}, "layer": "below"},
            {"type": "line", "xref": f"x{suffix}", "yref": f"y{suffix} domain",
             "x0": band.median, "x1": band.median, "y0": 0, "y1": 1,
             "line": {"color": _PALETTE[1], "dash": "dash", "width": 1.5}},
        ]
        layout["annotations"].append({
            "text": f"{panel}: [{band.low:g}, {band.high:g}], median {band.median:g}",
            "xref": "paper", "yref": "paper", "x": (x0 + x1) / 2, "y": y1, "yanchor": "bottom",
            "showarrow": False, "font": {"size": 11}})
    level = float(bands["level"].iloc[0])
    heading = title or "Good regions"
    return _figure(traces, chart, f"{heading}: each model's value against its error; shaded: "
                   f"the best models' {level:.0%} bootstrap interval, dashed: its median",
                   "", "", height=max(320, 260 * rows), **layout)


def cost_figure(candidates: pd.DataFrame, metric: str = "latency_ms") -> go.Figure:
    """Measured cost (latency or training images/s) against FLOPs, a trace per space."""
    chart = f"cost_{metric}"
    data = candidates.dropna(subset=["flops", metric]) if not candidates.empty else candidates
    if data.empty:
        return _empty_figure(chart, f"no measured {COST_LABELS[metric]} in the selection")
    colors = _colors_for(data["space"])
    kind = _scatter_type(len(data))
    traces: list[Trace] = []
    for space, part in data.groupby("space", sort=True):
        traces.append({
            "type": kind, "x": _floats(part["flops"]), "y": _floats(part[metric]),
            "mode": "markers", "name": str(space),
            "marker": {"color": colors[str(space)], "size": 8},
            **_hover(part, f"<br>{COST_LABELS[metric]} %{{y:.3g}}"), "meta": {"role": "cost"},
        })
    return _figure(traces, chart, f"Measured cost: {COST_LABELS[metric]} vs FLOPs",
                   COST_LABELS["flops"], COST_LABELS[metric], log_x=True)


def proxy_figure(table: pd.DataFrame, tau: float, proxy: str) -> go.Figure:
    """Each candidate's error under a cheap proxy (x) against its full-run error (y), with
    Kendall's tau in the title: points rising left to right mean the proxy ranks as the
    full run does."""
    chart = "proxy_fidelity"
    if table.empty:
        return _empty_figure(chart, "no candidate has both a proxy and a full-run error")
    labels = analysis.arch_labels(table)
    depths = table["depths"].map(analysis.tuple_label)
    short = analysis.setting_labels(table) + (" " + depths if depths.nunique() > 1 else "")
    traces: list[Trace] = [{
        "type": "scatter", "x": _floats(table["proxy_error"]), "y": _floats(table["full_error"]),
        "mode": "markers+text", "text": short.tolist(), "textposition": "top center",
        "marker": {"color": _PALETTE[0], "size": 9},
        "hovertext": [f"{label}<br>key {key}<br>proxy {p:.2f} % (rank {pr})<br>"
                      f"full {f:.2f} % (rank {fr})"
                      for label, key, p, f, pr, fr in zip(
                          labels, table["key"], table["proxy_error"], table["full_error"],
                          table["proxy_rank"], table["full_rank"], strict=True)],
        "hovertemplate": "%{hovertext}<extra></extra>", "name": "candidates",
        "meta": {"role": "candidates"},
    }]
    shown = "n/a (under 3 candidates)" if math.isnan(tau) else f"{tau:.2f}"
    return _figure(traces, chart, f"Proxy fidelity: Kendall τ = {shown} over {len(table)} "
                   "candidates", f"test error (%), {proxy}", "test error (%), full run")


def points(fig: go.Figure, role: str = "candidates") -> int:
    """How many points the traces of a role draw (what the tests count)."""
    return sum(len(t.x) for t in fig.data if (t.meta or {}).get("role") == role)


def all_figures(trials: pd.DataFrame, epochs: pd.DataFrame | None = None, *,
                curve_trials: Sequence[int] = (), bootstrap: int = 200,
                ) -> dict[str, go.Figure]:
    """Every chart for a selection of trials, by name (what the report draws)."""
    candidates = analysis.by_candidate(trials)
    figures: dict[str, Any] = {
        "error_vs_flops": error_vs_cost(candidates, "flops"),
        "error_vs_params": error_vs_cost(candidates, "params"),
        "cardinality_tradeoff": cardinality_tradeoff(candidates),
        "capacity_comparison": capacity_comparison(candidates),
        "error_edf": edf_figure(analysis.edf_table(trials, bootstrap=bootstrap)),
    }
    if epochs is not None:
        chosen = epochs[epochs["trial_id"].isin(list(curve_trials))] if curve_trials else epochs
        figures["training_curves"] = training_curves(analysis.curves(chosen, trials))
    figures["cost_latency_ms"] = cost_figure(candidates, "latency_ms")
    figures["cost_train_images_per_sec"] = cost_figure(candidates, "train_images_per_sec")
    return figures
