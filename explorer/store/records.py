"""Rows in and out: the records readers hand back, and the values writers store.

Metrics given to the writer are taken by column name and cast by the column's
type (so by explorer/metrics.py, which the columns derive from); unknown names
are ignored, so a trainer reporting extra numbers never loses a trial's result.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Boolean, Column, Float, Integer, Table
from sqlalchemy.engine import RowMapping

from explorer.arch import canonical_json
from explorer.metrics import TRIAL_METRICS
from explorer.store.schema import CANDIDATE_FIELDS, LIST_FIELDS, candidate_table

if TYPE_CHECKING:  # only for annotations: readers need not load the spec machinery
    from explorer.space import Candidate

__all__ = [
    "ExperimentRecord",
    "Holder",
    "TrialRecord",
    "aware",
    "candidate_record",
    "coerce",
    "dumps",
    "json_dict",
    "now",
    "pick",
]

_Row = Mapping[str, Any] | RowMapping


def now() -> datetime:
    return datetime.now(UTC)


def aware(value: datetime | None) -> Any:
    """SQLite hands datetimes back naive; they were written in UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def dumps(value: Any) -> str:
    """Canonical JSON: the same document is always the same text (arch.canonical_json)."""
    return canonical_json(value)


def json_dict(value: Mapping[str, Any] | str) -> dict[str, Any]:
    data = json.loads(value) if isinstance(value, str) else json.loads(dumps(value))
    if not isinstance(data, dict):
        raise ValueError(f"spec_json must be a JSON object, got {type(data).__name__}")
    return data


@dataclass(frozen=True)
class Holder:
    """The driver holding an experiment's lease: who, where, since when, last heard of when."""

    token: str
    host: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime

    @classmethod
    def from_row(cls, row: _Row) -> Holder:
        return cls(token=row["token"], host=row["host"], pid=int(row["pid"]),
                   started_at=aware(row["started_at"]), heartbeat_at=aware(row["heartbeat_at"]))

    def describe(self) -> str:
        """'pid 1234 on host-a since 2026-12-01 22:50:03 UTC'."""
        return (f"pid {self.pid} on {self.host} since "
                f"{self.started_at.strftime('%Y-%m-%d %H:%M:%S UTC')}")


@dataclass(frozen=True)
class ExperimentRecord:
    """One version of an experiment as stored."""

    id: int
    name: str
    version: int
    spec_text: str
    spec_hash: str
    spec_json: dict[str, Any]
    git_revision: str | None
    package_versions: dict[str, Any]
    created_at: datetime

    @classmethod
    def from_row(cls, row: _Row) -> ExperimentRecord:
        return cls(
            id=row["id"], name=row["name"], version=row["version"], spec_text=row["spec_text"],
            spec_hash=row["spec_hash"], spec_json=json.loads(row["spec_json"]),
            git_revision=row["git_revision"],
            package_versions=json.loads(row["package_versions"] or "{}"),
            created_at=aware(row["created_at"]),
        )


@dataclass(frozen=True)
class TrialRecord:
    """One trial as stored: identity, state and final metrics.

    The final metrics are in `final`, one per TRIAL_METRICS name, and read as
    attributes too (``record.test_error``), so a new metric needs nothing here.
    """

    id: int
    experiment_id: int
    candidate_key: str
    trial_key: str
    seed: int
    status: str
    attempts: int
    error: str | None
    device: str | None
    started_at: datetime | None
    finished_at: datetime | None
    reused_from_trial_id: int | None
    final: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: _Row) -> TrialRecord:
        state = {f.name: row[f.name] for f in fields(cls) if f.name != "final"}
        state["started_at"] = aware(state["started_at"])
        state["finished_at"] = aware(state["finished_at"])
        return cls(**state, final={name: row[name] for name in TRIAL_METRICS})

    def __getattr__(self, name: str) -> Any:
        """A final metric by name (Python asks here only for names that are not fields)."""
        if name in TRIAL_METRICS:
            return self.final.get(name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def metrics(self) -> dict[str, Any]:
        """The final metrics, by column name (what copy_finished carries over)."""
        return dict(self.final)


def coerce(column: Column[Any], value: Any) -> Any:
    """A plain Python value of the column's type (numpy and torch scalars included)."""
    if value is None:
        return None
    if isinstance(column.type, Boolean):
        return bool(value)
    if isinstance(column.type, Integer):
        return int(value)
    if isinstance(column.type, Float):
        return float(value)
    return str(value)


def pick(given: Mapping[str, Any], table: Table, names: Iterable[str]) -> dict[str, Any]:
    """The values among `given` of these columns of `table`, cast; other keys are ignored."""
    return {name: coerce(table.c[name], given[name]) for name in names if name in given}


def candidate_record(candidate: Candidate) -> dict[str, Any]:
    """A candidates-table row: the Candidate's `row()` and its canonical architecture."""
    row = candidate.row()
    record: dict[str, Any] = {"space": str(row["space"]), "key": str(row["key"]),
                              "architecture": dumps(candidate.arch.canonical())}
    record.update({name: coerce(candidate_table.c[name], row.get(name))
                   for name in CANDIDATE_FIELDS})
    for name in LIST_FIELDS:
        value = row.get(name)
        record[name] = None if value is None else dumps([int(v) for v in value])
    return record
