"""Ray Tune orchestration of trials: the only module that imports ray.

The sweep knows nothing of the database, nor of how trials are chosen. It
drives a search `Strategy` (explorer/search.py: grid, random, optuna) through
one Ray Tune searcher adapter, and tells a `Sink` what happens: a trial
starts, reports an epoch, finishes or fails. The experiment runner plugs the
store in as that sink. Every trial checkpoints under
``<runs_dir>/checkpoints/<trial_key>`` and resumes from there, whether Tune
retries it after a lost worker or a later `explorer run` picks it up again.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import ray
from ray import tune
from ray.tune.experiment import Trial
from ray.tune.search import Searcher

from explorer.errors import SetupError, Terminated, raise_terminated
from explorer.metrics import EPOCH_REPORT, FINAL_REPORT, EpochMetrics, Provenance, Status, outcome
from explorer.metrics import PROVENANCE as PROVENANCE_FIELDS
from explorer.plan import TrialPlan
from explorer.search import SearchError, Strategy, Suggestion
from explorer.space import Candidate
from explorer.spec import DataSpec, ResourcesSpec

if TYPE_CHECKING:
    from torch import nn

    from explorer.arch import Arch
    from explorer.data import Dataset, ImageFiles

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
    # finished; explorer's (`_stop_on_signals`) ends it the same way and says so.
    "TUNE_DISABLE_SIGINT_HANDLER": "1",
}

# The kinds of report a trial sends: where it runs (before anything loads), what runs
# (once the model is built), a line for the person watching (a damaged checkpoint set
# aside), each epoch, and how it ended; or, instead of an end, a problem every trial would
# meet (its checkpoint could not be written), which stops the sweep.
START = "start"
PROVENANCE = "provenance"
NOTICE = "notice"
EPOCH = "epoch"
FINAL = "final"
HALT = "halt"


@dataclass(frozen=True)
class SweepOptions:
    runs_dir: Path
    experiment: str
    address: str | None = None  # the cluster to join: --address, else resources.address
    resources: ResourcesSpec = field(default_factory=ResourcesSpec)  # the spec's, as it is
    early_stopping: str = "none"
    max_steps: int | None = None
    num_cpus: int | None = None
    log_file: Path | None = None
    fail_trial: str | None = None
    data: DataSpec | None = None  # the sweep's data, loaded once and shared (None: per worker)

    @property
    def checkpoint_root(self) -> Path:
        return self.runs_dir / "checkpoints"


class Sink(Protocol):
    """Where a sweep's events go; the runner's implementation writes the store."""

    def trial_planned(self, plan: TrialPlan, candidate: Candidate | None) -> None: ...

    def trial_started(self, trial_key: str, node: str, device: str) -> None: ...

    def trial_provenance(self, trial_key: str, provenance: Mapping[str, Any]) -> None: ...

    def notice(self, trial_key: str, message: str) -> None: ...

    def epoch(self, trial_key: str, metrics: Mapping[str, Any]) -> None: ...

    def trial_ended(self, trial_key: str, status: Status, metrics: Mapping[str, Any],
                    error: str | None, history: Sequence[Mapping[str, Any]]) -> None: ...

    def tick(self) -> None: ...


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


def run_trial(config: dict[str, Any], shared: Any = None) -> None:
    """The Tune trainable: train one planned trial, reporting each epoch and the end.

    `shared` is the sweep's data as the driver put it in the object store (see
    `_shared_data`): its arrays are mapped from the node's shared memory, not copied.
    """
    from explorer.train import CheckpointNotWritten, train_trial

    plan = TrialPlan.from_config(config["plan"])
    device = "cuda" if ray.get_gpu_ids() else "cpu"
    node = ray.get_runtime_context().get_node_id()
    tune.report({"kind": START, "node": node, "device": device, "epoch": 0})

    def on_start(ran: Provenance) -> None:
        tune.report({"kind": PROVENANCE, "epoch": 0, "node": node, **ran.to_dict()})

    def on_epoch(metrics: EpochMetrics) -> None:
        tune.report({"kind": EPOCH, **metrics.to_dict()})

    def on_notice(message: str) -> None:
        tune.report({"kind": NOTICE, "epoch": 0, "message": message})

    poison = config.get("fail_trial")
    try:
        result = train_trial(
            plan.arch, _unshared(shared) if shared is not None else _dataset(plan.data),
            plan.train, seed=plan.seed, device=device, num_classes=plan.num_classes,
            workers=int(config.get("workers", 1)),
            checkpoint_dir=Path(config["checkpoint_root"]) / plan.trial_key,
            max_steps=config.get("max_steps"), on_epoch=on_epoch, on_start=on_start,
            on_notice=on_notice,
            build=_diverging_builder if poison and plan.trial_key.startswith(poison) else None,
        )
    except CheckpointNotWritten as problem:
        # Not this trial's failure: it ends without a final report, unfinished, and the
        # next run resumes it from the checkpoint it last wrote.
        tune.report({"kind": HALT, "epoch": 0, "message": str(problem)})
        return
    if device == "cuda":  # the worker is reused: keep no cached blocks from the GPU's others
        import torch

        from explorer.train import release_memory

        release_memory(torch.device(device))
    final = result.metrics.to_dict() if result.metrics is not None else {}
    tune.report({
        # The trial's training time is every epoch's (the last epoch's alone was reported).
        **final, "seconds": sum(m.seconds for m in result.history),
        "kind": FINAL, "status": result.status.value, "error": result.error or "",
        "epochs_completed": result.epochs_completed,
        "history": json.dumps([m.to_dict() for m in result.history]),
    })


@functools.lru_cache(maxsize=1)
def _dataset(data: DataSpec) -> Dataset | ImageFiles:
    """The trial's dataset, loaded once per worker: Tune reuses a worker for the next
    trial, and every trial of a sweep trains on the same data."""
    from explorer.data import load_data

    return load_data(data)


def _shared_data(data: DataSpec, loaded: Dataset | None = None) -> Any:
    """The sweep's data loaded once, in the driver (or `loaded` already, by the run's check
    that it is there), in the form the object store shares without copies: a resident
    dataset as numpy arrays, a streamed folder's file list."""
    from explorer.data import Dataset, dataset_arrays, load_data

    found = loaded if loaded is not None else load_data(data)
    return dataset_arrays(found) if isinstance(found, Dataset) else found


def _unshared(shared: Any) -> Dataset | ImageFiles:
    from explorer.data import dataset_from_arrays

    return shared if not isinstance(shared, dict) else dataset_from_arrays(shared)


def _diverging_builder(arch: Arch, num_classes: int) -> nn.Module:
    """Fault injection (`explorer run --fail-trial KEY`): the model's outputs turn NaN,
    so the trainer's own divergence check fails the trial, as a real blow-up would."""
    from explorer.models import build_model

    model = build_model(arch, num_classes)
    model.register_forward_hook(lambda module, inputs, output: output * float("nan"))
    return model


class Halt(threading.Event):
    """Set once a trial reports a problem every trial would meet (its checkpoint could not
    be written: a full disk): the sweep stops, and `reason` is that trial's line."""

    reason: str = ""

    def halt(self, reason: str) -> None:
        if not self.is_set():
            self.reason = reason
            self.set()


class _Events(tune.Callback):
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
        suggestion = self.suggested.get(_trial_key(trial))
        if suggestion is not None:
            self.sink.trial_planned(suggestion.plan, suggestion.candidate)

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial,
                        result: dict[str, Any], **info: Any) -> None:
        key = _trial_key(trial)
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
        key = _trial_key(trial)
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
        key = _trial_key(trial)
        if key in self.ended:
            return
        self.ended.add(key)
        error = _error_text(trial)
        self.sink.trial_ended(key, outcome(failed=True), _final_fields(trial.last_result or {}),
                              error, [])

    def on_step(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        self.sink.tick()


def _trial_key(trial: Trial) -> str:
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


# --- the search adapter ----------------------------------------------------------------


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


def trial_config(plan: TrialPlan, options: SweepOptions) -> dict[str, Any]:
    """What a worker gets: the plan as primitives and where to checkpoint."""
    return {
        "plan": plan.to_config(),
        "checkpoint_root": str(options.checkpoint_root.resolve()),
        "max_steps": options.max_steps,
        "fail_trial": options.fail_trial,
        # Loader processes of a streamed folder: one per CPU the trial holds.
        "workers": max(1, int(options.resources.cpus_per_trial)),
    }


# --- running ---------------------------------------------------------------------


@contextlib.contextmanager
def ray_session(options: SweepOptions) -> Iterator[None]:
    """Ray on this machine (started and stopped here) or an existing cluster.

    A Ray already started by the caller (a test session) is used and left running.
    A cluster that requires token authentication is joined with the token Ray finds
    on this machine (see `_token_auth`).
    """
    if options.address:
        _refuse_client_mode(options.address)
    if ray.is_initialized():
        yield
        return
    if options.address:
        _check_reachable(options.address)
    with contextlib.ExitStack() as session:
        # ray.init installs SIGTERM handlers (its Python one kills Ray and exits 1, its C++
        # one prints a stack dump and aborts) that outlive ray.shutdown: the caller's are
        # put back as soon as Ray has started, and again after it has stopped.
        callers = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS} \
            if threading.current_thread() is threading.main_thread() else {}
        session.callback(_restore_handlers, callers)
        log = _quiet_ray_logging(options.log_file)
        if log is not None:
            session.callback(log.close)
        if options.address:
            session.enter_context(_token_auth(options.address, options.log_file))
        _init_ray(options)
        session.callback(ray.shutdown)
        _restore_handlers(callers)
        yield


def _init_ray(options: SweepOptions) -> None:
    kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING,
                              "configure_logging": False, "include_dashboard": False}
    where = options.address or "this machine"
    try:
        with _native_stderr_to(options.log_file), _sigterm_blocked():
            if options.address:
                ray.init(address=options.address, **kwargs)
            else:
                ray.init(num_cpus=options.num_cpus, **kwargs)
    except _AUTH_ERRORS:  # a refusal `_token_auth` could not foresee (no probe ran)
        raise SetupError(f"Ray at {where} requires token authentication and took none from "
                         f"this machine: {_TOKEN_FIX}") from None
    except (ConnectionError, RuntimeError, ValueError) as problem:
        raise SetupError(f"cannot start or reach Ray at {where}: {str(problem).splitlines()[0]}"
                         " (start one with `ray start --head`, or leave --address out)") from None


@contextlib.contextmanager
def _sigterm_blocked() -> Iterator[None]:
    """SIGTERM held back from this thread while Ray starts its processes, which inherit the
    mask, as Ray itself holds SIGINT back from them: a SIGTERM to the whole process group
    (`timeout`, systemd, Slurm) then reaches the driver only, which stops the sweep the
    graceful way and shuts Ray down, instead of Ray's GCS and raylet dying under the running
    sweep (the driver then waited 60 s for the GCS and exited 1). A SIGTERM sent meanwhile is
    delivered when the block ends."""
    if not hasattr(signal, "pthread_sigmask"):  # Windows: no masks
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def _refuse_client_mode(address: str) -> None:
    """Ray Client runs the Tune driver, and with it the sink's callback, on the cluster:
    the copy there reports to a `_NullSink`, so nothing would reach the store."""
    if address.startswith("ray://"):
        raise SetupError(f"--address {address} is Ray Client mode, where the sweep's results "
                         "would not reach the store: run explorer on a node of the cluster with "
                         "--address auto (or --address HOST:PORT of the head)")


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast on a host:port nobody listens on: ray.init would wait for minutes."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return  # Ray's own lookup or its own error message
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as problem:
        reason = problem.strerror or str(problem) or type(problem).__name__
        raise SetupError(f"cannot reach Ray at {address}: {reason} (start one with "
                         "`ray start --head`, or leave --address out)") from None


# --- token authentication ----------------------------------------------------------------
#
# Ray (2.52 on) makes every call carry one shared token when RAY_AUTH_MODE=token. Ray turns
# that mode on by itself for a cluster it starts or finds (`ray.init()`, `--address auto`,
# `ray start --head` once ~/.ray/auth_token exists, and any local `ray.init()` writes it),
# never for an address it is given: there ray.init retries for 20 s, printing a refusal a
# second, and ends in "Failed to connect" without naming the token. So explorer asks the
# cluster first, and uses the token Ray finds here only if the cluster requires one.

_AUTH_ERRORS: tuple[type[Exception], ...] = tuple(  # empty before Ray 2.52: no tokens
    error for error in [getattr(ray.exceptions, "AuthenticationError", None)] if error)
_TOKEN_FIX = ("put the cluster's token (`ray get-auth-token` on the head prints it) in "
              "~/.ray/auth_token, or set RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH")


@contextlib.contextmanager
def _token_auth(address: str, log_file: Path | None) -> Iterator[None]:
    """Ray's token mode for this process while it is joined to `address`, if the cluster
    requires it; the caller's RAY_AUTH_MODE is back afterwards."""
    found = _cluster_address(address) if _AUTH_ERRORS else None
    if found is None:
        yield  # no cluster found for `auto`, or a Ray without tokens: ray.init says
        return
    address = found
    mode_on = _raylet("get_authentication_mode")() == _raylet("AuthenticationMode").TOKEN
    if not mode_on and not _refused(address, log_file):
        yield  # the cluster takes calls without a token
        return
    if not _token_found():
        why = "RAY_AUTH_MODE is token" if mode_on else \
            f"Ray at {address} requires token authentication"
        raise SetupError(f"{why} and this machine has no token: {_TOKEN_FIX}")
    with contextlib.nullcontext() if mode_on else _token_mode():
        if _refused(address, log_file):
            raise SetupError(f"Ray at {address} refused this machine's token: {_TOKEN_FIX}")
        if not mode_on:
            logging.getLogger(__name__).info(
                "Ray at %s requires token authentication: joined with the token Ray found on "
                "this machine (RAY_AUTH_MODE=token for this run)", address)
        yield


def _cluster_address(address: str) -> str | None:
    """The HOST:PORT `address` names: for `auto`, the cluster Ray finds on this machine
    (RAY_ADDRESS, or the last one started here), None where it finds none."""
    if address != "auto":
        return address
    from ray._private.services import canonicalize_bootstrap_address

    try:
        return canonicalize_bootstrap_address(address)
    except (ConnectionError, ValueError):
        return None


def _raylet(name: str) -> Any:
    """A name from Ray's native module: the token API has no Python stubs."""
    return getattr(importlib.import_module("ray._raylet"), name)


def _token_found() -> bool:
    """Whether Ray finds a token where it looks: RAY_AUTH_TOKEN, the file RAY_AUTH_TOKEN_PATH
    names, ~/.ray/auth_token (in that order)."""
    try:
        return bool(_raylet("AuthenticationTokenLoader").instance()
                    .has_token(ignore_auth_mode=True))
    except _AUTH_ERRORS as problem:  # RAY_AUTH_TOKEN_PATH names a missing or empty file
        reason = str(getattr(problem, "message", problem))
        raise SetupError(f"{reason}: point it at the cluster's token file, or unset it") from None


def _refused(address: str, log_file: Path | None) -> bool:
    """Whether the cluster turns this process away for its token (none, or not the
    cluster's): one call, answered at once."""
    try:
        with _native_stderr_to(log_file):  # Ray's C++ client prints the refusal there
            _raylet("GcsClient")(address=address)
    except _AUTH_ERRORS:
        return True
    except ray.exceptions.RayError:
        return False  # not about tokens: ray.init says what it is
    return False


@contextlib.contextmanager
def _token_mode() -> Iterator[None]:
    """RAY_AUTH_MODE=token in this process while the block runs; Ray's native config
    rereads the environment only when told to (as Ray does when it turns the mode on)."""
    reload = _raylet("Config").initialize
    try:
        with _environment({"RAY_AUTH_MODE": "token"}):
            reload("")
            yield
    finally:
        reload("")


@contextlib.contextmanager
def _native_stderr_to(log_file: Path | None) -> Iterator[None]:
    """Ray's C++ core writes its warnings to file descriptor 2, past sys.stderr: while Ray
    connects they go to the log, not over the terminal."""
    if log_file is None:
        yield
        return
    log_file.parent.mkdir(parents=True, exist_ok=True)
    saved = os.dup(2)
    try:
        with open(log_file, "ab") as stream:
            os.dup2(stream.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _quiet_ray_logging(log_file: Path | None) -> logging.Handler | None:
    """Send Ray's and Tune's log records, and the sweep's own, to a file instead of the
    terminal."""
    if log_file is None:
        return None
    log_file.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    for name in ("ray", "ray.tune", "ray.train", "ray.air", __name__):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.propagate = False
    logging.getLogger(__name__).setLevel(logging.INFO)  # how it joined, how long it took
    return handler


def check_cluster(options: SweepOptions) -> None:
    """Fail early if trials could never be placed or could not share checkpoints."""
    resources, asked = ray.cluster_resources(), options.resources
    if asked.gpus_per_trial > 0 and resources.get("GPU", 0) < asked.gpus_per_trial:
        raise SetupError(f"resources.gpus_per_trial is {asked.gpus_per_trial:g} but the Ray "
                         f"cluster has {resources.get('GPU', 0):g} GPUs; "
                         "set it to 0 to train on CPUs")
    if resources.get("CPU", 0) < asked.cpus_per_trial:
        raise SetupError(f"resources.cpus_per_trial is {asked.cpus_per_trial:g} but the Ray "
                         f"cluster has {resources.get('CPU', 0):g} CPUs")
    if options.address:
        check_shared_storage(options.runs_dir)


def check_shared_storage(runs_dir: Path) -> None:
    """Every node must see the runs folder, where checkpoints live."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    runs_dir.mkdir(parents=True, exist_ok=True)
    marker = runs_dir / f".shared-check-{uuid.uuid4().hex}"
    marker.write_text("explorer")

    @ray.remote(num_cpus=0)
    def sees(path: str) -> bool:
        return Path(path).exists()

    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        on_node = [NodeAffinitySchedulingStrategy(n["NodeID"], soft=False) for n in nodes]
        checks = [sees.options(scheduling_strategy=where).remote(str(marker.resolve()))
                  for where in on_node]
        blind = [n["NodeManagerAddress"] for n, ok in zip(nodes, ray.get(checks), strict=True)
                 if not ok]
    finally:
        marker.unlink(missing_ok=True)
    if blind:
        raise SetupError(f"the runs folder {runs_dir.resolve()} is not visible on Ray node(s) "
                         f"{', '.join(blind)}; pass --runs-dir on storage every node shares")


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
    with _tune_settings(), _stdout_to(options.log_file), ray_session(options):
        check_cluster(options)
        # Loaded before Ctrl-C is caught: a large folder or a download stops at once.
        shared = None if options.data is None else _shared_data(options.data, loaded)
        halt = Halt()
        with _stop_on_signals() as interrupted:
            stopping = Stopping(interrupted, halt, *stop)
            tuner = _tuner(strategy, sink, options, max_epochs, stopping, shared, halt)
            started = time.monotonic()
            tuner.fit()
        logging.getLogger(__name__).info("sweep took %.1f s%s", time.monotonic() - started,
                                         " (interrupted)" if interrupted.is_set() else "")
    if interrupted.is_set():
        raise interrupted.exception()
    if halt.is_set():
        raise SetupError(halt.reason)


class Interruption(threading.Event):
    """Set by the first SIGINT (Ctrl-C) or SIGTERM while a sweep runs; `signum` says which."""

    signum: int = 0

    def exception(self) -> KeyboardInterrupt:
        """What the driver raises once the sweep has stopped: Terminated for a SIGTERM."""
        return Terminated() if self.signum == signal.SIGTERM else KeyboardInterrupt()


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[Interruption]:
    """An event the first SIGINT or SIGTERM sets while the block runs, so the sweep stops the
    graceful way; a second one of either raises at once (KeyboardInterrupt, Terminated). Only
    the main thread can handle signals, so elsewhere the event stays clear.

    Entered after Ray has started (`ray_session` has put the caller's handlers back over
    Ray's by then)."""
    interrupted = Interruption()
    if threading.current_thread() is not threading.main_thread():
        yield interrupted
        return
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    at_once: dict[signal.Signals, Any] = {signal.SIGINT: signal.default_int_handler,
                               signal.SIGTERM: raise_terminated}

    def first_stop(signum: int, frame: Any) -> None:
        interrupted.signum = signum
        interrupted.set()
        for each, handler in at_once.items():
            signal.signal(each, handler)

    for signum in STOP_SIGNALS:
        signal.signal(signum, first_stop)
    try:
        yield interrupted
    finally:
        _restore_handlers(previous)


def _restore_handlers(handlers: Mapping[signal.Signals, Any]) -> None:
    for signum, handler in handlers.items():
        # None: a handler set outside Python, which Python cannot put back; the default.
        signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


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
        callbacks=[_Events(sink, searcher.suggested, halt)], verbose=0, log_to_file=True,
        stop=_StopAll(stopping),
    )
    # One copy of the data per node: with_parameters puts it in Ray's object store once,
    # and each worker maps it from there instead of loading its own.
    trainable = run_trial if shared is None else tune.with_parameters(run_trial, shared=shared)
    return tune.Tuner(tune.with_resources(trainable, resources), param_space={},
                      tune_config=tune_config, run_config=run_config)


def _trial_name(trial: Trial) -> str:
    return f"{_trial_key(trial)}-{trial.trial_id}"


def _tune_settings() -> contextlib.AbstractContextManager[None]:
    """TUNE_SETTINGS in the environment while a sweep runs, the caller's values after."""
    return _environment(TUNE_SETTINGS)


@contextlib.contextmanager
def _environment(settings: Mapping[str, str]) -> Iterator[None]:
    """`settings` in this process's environment while the block runs, the caller's after."""
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _stdout_to(log_file: Path | None) -> Iterator[None]:
    """Tune prints progress banners; they belong in the log, not over the live display."""
    if log_file is None:
        yield
        return
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "a", encoding="utf-8") as stream, \
            contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
        yield

