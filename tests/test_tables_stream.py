"""TableStream: batches streamed to CSV, Parquet and JSON read back as write_table's tables.

The reference is the in-memory path: enumerate_spec's candidates through
candidates_frame and write_table (pandas writes every format). The streamed
files must hold the same rows, values and column order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_space_stream import random_spec

from explorer.columns import round_like_python
from explorer.space import CandidateStream, enumerate_spec
from explorer.spec import Spec
from explorer.tables import ROW_KINDS, TableStream, candidates_frame, write_table


@pytest.fixture(scope="module")
def spec() -> Spec:
    rng = np.random.default_rng(4)
    while True:
        found = random_spec(rng)  # one with a solved space and an unsolved one ("b")
        if found is not None and found.spaces["a"].solve is not None:
            solved = {c.solved for c in enumerate_spec(found).candidates}
            if len(enumerate_spec(found).candidates) > 40 and len(solved) == 2:
                return found


def stream_to(spec: Spec, path: Path) -> int:
    with TableStream(path) as table:
        for batch in CandidateStream(spec, chunk_points=5):
            table.write(batch)
    return table.rows


def as_lists(frame: pd.DataFrame) -> pd.DataFrame:
    """Parquet gives per-stage lists back as arrays, and a column of nulls comes back as
    strings or objects by who wrote it: compare lists as lists, missing as None."""
    frame = frame.copy()
    for name, kind in ROW_KINDS.items():
        if kind == "list" and not isinstance(frame[name].iloc[0], str):
            frame[name] = frame[name].map(lambda v: [int(x) for x in v])
        elif kind == "str":
            frame[name] = [None if pd.isna(v) else v for v in frame[name]]
    return frame


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".json"])
def test_streamed_tables_equal_the_in_memory_ones(spec: Spec, tmp_path: Path, suffix: str) -> None:
    expected_path = tmp_path / f"expected{suffix}"
    write_table(candidates_frame(enumerate_spec(spec).candidates), expected_path)
    rows = stream_to(spec, tmp_path / f"streamed{suffix}")
    read = {".csv": pd.read_csv, ".parquet": pd.read_parquet, ".json": pd.read_json}[suffix]
    expected = as_lists(read(expected_path))
    streamed = as_lists(read(tmp_path / f"streamed{suffix}"))
    assert rows == len(expected) > 40
    assert list(streamed.columns) == list(expected.columns) == list(ROW_KINDS)
    pd.testing.assert_frame_equal(streamed, expected, check_dtype=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"expected{suffix}", f"streamed{suffix}"])  # no scratch files left


def test_row_kinds_name_candidate_row_columns_in_order(spec: Spec) -> None:
    assert list(enumerate_spec(spec).candidates[0].row()) == list(ROW_KINDS)


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".json"])
def test_an_empty_stream_writes_a_readable_empty_table(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"empty{suffix}"
    with TableStream(path):
        pass
    read = {".csv": pd.read_csv, ".parquet": pd.read_parquet, ".json": pd.read_json}[suffix]
    assert len(read(path)) == 0


def test_a_failed_stream_leaves_no_file_and_keeps_the_old_one(spec: Spec, tmp_path: Path) -> None:
    path = tmp_path / "table.csv"
    path.write_text("old\n")
    with pytest.raises(KeyboardInterrupt), TableStream(path) as table:
        for batch in CandidateStream(spec, chunk_points=5):
            table.write(batch)
            raise KeyboardInterrupt
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]


def test_rounding_is_pythons_round() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0, 50, 20_000),
                             (rng.integers(-10**6, 10**6, 20_000) + 0.5) / 1000,  # halves
                             [0.0, -0.0, 2.675, -99.9995, 1e15 + 0.1234]])
    got = round_like_python(values, 3)
    expected = [round(v, 3) for v in values.tolist()]
    assert got.tolist() == expected
    assert np.array_equal(np.signbit(got), np.signbit(np.array(expected)))
