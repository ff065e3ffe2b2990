"""Where results came from: the code's revision and package versions, and what changed.

An experiment row records these when it is created, and `differing_keys` names
what differs between a stored spec and a new one (the SpecChanged message).
"""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "differing_keys",
    "environment_info",
    "git_revision",
    "package_versions",
]

# The explorer package (explorer/), whose parent is the checkout's top level.
_PACKAGE_DIR = Path(__file__).resolve().parents[1]


def git_revision(package_dir: Path | None = None) -> str | None:
    """HEAD of the explorer checkout this code runs from, or None.

    Only trusted when the repository's top level is the parent of the package
    (an installed copy inside some other repository, e.g. a venv in a project,
    must not report that project's revision). Never raises, never hangs.
    """
    here = (package_dir or _PACKAGE_DIR).resolve()
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--show-toplevel", "HEAD"], cwd=here, capture_output=True,
            text=True, timeout=5, check=False,
        )
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    lines = done.stdout.split()
    if done.returncode != 0 or len(lines) != 2:
        return None
    top, rev = lines
    if Path(top).resolve() != here.parent:
        return None
    return rev


def package_versions(names: Sequence[str] = ("explorer", "torch", "ray", "optuna",
                                             "sqlalchemy", "pandas")) -> dict[str, str | None]:
    """Installed versions from package metadata, without importing the packages."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def environment_info() -> dict[str, Any]:
    """What an experiment row records about the code that ran it."""
    return {"git_revision": git_revision(), "package_versions": package_versions()}


def differing_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted paths where two JSON documents differ (lists compare as a whole).

    A key present on one side only counts as differing; the result is sorted
    so the message is stable.
    """
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in old or key not in new:
                out.append(path)
            else:
                out.extend(differing_keys(old[key], new[key], path))
        return out
    return [] if old == new else [prefix or "(root)"]
