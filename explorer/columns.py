"""The candidate table's columns, each declared once.

A candidate's row (`Candidate.row()`, `Batch.rows()`), the files `explorer
enumerate` writes (tables.py), the store's candidates table and its casts
(store/schema.py, store/records.py), the trials frame the store reads back
(store/reader.py), the terminal table of `explorer enumerate` and the params
`explorer export --mlflow` logs (tracking.py) all derive from `COLUMNS`. Adding a
column is its line here, plus the Alembic revision that adds it to existing
databases when the store keeps it in a column of its own.

Each column says how it is read from a Candidate (its Arch, its complexity) and
from a Batch (the same candidates as numpy columns), so the two engines write
the same rows. Needs neither torch nor pandas.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

if TYPE_CHECKING:
    from explorer.arch import Arch
    from explorer.complexity import Complexity

__all__ = [
    "BY_NAME",
    "COLUMNS",
    "Column",
    "Kind",
    "Stored",
        "round_like_python",
    "shown_columns",
    "stored_order",
]

# How a table holds a column: text, a 64-bit integer, a float, or a list of integers
# with one item per stage.
Kind = Literal["str", "int", "float", "list"]
# How the store holds it: "identity" (the candidates table's own key columns, written out
# in store/schema.py), a column of that SQL type ("text" short text, "int", "bigint",
# "float", "json" a per-stage list as JSON text), or "record" (read back from the stored
# architecture record: each stage's `record_field`).
Stored = Literal["identity", "text", "int", "bigint", "float", "json", "record"]


class CandidateLike(Protocol):
    """What a column reads of a Candidate (explorer.space.Candidate)."""

    @property
    def space(self) -> str: ...
    @property
    def key(self) -> str: ...
    @property
    def arch(self) -> Arch: ...
    @property
    def complexity(self) -> Complexity: ...
    @property
    def solved(self) -> str | None: ...
    @property
    def params_deviation(self) -> float: ...
    @property
    def flops_deviation(self) -> float: ...


# A Batch (explorer.space.Batch) is read by attribute: its per-stage columns are (n, stages)
# arrays named as Arch's per-stage properties, its scalars (n,) arrays, and `space`,
# `template`, `solved` one value for the whole batch.
BatchLike = Any


@dataclass(frozen=True)
class Column:
    """One column of the candidate table.

    `of_candidate` gives its value in `Candidate.row()` (Python values, lists for per-stage
    columns); `of_batch` the whole Batch's column at once: one value shared by every row,
    a sequence of n, or an (n,) or (n, stages) array. `header` is its heading in the
    terminal table (None: not shown); `first_of` makes it stage 1's value of that per-stage
    column, which the terminal's per-stage view shows in its place. `tracked`: logged as an
    MLflow param.
    """

    name: str
    kind: Kind
    stored: Stored
    of_candidate: Callable[[CandidateLike], Any]
    of_batch: Callable[[BatchLike], Any]
    header: str | None = None
    first_of: str | None = None
    tracked: bool = False
    record_field: str | None = None

    @property
    def per_stage(self) -> bool:
        return self.kind == "list"


def round_like_python(values: np.ndarray, digits: int) -> np.ndarray:
    """round(x, digits) of every value, as Candidate.row() rounds, at numpy's speed.

    np.round scales, rounds to an integer and scales back; that agrees with
    Python's correctly rounded result except where the scaled value lies
    within its own rounding error of a half, so those few go through round().
    """
    scale = 10.0**digits
    scaled = values * scale
    out = np.rint(scaled) / scale
    near_half = np.abs(np.abs(scaled - np.floor(scaled)) - 0.5) < 1e-9 * np.maximum(
        1.0, np.abs(scaled))
    odd = near_half | ~np.isfinite(values) | (np.abs(values) >= 1e12)  # huge: scaling is inexact
    for i in np.flatnonzero(odd).tolist():
        out[i] = round(float(values[i]), digits)
    return out


def _per_stage(name: str, stored: Stored, header: str | None = None, *, tracked: bool = False,
               record_field: str | None = None) -> Column:
    """A per-stage list: the Arch's property and the Batch's (n, stages) column `name`."""
    return Column(name, "list", stored, lambda c: list(getattr(c.arch, name)),
                  lambda b: getattr(b, name), header, tracked=tracked, record_field=record_field)


def _stage_one(name: str, of: str, header: str) -> Column:
    """Stage 1's value of the per-stage column `of` (from which make_arch derives the rest)."""
    return Column(name, "int", "int", lambda c: getattr(c.arch, of)[0],
                  lambda b: getattr(b, of)[:, 0], header, first_of=of, tracked=True)


def _cost(name: str, *, tracked: bool = False) -> Column:
    """A complexity count: the Candidate's Complexity field, the Batch's column."""
    return Column(name, "int", "bigint", lambda c: getattr(c.complexity, name),
                  lambda b: getattr(b, name), name, tracked=tracked)


def _deviation(of: str, header: str) -> Column:
    """Percent above (+) or below (-) the base model, rounded to 3 decimals."""
    return Column(f"{of}_deviation_pct", "float", "float",
                  lambda c: round(getattr(c, f"{of}_deviation"), 3),
                  lambda b: round_like_python(getattr(b, f"{of}_deviation"), 3), header)


# In the order of a candidate's row and of the files `explorer enumerate` writes.
COLUMNS: tuple[Column, ...] = (
    Column("space", "str", "identity", lambda c: c.space, lambda b: b.space, "space"),
    Column("key", "str", "identity", lambda c: c.key, lambda b: list(b.keys), "key"),
    Column("template", "str", "text", lambda c: c.arch.template, lambda b: b.template,
           tracked=True),
    Column("block", "str", "text", lambda c: c.arch.block, lambda b: list(b.blocks),
           tracked=True),
    _per_stage("depths", "json", "depths", tracked=True),
    _per_stage("widths", "json", "widths", tracked=True),
    Column("stem_width", "int", "int", lambda c: c.arch.stem_width, lambda b: b.stem_width,
           tracked=True),
    _stage_one("cardinality", "cardinalities", "C"),
    _stage_one("bottleneck_width", "bottleneck_widths", "d"),
    _per_stage("group_widths", "json", "C·d per stage", tracked=True),
    _per_stage("cardinalities", "record", "C per stage", record_field="cardinality"),
    _per_stage("bottleneck_widths", "record", "d per stage", record_field="bottleneck_width"),
    _cost("params", tracked=True),
    _cost("flops", tracked=True),
    _cost("acts"),
    _deviation("params", "Δparams %"),
    _deviation("flops", "Δflops %"),
    Column("solved", "str", "text", lambda c: c.solved, lambda b: b.solved),
)


BY_NAME: Mapping[str, Column] = MappingProxyType({c.name: c for c in COLUMNS})


def stored_order() -> tuple[Column, ...]:
    """The columns the store keeps in the candidates table, in its order (the trials frame
    reads them in it): the table's, but the per-stage lists kept as JSON text come right
    after the block form, as the first release laid the table out."""
    lists = [c for c in COLUMNS if c.stored == "json"]
    rest = [c for c in COLUMNS if c.stored not in ("identity", "json")]
    at = [c.name for c in rest].index("block") + 1
    return (*rest[:at], *lists, *rest[at:])


def shown_columns(per_stage: bool) -> tuple[Column, ...]:
    """The terminal table's columns: those with a header; with `per_stage`, each per-stage
    column in the place of its stage-1 scalar, else the scalar."""
    firsts = {c.first_of for c in COLUMNS if c.first_of is not None}
    shown = []
    for column in COLUMNS:
        if column.header is None or column.name in firsts:
            continue
        if per_stage and column.first_of is not None:
            column = BY_NAME[column.first_of]
        shown.append(column)
    return tuple(shown)
