"""The sweep: Tune's settings, the tuner assembled (searcher, ASHA, the events callback,
the trainable with the shared data) and run until it ends or is stopped."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ray import tune
from ray.tune.experiment import Trial

from explorer.errors import SetupError
from explorer.search import Strategy
from explorer.sweep.cluster import check_cluster, ray_session
from explorer.sweep.events import Events, Halt, trial_key
from explorer.sweep.process import environment, stdout_to, stop_on_signals
from explorer.sweep.protocol import Sink, SweepOptions
from explorer.sweep.searcher import Stopping, StrategySearcher
from explorer.sweep.worker import run_trial, shared_data

if TYPE_CHECKING:
    from explorer.data import Dataset

__all__ = ["TUNE_SETTINGS", "run_sweep"]


# Tune reads these from the environment of the driver when a sweep starts; they are set
# for the sweep's duration only (see `_tune_settings`), never at import.
TUNE_SETTINGS = {
    # Tune's own result loggers (CSV, JSON, TensorBoard) duplicate the store.
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    "RAY_AIR_NEW_OUTPUT": "0",
    # A trial's first report (where it runs) has no metrics by design; Tune's strict check
    # would fail it for lacking ASHA's metric. ASHA skips such results.
    "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",
    # Tune's own Ctrl-C handler ends the sweep quietly, and `fit` returns as if it had
    # finished; explorer's (`stop_on_signals`) ends it the same way and says so.
    "TUNE_DISABLE_SIGINT_HANDLER": "1",
}


def run_sweep(strategy: Strategy, sink: Sink, options: SweepOptions, *, max_epochs: int,
              stop: Sequence[threading.Event] = (), loaded: Dataset | None = None) -> None:
    """Train what `strategy` hands out, reporting to `sink`; `max_epochs` is ASHA's horizon.
    `loaded` is `options.data` already loaded by the caller, so it is not loaded twice.

    Once any `stop` event is set (the driver lost its lease, the store is gone), or on the
    first Ctrl-C or SIGTERM, the sweep ends at Tune's next step: nothing more is handed out
    and the running trials are stopped, left 'running' in the store for the next run to
    resume from their checkpoints. A Ctrl-C then raises KeyboardInterrupt, a SIGTERM
    Terminated; a second one raises at once. A trial whose checkpoint cannot be written (a
    full disk) stops the sweep the same way, and SetupError says which file and why.
    """
    if strategy.budget <= 0:
        return
    with _tune_settings(), stdout_to(options.log_file), ray_session(options):
        check_cluster(options)
        # Loaded before Ctrl-C is caught: a large folder or a download stops at once.
        shared = None if options.data is None else shared_data(options.data, loaded)
        halt = Halt()
        with stop_on_signals() as interrupted:
            stopping = Stopping(interrupted, halt, *stop)
            tuner = _tuner(strategy, sink, options, max_epochs, stopping, shared, halt)
            started = time.monotonic()
            tuner.fit()
        logging.getLogger(__package__).info("sweep took %.1f s%s", time.monotonic() - started,
                                            " (interrupted)" if interrupted.is_set() else "")
    if interrupted.is_set():
        raise interrupted.exception()
    if halt.is_set():
        raise SetupError(halt.reason)


class _StopAll(tune.Stopper):
    """Tells Tune to end the whole sweep once `stopping()` is true: Tune then finishes the
    searcher and stops every running trial, at its next step (a tenth of a second)."""

    def __init__(self, stopping: Stopping) -> None:
        self.stopping = stopping

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.stopping()


def _tuner(strategy: Strategy, sink: Sink, options: SweepOptions, max_epochs: int,
           stopping: Stopping, shared: Any, halt: Halt) -> tune.Tuner:
    resources = {"cpu": options.resources.cpus_per_trial, "gpu": options.resources.gpus_per_trial}
    scheduler = None
    if options.early_stopping == "asha":
        scheduler = tune.schedulers.ASHAScheduler(
            time_attr="epoch", metric="test_error", mode="min", max_t=max_epochs,
            grace_period=1)
    searcher = StrategySearcher(strategy, options, stopping)
    tune_config = tune.TuneConfig(
        num_samples=strategy.budget, search_alg=searcher, scheduler=scheduler,
        max_concurrent_trials=options.resources.max_concurrent,
        # Reused workers keep torch, the dataset and the import of the trainer loaded
        # between trials (seconds each on a small machine, longer than a tiny trial).
        reuse_actors=True, trial_name_creator=_trial_name, trial_dirname_creator=_trial_name,
    )
    run_config = tune.RunConfig(
        name=f"{options.experiment}-{uuid.uuid4().hex[:8]}",
        storage_path=str((options.runs_dir / "ray").resolve()),
        failure_config=tune.FailureConfig(max_failures=options.resources.max_failures),
        callbacks=[Events(sink, searcher.suggested, halt)], verbose=0, log_to_file=True,
        stop=_StopAll(stopping),
    )
    # One copy of the data per node: with_parameters puts it in Ray's object store once,
    # and each worker maps it from there instead of loading its own.
    trainable = run_trial if shared is None else tune.with_parameters(run_trial, shared=shared)
    return tune.Tuner(tune.with_resources(trainable, resources), param_space={},
                      tune_config=tune_config, run_config=run_config)


def _trial_name(trial: Trial) -> str:
    return f"{trial_key(trial)}-{trial.trial_id}"


def _tune_settings() -> contextlib.AbstractContextManager[None]:
    """TUNE_SETTINGS in the environment while a sweep runs, the caller's values after."""
    return environment(TUNE_SETTINGS)
