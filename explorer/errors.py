"""Errors a person can act on, and the exit codes they end a command with.

Every error a user can act on is an ExplorerError: its message is one line naming
the thing and what to do, and its class carries the exit code. The CLI catches the
base once and prints the message as it is. Defined here, below every layer, so that
catching one needs none of the heavy modules that raise it (ray, for a sweep that
cannot start).
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any, ClassVar, NoReturn

__all__ = [
    "EXIT_MEANINGS",
    "EXTRAS",
    "CheckFailed",
    "ExitCode",
    "ExplorerError",
    "MissingExtra",
    "SetupError",
    "Terminated",
    "UsageError",
    "raise_terminated",
    "require_extra",
]


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (what `timeout`, systemd, Slurm and Kubernetes send): handled like a
    Ctrl-C, exit 143. A KeyboardInterrupt, so every path that cleans up after a Ctrl-C (the
    lease given back, no half-written file) cleans up after it too."""


def raise_terminated(signum: int, frame: Any) -> NoReturn:
    """A SIGTERM handler: raise Terminated in the main thread, as Python raises
    KeyboardInterrupt for a SIGINT."""
    raise Terminated


class ExitCode(IntEnum):
    """The `explorer` command's exit codes (docs/ARCHITECTURE.md lists them too)."""

    OK = 0
    BUG = 1
    SETUP = 2
    FAILED = 3
    INTERRUPTED = 130
    TERMINATED = 143


# What each code means, for `explorer --help` and the docs.
EXIT_MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "success",
    ExitCode.BUG: "an internal error (a bug; EXPLORER_DEBUG=1 shows the traceback)",
    ExitCode.SETUP: "a bad spec, bad arguments or a set-up problem (a missing extra too)",
    ExitCode.FAILED: "some trials failed",
    ExitCode.INTERRUPTED: "interrupted (the same command again resumes)",
    ExitCode.TERMINATED: "terminated by SIGTERM, handled like a Ctrl-C (the same again)",
}


class ExplorerError(Exception):
    """A problem the user can act on: one line for people, and the command's exit code."""

    exit_code: ClassVar[ExitCode] = ExitCode.SETUP
    where: str | None = None  # what the problem is about, when the raiser did not know it

    def about(self, where: str) -> ExplorerError:
        """This error said of `where` (the spec file, the trial): for a caller to re-raise."""
        self.where = where if self.where is None else f"{where}: {self.where}"
        return self

    def report(self) -> str:
        """What the command prints on stderr."""
        return f"error: {self.where}: {self}" if self.where else f"error: {self}"


class UsageError(ExplorerError):
    """A bad argument or option of a command."""


class CheckFailed(ExplorerError):
    """A check the command ran found failures (fvcore's counts against the formulas)."""

    exit_code = ExitCode.FAILED


class SetupError(ExplorerError):
    """The sweep cannot start (no cluster, storage not shared, no GPU); one line for people."""


# What each optional extra of pyproject.toml installs, by import name: a command checks the
# modules it needs before importing any, so a core install (`pip install explorer`: validate,
# enumerate, count, export) says which extra to add instead of failing with a traceback.
EXTRAS: dict[str, tuple[str, ...]] = {
    "train": ("torch", "PIL", "sklearn"),
    "sweep": ("ray", "optuna", "torch", "PIL", "sklearn"),
    "dashboard": ("streamlit", "plotly", "scipy"),
    "fvcore": ("fvcore", "torch"),
    "postgres": ("psycopg",),
    "tracking": ("tensorboard", "mlflow"),
}


class MissingExtra(SetupError):
    """A command needs an optional dependency that is not installed; names the extra."""

    def __init__(self, what: str, module: str, extra: str) -> None:
        super().__init__(f"{what} needs {module}, which is not installed: "
                         f"pip install 'explorer[{extra}]'")
        self.module = module
        self.extra = extra


def require_extra(extra: str, what: str, modules: tuple[str, ...] | None = None) -> None:
    """Raise MissingExtra unless every module of `extra` (or just `modules`) can be imported.

    Looked up with importlib.util.find_spec, which imports nothing (a top-level name's
    spec is found without running the package).
    """
    import importlib.util

    for module in modules if modules is not None else EXTRAS[extra]:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a broken install, or sys.modules[module] = None
            found = False
        if not found:
            raise MissingExtra(what, module, extra)
