"""The store's errors: one line each, saying what the user can do about it."""

from __future__ import annotations


class StoreError(Exception):
    """A problem with the results database the user can act on; one line."""


class SpecChanged(StoreError):
    """The experiment exists with another spec; rerun with a new version or name."""

    def __init__(self, name: str, differing_keys: list[str], version: int | None = None) -> None:
        self.name = name
        self.differing_keys = list(differing_keys)
        self.version = version
        where = f" (version {version})" if version is not None else ""
        super().__init__(
            f"experiment {name!r}{where} already exists with a different spec; changed: "
            f"{', '.join(self.differing_keys)}. Rerun with --new-version to keep both side by "
            "side, or give the experiment a new name"
        )
