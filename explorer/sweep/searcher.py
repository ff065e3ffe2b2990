"""The search adapter: Ray Tune asks `StrategySearcher` for each trial's config and hears
how it ended, so any `Strategy` (explorer/search.py) drives the sweep."""

from __future__ import annotations

import threading
from typing import Any

from ray.tune.search import Searcher

from explorer.errors import SetupError
from explorer.metrics import Status
from explorer.search import SearchError, Strategy, Suggestion
from explorer.sweep.protocol import SweepOptions, trial_config

__all__ = ["Stopping", "StrategySearcher"]


class Stopping:
    """Whether the sweep is to end: once any of its events is set.

    Tune pickles its searcher and stopper into its experiment state; a copy never
    stops, the events stay with the driver's object.
    """

    def __init__(self, *events: threading.Event) -> None:
        self.events = events

    def __call__(self) -> bool:
        return any(event.is_set() for event in self.events)

    def __getstate__(self) -> dict[str, Any]:
        return {"events": ()}


class StrategySearcher(Searcher):
    """Ray Tune's view of a search strategy: Tune asks it for each trial's config.

    It remembers which trial key each of Tune's trials runs, so the strategy
    hears how its suggestions ended; a strategy that cannot go on ends the
    sweep with its one-line reason (SetupError).
    """

    def __init__(self, strategy: Strategy, options: SweepOptions,
                 stopping: Stopping | None = None) -> None:
        super().__init__()
        self.strategy = strategy
        self.options = options
        self.stopping = stopping or Stopping()  # once true, the strategy is asked no more
        self.keys: dict[str, str] = {}  # trial key of each trial in flight, by Tune's id
        self.suggested: dict[str, Suggestion] = {}  # by trial key, for the sink as trials start

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self.stopping():
            return Searcher.FINISHED  # type: ignore[return-value]
        try:
            suggestion = self.strategy.ask()
        except SearchError as problem:
            raise SetupError(str(problem)) from None
        if suggestion is None:
            return Searcher.FINISHED  # type: ignore[return-value]
        key = suggestion.plan.trial_key
        self.keys[trial_id] = key
        self.suggested[key] = suggestion
        return trial_config(suggestion.plan, self.options)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None,
                          error: bool = False) -> None:
        key = self.keys.pop(trial_id, None)
        if key is None:
            return
        failed = error or result is None or result.get("status") == Status.FAILED
        self.strategy.tell(key, None if failed else result)
