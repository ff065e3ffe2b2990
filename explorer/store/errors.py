"""The store's errors: one line each, saying what the user can do about it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from explorer.errors import ExplorerError

if TYPE_CHECKING:
    from explorer.store.records import Holder

__all__ = [
    "LeaseHeld",
    "SpecChanged",
    "StoreError",
]


class StoreError(ExplorerError):
    """A problem with the results database the user can act on; one line."""


class SpecChanged(StoreError):
    """The experiment exists with another spec; rerun with a new version or name."""

    def __init__(self, name: str, differing_keys: list[str], version: int | None = None) -> None:
        self.name = name
        self.differing_keys = list(differing_keys)
        self.version = version
        where = f"version {version}; " if version is not None else ""
        keys = ", ".join(self.differing_keys[:8]) or "(formatting)"
        super().__init__(
            f"experiment {name!r} already exists in the store with a different spec "
            f"({where}differs at: {keys}); rename it, or pass --new-version to keep both"
        )


class LeaseHeld(StoreError):
    """Another driver, alive, holds the experiment's lease: this one must not run it."""

    def __init__(self, experiment: str, holder: Holder, heartbeat_age: float) -> None:
        self.holder = holder
        super().__init__(
            f"experiment {experiment} is being run by {holder.describe()} (last heartbeat "
            f"{heartbeat_age:.0f} s ago); wait for it to finish or stop that process: a driver "
            "that is gone is taken over automatically"
        )
