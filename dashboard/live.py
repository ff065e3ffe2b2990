"""What the dashboard keeps between reruns and sessions, and reads before the first one;
the app's own arguments (after ``--`` on the command line).

The trials table of a selection of experiments (`LiveTrials`) and the open store are
process-wide, shared by every session (st.cache_resource), and live here rather than in
app.py so that they are the same objects whoever asks: streamlit runs app.py as a script
(module ``__main__``), and dashboard.launch, which calls `warm` before it starts the
server, imports this module; both reach the one cache entry per store and selection.
So the first page finds the newest experiment's trials read, instead of reading them
itself while the browser waits.
"""

from __future__ import annotations

import argparse
import importlib
import threading
from collections.abc import Sequence

import pandas as pd
import streamlit as st

from explorer.store import Reader

__all__ = [
    "LiveTrials", "bin_above", "live_trials", "newest_experiment", "open_store", "store_url",
    "warm",
]


# What app.py imports besides this module: imported by `warm`, so that the first page
# does not wait for them either.
_PAGE_IMPORTS = ("explorer.analysis", "explorer.compare", "explorer.figures")


def _arguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dashboard", add_help=False)
    parser.add_argument("--store", default=None)
    parser.add_argument("--bin-above", type=int, default=None)
    known, _unknown = parser.parse_known_args(list(argv))
    return known


def store_url(argv: Sequence[str]) -> str | None:
    """The --store URL from the script's arguments."""
    url: str | None = _arguments(argv).store
    return url


def bin_above(argv: Sequence[str]) -> int | None:
    """--bin-above N from the script's arguments: above N candidates error vs cost draws
    density bins (None: figures.BIN_THRESHOLD; `serve.streamlit_command` passes it)."""
    value = _arguments(argv).bin_above
    return None if value is None else max(int(value), 0)


class LiveTrials:
    """The trials table of one selection of experiments, kept current: one full read, then
    at each new data version only the trials changed since (Reader.dashboard_trials_since).
    Shared by the sessions, hence the lock. It remembers which candidates each refresh
    touched, so that aggregates can be brought up to date the same way (`changed_keys`)."""

    LOG = 64  # refreshes remembered

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._version = -1
        self._frame: pd.DataFrame | None = None  # as read, its attrs saying what was seen
        self._shown = pd.DataFrame()  # the same rows without them (for tables and charts)
        self._log: list[tuple[int, frozenset[str] | None]] = []  # (version, keys changed)

    def at(self, reader: Reader, names: tuple[str, ...], version: int) -> pd.DataFrame:
        """The table as of `version` or newer."""
        with self._lock:
            if self._frame is None or version > self._version:
                before = self._frame
                self._frame = reader.dashboard_trials(list(names)) if before is None \
                    else reader.dashboard_trials_since(before, list(names))
                self._log = [*self._log[-self.LOG:], (version, _touched(before, self._frame))]
                self._shown = self._frame.copy(deep=False)
                self._shown.attrs = {}
                self._version = max(self._version, version)
            return self._shown

    def changed_keys(self, since: int) -> frozenset[str] | None:
        """The candidate keys whose trials changed after data version `since`; None when
        that is not known (a full read since, or `since` further back than the log)."""
        with self._lock:
            later = [touched for version, touched in self._log if version > since]
            reaches = any(version <= since for version, _ in self._log)
            if not reaches or any(touched is None for touched in later):
                return None
            return frozenset().union(*later)  # type: ignore[arg-type]


def _touched(before: pd.DataFrame | None, after: pd.DataFrame) -> frozenset[str] | None:
    """The candidate keys of the trials a refresh read again; None for a full read."""
    ids = after.attrs.get("changed_trials")
    if before is None or ids is None:
        return None
    return frozenset(after.loc[after["trial_id"].isin(ids), "key"].astype(str))


@st.cache_resource(show_spinner=False)
def open_store(url: str) -> Reader:
    return Reader.open(url)


@st.cache_resource(show_spinner=False, max_entries=8)
def live_trials(url: str, experiments: tuple[str, ...]) -> LiveTrials:
    return LiveTrials()


def newest_experiment(experiments: pd.DataFrame) -> str:
    """The experiment created last (of `Reader.experiment_versions`): the page's default."""
    return str(experiments.sort_values("created_at")["experiment"].iloc[-1])


def warm(url: str) -> str | None:
    """Read the trials the first page shows by default (the newest experiment's) into
    the shared cache, and import what the page imports; returns what was read, in words
    (None when there was nothing to read). Problems are left for the page to report: it
    opens the store itself and says what is wrong."""
    try:
        store = open_store(url)
        version = store.data_version()
        experiments = store.experiment_versions()
        read = None
        if not experiments.empty:
            names = (newest_experiment(experiments),)
            trials = live_trials(url, names).at(store, names, version)
            read = f"{trials['trial_id'].nunique():,} trials of {names[0]!r}"
        for module in _PAGE_IMPORTS:
            importlib.import_module(module)
    except Exception:
        return None
    return read
