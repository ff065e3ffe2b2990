"""Experiment tracking in the tools users already have.

- TensorBoard: `--tensorboard` on `explorer run` and `explorer train` writes
  each trial's epochs as scalars (step = epoch) to event files under
  ``RUNS_DIR/NAME/tensorboard/TRIAL_KEY/``, so ``tensorboard --logdir
  runs/NAME/tensorboard`` shows every trial. `TensorBoardLog` hears epochs
  from the sweep's Sink or train's on_epoch callback; nothing here trains.
- MLflow: `explorer export NAME --mlflow URI` logs each trial of the
  experiment's latest version as an MLflow run (params: architecture, recipe,
  seed; metrics per epoch with step = epoch; tags: status, key, trial_key,
  space). Runs are found again by their trial_key tag, so exporting again
  updates them (new epochs, a changed status) instead of adding runs.

Both are optional: `pip install 'explorer[tracking]'` (tensorboard,
mlflow-skinny). A missing package is a MissingExtra naming that extra.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from explorer.arch import setting_label
from explorer.columns import COLUMNS
from explorer.errors import ExplorerError, MissingExtra
from explorer.metrics import EpochMetrics, Status
from explorer.spec import SpecError, parse_spec
from explorer.store import Reader

__all__ = [
    "ARCH_PARAMS",
    "EXTRA",
    "SCALARS",
    "MlflowExport",
    "TensorBoardLog",
    "TrackingError",
    "export_to_mlflow",
    "summary_writer_class",
    "tensorboard_dir",
]

EXTRA = "tracking"
# The epoch metrics logged (every EpochMetrics field but the epoch, the step, and the
# trainer's step count).
SCALARS = tuple(name for name in EpochMetrics.__dataclass_fields__
                if name not in ("epoch", "steps"))
# The candidate's columns logged as a run's params (explorer/columns.py's tracked ones).
ARCH_PARAMS = tuple(column.name for column in COLUMNS if column.tracked)
# A trial's status as MLflow's run status.
_RUN_STATUS: dict[str, str] = {Status.PENDING: "SCHEDULED", Status.RUNNING: "RUNNING",
                               Status.FINISHED: "FINISHED", Status.STOPPED: "KILLED",
                               Status.FAILED: "FAILED"}
_TRIAL_KEY_TAG = "trial_key"


class TrackingError(ExplorerError):
    """A tracking set-up problem, in one line for people (exit 2)."""


def tensorboard_dir(runs_dir: Path, experiment: str) -> Path:
    """Where an experiment's event files go: one folder per trial key below it."""
    return runs_dir / experiment / "tensorboard"


# --- TensorBoard ------------------------------------------------------------------------------


def summary_writer_class() -> Any:
    """torch's SummaryWriter, or MissingExtra naming the extra (commands check early)."""
    try:  # torch.utils.tensorboard raises ImportError without the tensorboard package
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise MissingExtra("--tensorboard", "tensorboard", EXTRA) from None
    return SummaryWriter


class TensorBoardLog:
    """Event files per trial under `root`/TRIAL_KEY/, one scalar per metric and epoch.

    Each event file is flushed after every epoch, so TensorBoard shows a
    running sweep. A trial that runs again (a retry, a resumed driver, `explorer
    train` once more) adds an event file to its folder that purges the earlier
    ones' events from its first epoch on: TensorBoard shows each epoch once.
    """

    def __init__(self, root: Path) -> None:
        self._writer_class = summary_writer_class()
        self.root = root
        self._writers: dict[str, Any] = {}

    def epoch(self, trial_key: str, metrics: Mapping[str, Any]) -> None:
        step = int(metrics["epoch"])
        writer = self._writers.get(trial_key)
        if writer is None:
            # purge_step: a trial that trains again from epoch `step` (a rerun, a retry, a
            # resume) hides the earlier files' events from there on, TensorBoard's own way.
            writer = self._writer_class(log_dir=str(self.root / trial_key), purge_step=step)
            self._writers[trial_key] = writer
        for name in SCALARS:
            value = metrics.get(name)
            if value is not None and math.isfinite(float(value)):
                writer.add_scalar(name, float(value), step)
        writer.flush()

    def trial_ended(self, trial_key: str) -> None:
        writer = self._writers.pop(trial_key, None)
        if writer is not None:
            writer.close()

    def close(self) -> None:
        for key in list(self._writers):
            self.trial_ended(key)

    def __enter__(self) -> TensorBoardLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# --- MLflow -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MlflowExport:
    experiment: str
    uri: str
    created: int  # runs added
    updated: int  # runs found by their trial key and brought up to date
    epochs_logged: int


def export_to_mlflow(reader: Reader, experiment: str, uri: str) -> MlflowExport:
    """Log the trials of `experiment`'s latest version as runs of the MLflow experiment of
    the same name at tracking `uri` (created if needed); idempotent."""
    try:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise MissingExtra("explorer export --mlflow", "mlflow", EXTRA) from None

    trials = reader.trials_frame([experiment])
    if trials.empty:
        raise TrackingError(f"no experiment {experiment!r} in the store; "
                            "`explorer status` lists them")
    epochs = reader.epochs_frame(experiment_names=[experiment])
    recipe = _recipe_params(reader, experiment)
    try:
        client = MlflowClient(tracking_uri=uri)
        return _export(client, experiment, uri, trials, epochs, recipe)
    except MlflowException as problem:
        hint = (" (MLflow 3 keeps file stores behind MLFLOW_ALLOW_FILE_STORE=true)"
                if "MLFLOW_ALLOW_FILE_STORE" in str(problem) else "")
        raise TrackingError(f"MLflow at {uri}: {_first_line(problem)}{hint}") from None


def _export(client: Any, experiment: str, uri: str, trials: pd.DataFrame,
            epochs: pd.DataFrame, recipe: dict[str, str]) -> MlflowExport:
    from mlflow.entities import Metric, Param, RunTag

    found = client.get_experiment_by_name(experiment)
    experiment_id = (found.experiment_id if found is not None
                     else client.create_experiment(experiment))
    existing = dict(_runs_by_trial_key(client, experiment_id))
    created = updated = logged = 0
    by_trial = {key: part for key, part in epochs.groupby("trial_key", sort=False)}
    for row in _one_row_per_trial(trials).itertuples(index=False):
        key = str(row.trial_key)
        tags = {_TRIAL_KEY_TAG: key, "key": str(row.key), "space": str(row.space),
                "status": str(row.status), "experiment_version": str(row.version)}
        run_id = existing.get(key)
        known_steps: set[int] = set()
        if run_id is None:
            run = client.create_run(experiment_id, run_name=_run_name(row), tags=tags)
            run_id = run.info.run_id
            params = {**{name: _text(getattr(row, name)) for name in ARCH_PARAMS},
                      **recipe, "seed": str(row.seed)}
            client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()])
            created += 1
        else:
            known_steps = {m.step for m in client.get_metric_history(run_id, "test_error")}
            client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
            updated += 1
        now = int(time.time() * 1000)
        metrics = [Metric(name, float(value), now, int(epoch.epoch))
                   for epoch in by_trial.get(key, epochs.iloc[:0]).itertuples(index=False)
                   if int(epoch.epoch) not in known_steps
                   for name in SCALARS
                   if (value := getattr(epoch, name)) is not None and not pd.isna(value)]
        for chunk in _chunks(metrics, 1000):  # MLflow's limit per batch
            client.log_batch(run_id, metrics=chunk)
        logged += len({m.step for m in metrics})
        client.update_run(run_id, status=_RUN_STATUS.get(str(row.status), "RUNNING"))
    return MlflowExport(experiment, uri, created, updated, logged)


def _runs_by_trial_key(client: Any, experiment_id: str) -> Iterator[tuple[str, str]]:
    """(trial key, run id) of the runs an earlier export made, every page of them."""
    token = None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        for run in page:
            key = run.data.tags.get(_TRIAL_KEY_TAG)
            if key:
                yield key, run.info.run_id
        token = page.token
        if not token:
            return


def _one_row_per_trial(trials: pd.DataFrame) -> pd.DataFrame:
    """The trials frame has a row per (trial, space): one per trial, its spaces joined."""
    spaces = (trials["space"].astype("string").fillna("")
              .groupby(trials["trial_id"], sort=False).agg(lambda s: ", ".join(sorted(set(s)))))
    first = trials.drop_duplicates("trial_id").copy()
    first["space"] = first["trial_id"].map(spaces)
    return first


def _recipe_params(reader: Reader, experiment: str) -> dict[str, str]:
    """The latest version's recipe (train.*) and data (data.*) as MLflow params."""
    versions = reader.experiments()
    latest = versions[(versions["experiment"] == experiment) & versions["latest"]]
    if latest.empty:
        return {}
    try:
        spec = parse_spec(str(latest["spec_text"].iloc[0]), f"{experiment} (stored spec)")
    except SpecError:  # written by an older explorer: the trials still export
        return {}
    train = spec.train.model_dump(mode="json", exclude={"seeds"})
    data = spec.data.model_dump(mode="json", include={"dataset", "resolution", "train_subset",
                                                      "test_subset"})
    return {**{f"train.{k}": _text(v) for k, v in train.items()},
            **{f"data.{k}": _text(v) for k, v in data.items()}}


def _run_name(row: Any) -> str:
    depths = "-".join(str(d) for d in row.depths) if isinstance(row.depths, tuple) else row.depths
    return f"{setting_label(row.cardinality, row.bottleneck_width)} [{depths}] seed {row.seed}"


def _text(value: object) -> str:
    if isinstance(value, tuple | list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _first_line(problem: BaseException) -> str:
    text = str(problem).strip()
    return text.splitlines()[0] if text else type(problem).__name__
