"""Ray Tune orchestration of trials: the only package that imports ray.

The sweep knows nothing of the database, nor of how trials are chosen. It
drives a search `Strategy` (explorer/search.py: grid, random, optuna) through
one Ray Tune searcher adapter, and tells a `Sink` what happens: a trial
starts, reports an epoch, finishes or fails. The experiment runner plugs the
store in as that sink. Every trial checkpoints under
``<runs_dir>/checkpoints/<trial_key>`` and resumes from there, whether Tune
retries it after a lost worker or a later `explorer run` picks it up again.

The package, one concept a module: `protocol` (the options, a worker's config, the
kinds of report, the Sink), `worker` (the trainable), `events` (the reports turned into
Sink calls), `searcher` (the Strategy as Tune's searcher), `process` (environment,
output and signals while a sweep runs), `auth` (Ray's token authentication), `cluster`
(Ray started or joined, the cluster checked) and `tuner` (the sweep assembled and run).
What other modules use is re-exported here.
"""

from explorer.sweep.protocol import Sink, SweepOptions
from explorer.sweep.searcher import Stopping, StrategySearcher
from explorer.sweep.tuner import TUNE_SETTINGS, run_sweep
from explorer.sweep.worker import run_trial

__all__ = [
    "TUNE_SETTINGS",
    "Sink",
    "Stopping",
    "StrategySearcher",
    "SweepOptions",
    "run_sweep",
    "run_trial",
]
