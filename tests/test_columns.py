"""The places a candidate column reaches agree with explorer/columns.py's table.

Each column is declared once; these tests hold what derives from it to the
declaration through the real components: a row written to the store and read
back in the trials frame, the file `explorer enumerate` writes, the terminal
table's columns, the store's SQL types, and the params tracking logs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
from conftest import tiny_spec
from typer.testing import CliRunner

from explorer.arch import Arch, Stage
from explorer.cli import app
from explorer.columns import BY_NAME, COLUMNS, shown_columns, stored_order
from explorer.complexity import count
from explorer.space import Candidate, enumerate_spec
from explorer.spec import load_spec
from explorer.store import STAGE_LIST_COLUMNS, Writer
from explorer.store.schema import CANDIDATE_FIELDS, LIST_FIELDS, candidate_table
from explorer.tables import ROW_KINDS


def _per_stage_candidate() -> Candidate:
    """A network whose stages differ in C and d (as a sampled space draws them), solved
    for d, so no per-stage column equals stage 1's value repeated."""
    stages = tuple(Stage(depth=n, width=w, cardinality=c, bottleneck_width=d, stride=s)
                   for n, w, c, d, s in ((1, 64, 2, 8, 1), (2, 128, 4, 16, 2),
                                         (3, 256, 8, 4, 2)))
    arch = Arch(template="cifar", stem_width=16, stages=stages, block="fused")
    cost = count(arch, 32, 10)
    base = count(Arch(template="cifar", stem_width=16, stages=stages[:2]), 32, 10)
    return Candidate("sampled", arch, cost, base, solved="bottleneck_width")


def _same(read: Any, written: Any) -> bool:
    if isinstance(written, list):
        return read == tuple(written)
    if written is None:
        return read is None or (isinstance(read, float) and math.isnan(read))
    return bool(read == written)


def test_every_column_reads_back_from_the_store_as_the_row_holds_it(tmp_path: Path) -> None:
    spec = load_spec(tiny_spec(tmp_path))
    candidates = [*enumerate_spec(spec).candidates, _per_stage_candidate()]
    with Writer.open(tmp_path / "store.db") as store:
        exp = store.create_or_get_experiment("cols", "name: cols\n", "{}", {}).id
        store.add_candidates(exp, candidates)
        store.add_trials(exp, [(f"t{i}", c.key, 0) for i, c in enumerate(candidates)])
        frame = store.trials_frame(["cols"])
    assert set(BY_NAME) <= set(frame.columns)
    by_key = {c.key: c.row() for c in candidates}
    for read in frame.to_dict("records"):
        written = by_key[read["key"]]
        wrong = [name for name in BY_NAME if not _same(read[name], written[name])]
        assert not wrong, (read["key"], {n: (read[n], written[n]) for n in wrong})
    # The per-stage lists, longhand: C·d per stage, and each stage's C and d.
    sampled = frame[frame["space"] == "sampled"].iloc[0]
    assert sampled["group_widths"] == (16, 64, 32)
    assert (sampled["cardinalities"], sampled["bottleneck_widths"]) == ((2, 4, 8), (8, 16, 4))
    assert (sampled["cardinality"], sampled["bottleneck_width"]) == (2, 8)
    assert [n for n in frame.columns if n in STAGE_LIST_COLUMNS] == list(STAGE_LIST_COLUMNS)


def test_the_store_keeps_each_column_as_declared() -> None:
    sql = {"text": "VARCHAR", "int": "INTEGER", "bigint": "BIGINT", "float": "FLOAT",
           "json": "TEXT", "identity": "VARCHAR"}
    stage = json.loads(json.dumps(_per_stage_candidate().arch.canonical()))["stages"][0]
    for column in COLUMNS:
        if column.stored == "record":
            assert column.record_field in stage and column.name not in candidate_table.c
        else:
            assert str(candidate_table.c[column.name].type).startswith(sql[column.stored])
    assert set(CANDIDATE_FIELDS) | set(LIST_FIELDS) == {
        c.name for c in COLUMNS if c.stored not in ("identity", "record")}
    assert {c.name for c in stored_order()} == {c.name for c in COLUMNS
                                                if c.stored != "identity"}


def test_the_enumerate_file_and_terminal_table_show_the_declared_columns(
        tmp_path: Path) -> None:
    out = tmp_path / "c.csv"
    result = CliRunner().invoke(app, ["enumerate", str(tiny_spec(tmp_path)), "-o", str(out)])
    assert result.exit_code == 0, result.output
    written = pd.read_csv(out)
    assert list(written.columns) == [c.name for c in COLUMNS] == list(ROW_KINDS)
    for per_stage in (False, True):
        shown = shown_columns(per_stage)
        assert {c.name for c in shown} <= set(written.columns)
        assert len({c.header for c in shown}) == len(shown)
        lists = {c.first_of for c in COLUMNS if c.first_of is not None}
        scalars = {c.name for c in COLUMNS if c.first_of is not None}
        names = {c.name for c in shown}
        assert names >= (lists if per_stage else scalars)
        assert not names & (scalars if per_stage else lists)


def test_tracking_logs_the_declared_columns() -> None:
    from explorer.tracking import ARCH_PARAMS

    assert set(ARCH_PARAMS) == {c.name for c in COLUMNS if c.tracked}
    assert all(BY_NAME[name].stored != "identity" for name in ARCH_PARAMS)


def test_a_stage_one_column_is_the_first_of_its_list() -> None:
    row = _per_stage_candidate().row()
    for column in COLUMNS:
        if column.first_of is not None:
            assert row[column.name] == row[column.first_of][0]
            assert BY_NAME[column.first_of].per_stage
