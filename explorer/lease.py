"""One driver per experiment: the lease `explorer run` holds while it works.

The lease is a row in the store (explorer/store: Writer.take_lease) naming its
holder: a random token, the host, the pid, when it started and when it last
said it was alive. A driver keeps it fresh from a background thread every
`interval` seconds and gives it back when it ends, however it ends short of
being killed. A second driver on a live experiment is refused (LeaseHeld,
exit 2). A holder that is gone is taken over at once, with a notice:

- on this host, when its pid is dead (a driver killed with kill -9);
- anywhere, when it has not said it was alive for `STALE_INTERVALS`
  intervals (a machine that died, a pid reused by another program).

A driver taken over that way while it still runs (a laptop suspended for a
while) learns it at its next heartbeat: its `Lease.lost` is set, its sweep
stops, and it ends with LeaseLost (exit 2) naming the new holder.

Read-only commands (status, export, dashboard, report) never take it.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from explorer.store import ExperimentRecord, StoreError
from explorer.store.records import Holder
from explorer.store.retry import RetryPolicy, call_with_retry, explain, reason, transient

if TYPE_CHECKING:  # `explorer status` reads holder_stale without importing the writer
    from explorer.store import Writer

__all__ = [
    "STALE_INTERVALS",
    "Lease",
    "LeaseLost",
    "driver_lease",
    "holder_gone",
    "holder_stale",
    "pid_alive",
]

# A holder silent for this many heartbeat intervals is gone.
STALE_INTERVALS = 3


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine (signal 0 checks, sends
    nothing); one we may not signal exists too."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder_gone(holder: Holder, interval: float, host: str,
                now: datetime | None = None) -> bool:
    """The rule above: a dead pid on this host, or silence for STALE_INTERVALS intervals."""
    if holder.host == host and not pid_alive(holder.pid):
        return True
    silent = ((now or datetime.now(UTC)) - holder.heartbeat_at).total_seconds()
    return silent > STALE_INTERVALS * interval


def holder_stale(holder: Holder, host: str) -> bool:
    """For display (`explorer status`): a holder on this host whose pid is gone (a driver
    killed with SIGKILL, or with its whole process group). The stored lease is left as it
    is: the next driver takes it over. A holder elsewhere is judged by its heartbeat, at
    the interval the next driver uses, only when that driver runs."""
    return holder.host == host and not pid_alive(holder.pid)


class LeaseLost(StoreError):
    """Another driver took the lease over from this one, which must stop."""


class Lease:
    """The lease a driver holds: `lost` is set, from the heartbeat thread, once another
    driver has taken it over (`taken_by`, when the store still names it)."""

    def __init__(self, experiment: ExperimentRecord) -> None:
        self.experiment = experiment
        self.lost = threading.Event()
        self.taken_by: Holder | None = None

    def check(self) -> None:
        """Raise LeaseLost, naming the new holder, if the lease was lost."""
        if not self.lost.is_set():
            return
        who = self.taken_by.describe() if self.taken_by is not None else "another driver"
        raise LeaseLost(
            f"experiment {self.experiment.name!r} v{self.experiment.version} was taken over by "
            f"{who}, as this driver was silent for more than {STALE_INTERVALS} heartbeats (a "
            "suspended or overloaded machine?); this run stopped its sweep and that driver runs "
            "the rest (`explorer status` shows it)")


@contextmanager
def driver_lease(store: Writer, experiment: ExperimentRecord, *, interval: float,
                 notice: Callable[[str], None],
                 retry: RetryPolicy | None = None) -> Iterator[Lease]:
    """Hold `experiment`'s lease for this process while the block runs.

    Raises LeaseHeld (a StoreError) at once when a live driver holds it; tells
    `notice` in one line when it takes over from one that is gone. The block
    watches the yielded Lease to learn that another driver took it over. Taking
    the lease rides out a store outage within `retry`; giving it back is tried
    once: a store still unreachable then (the block ended because it was) keeps
    it, and the next driver takes it over as gone (at once on this host).
    """
    token, host, pid = uuid.uuid4().hex, socket.gethostname(), os.getpid()
    previous = call_with_retry(
        lambda: store.take_lease(experiment, token, host, pid,
                                 gone=lambda h: holder_gone(h, interval, host)),
        retry or RetryPolicy(), store.where, "the experiment's lease", on_outage=notice)
    if previous is not None:
        notice(f"took over experiment {experiment.name!r} v{experiment.version} from "
               f"{previous.describe()}, which is gone; its running trials go back to pending")
    stop = threading.Event()
    lease = Lease(experiment)
    beat = threading.Thread(target=_keep_alive, args=(store, lease, token, interval,
                                                      stop, notice),
                            name="explorer-lease", daemon=True)
    beat.start()
    try:
        yield lease
    finally:
        stop.set()
        beat.join()
        try:
            store.release_lease(experiment.id, token)
        except Exception as problem:  # the store's fault, not this driver's: say so, go on
            if not transient(problem) and explain(problem, store.where, "") is None:
                raise
            notice(f"could not give the lease back ({reason(problem)}): the next run of "
                   "this experiment takes it over")


def _keep_alive(store: Writer, lease: Lease, token: str, interval: float,
                stop: threading.Event, notice: Callable[[str], None]) -> None:
    experiment_id = lease.experiment.id
    while not stop.wait(interval):
        try:
            held = store.heartbeat(experiment_id, token)
        except Exception as problem:  # a busy or unreachable database: try again next time
            notice(f"could not renew the experiment's lease ({type(problem).__name__}); "
                   "retrying")
            continue
        if not held:
            with suppress(Exception):  # who took it, if the store still says
                lease.taken_by = store.leases().get(experiment_id)
            lease.lost.set()
            notice("another driver took this experiment's lease over (this one was silent "
                   "too long): stopping this run's sweep")
            return
