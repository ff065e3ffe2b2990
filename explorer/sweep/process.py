"""What a sweep changes in its own process while it runs, and puts back afterwards: the
environment, where stdout, file descriptor 2 and log records go, the signal handlers and
mask. Nothing here imports ray."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from explorer.errors import Terminated, raise_terminated

__all__ = [
    "STOP_SIGNALS", "Interruption", "environment", "native_stderr_to", "quiet_ray_logging",
    "restore_handlers", "sigterm_blocked", "stdout_to", "stop_on_signals",
]


@contextlib.contextmanager
def environment(settings: Mapping[str, str]) -> Iterator[None]:
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
def stdout_to(log_file: Path | None) -> Iterator[None]:
    """Tune prints progress banners; they belong in the log, not over the live display."""
    if log_file is None:
        yield
        return
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "a", encoding="utf-8") as stream, \
            contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
        yield


@contextlib.contextmanager
def native_stderr_to(log_file: Path | None) -> Iterator[None]:
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


def quiet_ray_logging(log_file: Path | None) -> logging.Handler | None:
    """Send Ray's and Tune's log records, and the sweep's own, to a file instead of the
    terminal."""
    if log_file is None:
        return None
    log_file.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    for name in ("ray", "ray.tune", "ray.train", "ray.air", __package__):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.propagate = False
    logging.getLogger(__package__).setLevel(logging.INFO)  # how it joined, how long it took
    return handler


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interruption(threading.Event):
    """Set by the first SIGINT (Ctrl-C) or SIGTERM while a sweep runs; `signum` says which."""

    signum: int = 0

    def exception(self) -> KeyboardInterrupt:
        """What the driver raises once the sweep has stopped: Terminated for a SIGTERM."""
        return Terminated() if self.signum == signal.SIGTERM else KeyboardInterrupt()


@contextlib.contextmanager
def stop_on_signals() -> Iterator[Interruption]:
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
        restore_handlers(previous)


def restore_handlers(handlers: Mapping[signal.Signals, Any]) -> None:
    for signum, handler in handlers.items():
        # None: a handler set outside Python, which Python cannot put back; the default.
        signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


@contextlib.contextmanager
def sigterm_blocked() -> Iterator[None]:
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
