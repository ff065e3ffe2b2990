"""Errors a person can act on that more than one layer raises or catches.

Each message is one line naming the thing and what to do; the CLI prints it
and exits with code 2. Defined here, below every layer, so that catching one
needs none of the heavy modules that raise it (ray, for a sweep that cannot
start).
"""

from __future__ import annotations

from typing import Any, NoReturn


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (what `timeout`, systemd, Slurm and Kubernetes send): handled like a
    Ctrl-C, exit 143. A KeyboardInterrupt, so every path that cleans up after a Ctrl-C (the
    lease given back, no half-written file) cleans up after it too."""


def raise_terminated(signum: int, frame: Any) -> NoReturn:
    """A SIGTERM handler: raise Terminated in the main thread, as Python raises
    KeyboardInterrupt for a SIGINT."""
    raise Terminated


class SetupError(Exception):
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
