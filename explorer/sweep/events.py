"""The driver's side of the reports: a Tune callback that turns each trial's reports and
Tune's own trial events into calls on the `Sink`, and decides how each trial ended."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.experiment import Trial

from explorer.metrics import EPOCH_REPORT, FINAL_REPORT, Status, outcome
from explorer.metrics import PROVENANCE as PROVENANCE_FIELDS
from explorer.plan import TrialPlan
from explorer.search import Suggestion
from explorer.space import Candidate
from explorer.sweep.protocol import EPOCH, FINAL, HALT, NOTICE, PROVENANCE, START, Sink

__all__ = ["Events", "Halt", "trial_key"]


class _NullSink:
    """What an unpickled copy of the event forwarder reports to: nothing."""

    def trial_planned(self, plan: TrialPlan, candidate: Candidate | None) -> None:
        pass

    def trial_started(self, trial_key: str, node: str, device: str) -> None:
        pass

    def trial_provenance(self, trial_key: str, provenance: Mapping[str, Any]) -> None:
        pass

    def notice(self, trial_key: str, message: str) -> None:
        pass

    def epoch(self, trial_key: str, metrics: Mapping[str, Any]) -> None:
        pass

    def trial_ended(self, trial_key: str, status: Status, metrics: Mapping[str, Any],
                    error: str | None, history: Sequence[Mapping[str, Any]]) -> None:
        pass

    def tick(self) -> None:
        pass


class Halt(threading.Event):
    """Set once a trial reports a problem every trial would meet (its checkpoint could not
    be written: a full disk): the sweep stops, and `reason` is that trial's line."""

    reason: str = ""

    def halt(self, reason: str) -> None:
        if not self.is_set():
            self.reason = reason
            self.set()


class Events(tune.Callback):
    """Forwards Tune's trial events, in the driver, to the sink."""

    def __init__(self, sink: Sink, suggested: Mapping[str, Suggestion],
                 halt: Halt | None = None) -> None:
        self.sink = sink
        self.halt = halt or Halt()
        self.ended: set[str] = set()
        # What the searcher handed out, by trial key, to record as trials start.
        self.suggested = suggested
        self.seconds: dict[str, float] = {}  # epoch seconds reported, for ASHA's stopped trials

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its run config into the experiment state; the sink (a
        # database engine, a live display) stays with the driver's object.
        return {"ended": self.ended}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, sink=_NullSink(), suggested={}, seconds={}, halt=Halt())

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial,
                       **info: Any) -> None:
        suggestion = self.suggested.get(trial_key(trial))
        if suggestion is not None:
            self.sink.trial_planned(suggestion.plan, suggestion.candidate)

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial,
                        result: dict[str, Any], **info: Any) -> None:
        key = trial_key(trial)
        kind = result.get("kind")
        if kind == START:
            self.sink.trial_started(key, str(result["node"]), str(result["device"]))
        elif kind == PROVENANCE:
            self.sink.trial_provenance(key, {k: result[k] for k in PROVENANCE_FIELDS
                                             if k in result})
        elif kind == NOTICE:
            self.sink.notice(key, str(result.get("message", "")))
        elif kind == HALT:
            self.halt.halt(str(result.get("message", "")))
        elif kind == EPOCH:
            self.seconds[key] = self.seconds.get(key, 0.0) + float(result.get("seconds", 0.0))
            self.sink.epoch(key, _epoch_fields(result))
        elif kind == FINAL and key not in self.ended:
            self.ended.add(key)
            history = json.loads(result.get("history") or "[]")
            status = outcome(failed=result.get("status") != Status.FINISHED)
            self.sink.trial_ended(key, status, _final_fields(result), result.get("error") or None,
                                  history)

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial,
                          **info: Any) -> None:
        # A trial the scheduler (ASHA) stops never sends its final report: ASHA stops every
        # trial at its last epoch too. One that completed every planned epoch is finished;
        # one stopped before is stored as stopped, so it is neither skipped nor reused.
        key = trial_key(trial)
        last = trial.last_result or {}
        if key not in self.ended and last.get("kind") == EPOCH:
            self.ended.add(key)
            completed = int(last["epoch"])
            planned = int(trial.config["plan"]["train"]["epochs"])
            fields = {**_final_fields(last), "seconds": self.seconds.get(key, 0.0),
                      "epochs_completed": completed}
            status = outcome(failed=False, epochs_completed=completed, planned_epochs=planned)
            self.sink.trial_ended(key, status, fields, None, [])

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial,
                       **info: Any) -> None:
        key = trial_key(trial)
        if key in self.ended:
            return
        self.ended.add(key)
        error = _error_text(trial)
        self.sink.trial_ended(key, outcome(failed=True), _final_fields(trial.last_result or {}),
                              error, [])

    def on_step(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        self.sink.tick()


def trial_key(trial: Trial) -> str:
    return str(trial.config["plan"]["trial_key"])


def _epoch_fields(result: Mapping[str, Any]) -> dict[str, Any]:
    return {k: result[k] for k in EPOCH_REPORT if k in result}


def _final_fields(result: Mapping[str, Any]) -> dict[str, Any]:
    return {k: result[k] for k in FINAL_REPORT if k in result}


def _error_text(trial: Trial) -> str:
    """The last line of the worker's exception, for the store and the summary."""
    path = getattr(trial, "error_file", None)
    with contextlib.suppress(OSError, TypeError):
        if path:
            lines = [ln for ln in Path(path).read_text().splitlines() if ln.strip()]
            if lines:
                return lines[-1][:2000]
    return "the trial's worker failed (see the Ray log under runs/)"
