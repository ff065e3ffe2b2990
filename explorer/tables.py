"""Candidates as a pandas table, and writing tables to CSV, Parquet or JSON atomically.

Two ways in: `write_table` writes a DataFrame held in memory; `TableStream`
writes an enumeration's batches as they come (pyarrow for CSV and Parquet),
so memory stays flat in the number of rows. Both write beside the target
and rename at the end: an interrupted write leaves no file behind.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from explorer.columns import COLUMNS
from explorer.files import atomic_path, atomic_write

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from explorer.space import Batch, Candidate

__all__ = [
    "ROW_KINDS",
    "TABLE_SUFFIXES",
    "TableStream",
    "candidates_frame",
    "write_frames",
    "write_table",
]

TABLE_SUFFIXES = (".csv", ".parquet", ".json")

# Candidate.row()'s columns and how a table holds each: str, int, float or a per-stage list.
ROW_KINDS = {column.name: column.kind for column in COLUMNS}


def candidates_frame(candidates: Iterable[Candidate]) -> pd.DataFrame:
    import pandas as pd

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


def write_frames(frames: Iterable[pd.DataFrame], path: Path,
                 lists: Collection[str] = ()) -> int:
    """write_table for a table that comes in chunks (each with the same columns), its
    memory flat in the number of rows; returns the rows written.

    The file holds what write_table writes for the chunks' concatenation (CSV and
    JSON text per value alike; Parquet the same columns and values, in row groups).
    `lists` names the columns of per-stage lists, so a Parquet column that is empty
    in the first chunk still gets its type; other empty columns are text.
    """
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise ValueError(f"unknown table format {suffix!r}; use {', '.join(TABLE_SUFFIXES)}")
    rows = 0
    with atomic_path(path) as tmp:
        if suffix == ".parquet":
            rows = _write_parquet(frames, tmp, lists)
        else:
            with tmp.open("w", encoding="utf-8", newline="") as file:
                if suffix == ".json":
                    file.write("[")
                for i, frame in enumerate(frames):
                    if suffix == ".csv":
                        _lists_as_text(frame).to_csv(file, index=False, header=i == 0)
                    elif len(frame):
                        text = frame.to_json(orient="records", indent=2)
                        file.write(("," if rows else "") + text.strip()[1:-1].rstrip())
                    rows += len(frame)
                if suffix == ".json":
                    file.write("\n]" if rows else "]")
    return rows


def _lists_as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """Per-stage lists as "[a,b,c]" (missing as empty), for CSV."""
    flat = frame.copy()
    for column in flat.columns:
        if flat[column].dtype == object and flat[column].map(
                lambda v: isinstance(v, list | tuple)).any():
            flat[column] = flat[column].map(
                lambda v: "[" + ",".join(map(str, v)) + "]" if isinstance(v, list | tuple)
                else v)
    return flat


def _write_parquet(frames: Iterable[pd.DataFrame], tmp: Path, lists: Collection[str]) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer, schema, rows = None, None, 0
    try:
        for frame in frames:
            if schema is None:
                found = pa.Schema.from_pandas(frame, preserve_index=False)
                for i, field in enumerate(found):
                    if pa.types.is_null(field.type):  # nothing to tell its type by yet
                        kind = pa.list_(pa.int64()) if field.name in lists else pa.string()
                        found = found.set(i, field.with_type(kind))
                schema = found
                writer = pq.ParquetWriter(str(tmp), schema)
            assert writer is not None
            writer.write_table(pa.Table.from_pandas(frame, schema=schema,
                                                    preserve_index=False))
            rows += len(frame)
    finally:
        if writer is not None:
            writer.close()
    return rows


def _list_text(values: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Rows of a (n, stages) array as "[a,b,c]": the distinct texts and each row's index."""
    from explorer.space import distinct_rows

    unique, inverse = distinct_rows(values)
    return ["[" + ",".join(map(str, row)) + "]" for row in unique.tolist()], inverse


def _arrow_table(batch: Batch, *, lists_as_text: bool) -> pa.Table:
    import pyarrow as pa

    columns: dict[str, Any] = {}
    n = len(batch)
    for column in COLUMNS:
        name, kind, value = column.name, column.kind, column.of_batch(batch)
        if kind == "list" and lists_as_text:
            # Each distinct text built once; arrow repeats it (a dictionary decoded in C++).
            texts, inverse = _list_text(value)
            columns[name] = pa.DictionaryArray.from_arrays(
                pa.array(inverse.astype(np.int32)), pa.array(texts, type=pa.string())
            ).cast(pa.string())
        elif kind == "list":
            stages = value.shape[1]
            offsets = pa.array(np.arange(0, value.size + 1, stages, dtype=np.int32))
            columns[name] = pa.ListArray.from_arrays(
                offsets, pa.array(np.ascontiguousarray(value).reshape(-1), type=pa.int64()))
        elif kind == "str" and not isinstance(value, list):  # one value for the whole batch
            columns[name] = pa.nulls(n, pa.string()) if value is None else pa.repeat(
                pa.scalar(value, pa.string()), n)
        else:
            kinds = {"str": pa.string(), "int": pa.int64(), "float": pa.float64()}
            columns[name] = pa.array(value, type=kinds[kind])
    return pa.table(columns)


class TableStream:
    """Rows written to `path` batch by batch, by its suffix; the file appears only when closed.

    Use it as a context manager: leaving the block by an exception (Ctrl-C
    included) deletes the scratch file and leaves whatever was at `path` as it was.
    """

    def __init__(self, path: Path) -> None:
        suffix = path.suffix.lower()
        if suffix not in TABLE_SUFFIXES:
            raise ValueError(f"unknown table format {suffix!r}; use {', '.join(TABLE_SUFFIXES)}")
        self.path, self.suffix = path, suffix
        self.rows = 0
        self._writer: Any = None
        self._file: IO[str] | None = None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> TableStream:
        self._tmp = self._stack.enter_context(atomic_path(self.path))
        return self

    def write(self, batch: Batch) -> None:
        if self.suffix == ".json":
            self._write_json(batch)
        elif len(batch):
            table = _arrow_table(batch, lists_as_text=self.suffix == ".csv")
            self._open(table.schema).write_table(table)
        self.rows += len(batch)

    def _open(self, schema: pa.Schema) -> Any:
        if self._writer is None:
            if self.suffix == ".csv":
                import pyarrow.csv as csv

                self._writer = csv.CSVWriter(str(self._tmp), schema)
            else:
                import pyarrow.parquet as pq

                self._writer = pq.ParquetWriter(str(self._tmp), schema)
        return self._writer

    def _json_file(self) -> IO[str]:
        """The scratch file, opened and the array begun on first use."""
        if self._file is None:
            self._file = self._stack.enter_context(self._tmp.open("w", encoding="utf-8"))
            self._file.write("[")
        return self._file

    def _write_json(self, batch: Batch) -> None:
        file = self._json_file()
        for i, row in enumerate(batch.rows()):
            file.write(("\n" if self.rows + i == 0 else ",\n") + json.dumps(row))

    def _finish(self) -> None:
        if self.suffix == ".json":
            file = self._json_file()
            file.write("\n]\n" if self.rows else "]\n")
            file.close()
        elif self._writer is None:
            self._open(_empty_schema(lists_as_text=self.suffix == ".csv"))
        if self._writer is not None:
            self._writer.close()

    def __exit__(self, kind: object, value: object, traceback: object) -> None:
        try:
            if kind is None:
                self._finish()
        finally:
            if self._writer is not None and kind is not None:
                with contextlib.suppress(Exception):
                    self._writer.close()
            self._stack.__exit__(kind, value, traceback)  # type: ignore[arg-type]


def _empty_schema(*, lists_as_text: bool) -> pa.Schema:
    import pyarrow as pa

    types = {"str": pa.string(), "int": pa.int64(), "float": pa.float64(),
             "list": pa.string() if lists_as_text else pa.list_(pa.int64())}
    return pa.schema([(name, types[kind]) for name, kind in ROW_KINDS.items()])

