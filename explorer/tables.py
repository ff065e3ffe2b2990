"""Candidates as a pandas table, and writing tables to CSV, Parquet or JSON atomically."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from explorer.files import atomic_write

if TYPE_CHECKING:
    from explorer.space import Candidate

TABLE_SUFFIXES = (".csv", ".parquet", ".json")


def candidates_frame(candidates: Iterable[Candidate]) -> pd.DataFrame:
    return pd.DataFrame([c.row() for c in candidates])


def write_table(frame: pd.DataFrame, path: Path) -> None:
    """Write by the file's suffix; lists become JSON text in CSV, stay lists elsewhere."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        flat = frame.copy()
        for column in flat.columns:
            if flat[column].map(lambda v: isinstance(v, list | tuple)).any():
                flat[column] = flat[column].map(lambda v: "[" + ",".join(map(str, v)) + "]")
        atomic_write(path, lambda tmp: flat.to_csv(tmp, index=False))
    elif suffix == ".parquet":
        atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))
    elif suffix == ".json":
        atomic_write(path, lambda tmp: frame.to_json(tmp, orient="records", indent=2))
    else:
        raise ValueError(f"unknown table format {suffix!r}; use {', '.join(TABLE_SUFFIXES)}")
