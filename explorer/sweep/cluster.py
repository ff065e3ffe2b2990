"""The Ray connection: Ray on this machine or a cluster joined (a Ray Client address
refused, an unreachable one named at once), and checks that trials can be placed and can
share checkpoints."""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ray

from explorer.errors import SetupError
from explorer.sweep.auth import AUTH_ERRORS, TOKEN_FIX, token_auth
from explorer.sweep.process import (
    STOP_SIGNALS,
    native_stderr_to,
    quiet_ray_logging,
    restore_handlers,
    sigterm_blocked,
)
from explorer.sweep.protocol import SweepOptions

__all__ = ["check_cluster", "ray_session"]


@contextlib.contextmanager
def ray_session(options: SweepOptions) -> Iterator[None]:
    """Ray on this machine (started and stopped here) or an existing cluster.

    A Ray already started by the caller (a test session) is used and left running.
    A cluster that requires token authentication is joined with the token Ray finds
    on this machine (see `token_auth`).
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
        session.callback(restore_handlers, callers)
        log = quiet_ray_logging(options.log_file)
        if log is not None:
            session.callback(log.close)
        if options.address:
            session.enter_context(token_auth(options.address, options.log_file))
        _init_ray(options)
        session.callback(ray.shutdown)
        restore_handlers(callers)
        yield


def _init_ray(options: SweepOptions) -> None:
    kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING,
                              "configure_logging": False, "include_dashboard": False}
    where = options.address or "this machine"
    try:
        with native_stderr_to(options.log_file), sigterm_blocked():
            if options.address:
                ray.init(address=options.address, **kwargs)
            else:
                ray.init(num_cpus=options.num_cpus, **kwargs)
    except AUTH_ERRORS:  # a refusal `token_auth` could not foresee (no probe ran)
        raise SetupError(f"Ray at {where} requires token authentication and took none from "
                         f"this machine: {TOKEN_FIX}") from None
    except (ConnectionError, RuntimeError, ValueError) as problem:
        raise SetupError(f"cannot start or reach Ray at {where}: {str(problem).splitlines()[0]}"
                         " (start one with `ray start --head`, or leave --address out)") from None


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
        _check_shared_storage(options.runs_dir)


def _check_shared_storage(runs_dir: Path) -> None:
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
