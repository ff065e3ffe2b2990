"""The results database: experiments, candidates, trials and per-epoch metrics.

One writer (the sweep driver) and any number of readers (the dashboard, the
CLI's reports) share it. SQLite is the default (``<runs_dir>/explorer.db``),
in WAL mode so readers never block the writer nor the writer the readers; any
SQLAlchemy URL (e.g. ``postgresql://``) works as well.

Why it looks the way it does:

- Every writer method is idempotent and runs in its own short transaction, so
  a resumed sweep can replay its calls and a polling reader is never held up
  for long. On SQLite the writer's transactions start with ``BEGIN IMMEDIATE``
  (take the write lock up front) so a read-then-write can never fail to
  upgrade its lock half way.
- Readers open the store read-only: on SQLite the file is opened with a
  ``file:...?mode=ro`` URI (and ``query_only``), so nothing in a reader can
  write, and a missing database is reported instead of silently created; on
  PostgreSQL and MySQL/MariaDB the session is made read-only. A reader never
  creates tables, and its writer methods refuse to run on any backend.
- ``data_version()`` is a counter (table ``store_revision``) that every write
  transaction bumps. It is one indexed row, the same on every backend, sees
  the writer's own writes (``PRAGMA data_version`` does not, and is only
  comparable on one connection, which a pool does not give), and the dashboard
  uses it as its cache key. Writes made outside this module do not bump it.
- A trial belongs to an experiment, not to a space: one network in several
  spaces of an experiment trains once, and the spaces come from the
  candidates table (joined on experiment and key).
- Metrics given to the writer are taken by column name; unknown names are
  ignored, so a trainer reporting extra numbers never loses a trial's result.

This module needs neither torch, ray nor streamlit.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import sqlite3
import subprocess
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ColumnElement,
    Connection,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    and_,
    case,
    create_engine,
    event,
    false,
    func,
    insert,
    inspect,
    literal_column,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, RowMapping, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, aliased, mapped_column
from sqlalchemy.pool import QueuePool, StaticPool

from explorer.arch import make_arch
from explorer.metrics import EPOCH_METRICS, INTEGER_METRICS, OUTCOMES, STATUSES, TRIAL_METRICS

if TYPE_CHECKING:  # only for annotations: readers need not load the spec machinery
    from explorer.space import Candidate

__all__ = [
    "DB_FILENAME",
    "SCHEMA_VERSION",
    "STATUSES",
    "ExperimentRecord",
    "SpecChanged",
    "Store",
    "StoreError",
    "TrialRecord",
    "database_path",
    "differing_keys",
    "environment_info",
    "git_revision",
    "package_versions",
]

DB_FILENAME = "explorer.db"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 30_000

COST_FIELDS = ("latency_ms", "train_images_per_sec", "peak_memory_bytes", "cost_device")
CANDIDATE_FIELDS = ("template", "block", "stem_width", "cardinality", "bottleneck_width",
                    "params", "flops", "acts", "params_deviation_pct", "flops_deviation_pct",
                    "solved")
LIST_FIELDS = ("depths", "widths", "group_widths")
_INT_FIELDS = frozenset({"epochs_completed", *INTEGER_METRICS, "stem_width", "cardinality",
                         "bottleneck_width", "params", "flops", "acts"})
_TEXT_FIELDS = frozenset({"cost_device", "template", "block", "solved"})
# SQLite's bound-parameter limit is far higher, but this keeps every backend happy.
_IN_CHUNK = 5000


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


# --- schema -------------------------------------------------------------------------------


class _Base(DeclarativeBase):
    pass


class SchemaVersion(_Base):
    """One row per schema version applied, so later versions can migrate old files."""

    __tablename__ = "schema_version"
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    applied_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class StoreRevision(_Base):
    """A single row counting write transactions: the readers' cheap change detector."""

    __tablename__ = "store_revision"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    value: Mapped[int] = mapped_column(BigInteger, default=0)


class Experiment(_Base):
    __tablename__ = "experiments"
    __table_args__ = (UniqueConstraint("name", "version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), index=True)
    version: Mapped[int] = mapped_column(Integer)
    spec_text: Mapped[str] = mapped_column(Text)
    spec_hash: Mapped[str] = mapped_column(String(128))
    spec_json: Mapped[str] = mapped_column(Text)
    git_revision: Mapped[str | None] = mapped_column(String(64))
    package_versions: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class CandidateRow(_Base):
    __tablename__ = "candidates"
    __table_args__ = (
        UniqueConstraint("experiment_id", "space", "key"),
        Index("ix_candidates_experiment_key", "experiment_id", "key"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"))
    space: Mapped[str] = mapped_column(String(128))
    key: Mapped[str] = mapped_column(String(64))
    architecture: Mapped[str | None] = mapped_column(Text)
    template: Mapped[str | None] = mapped_column(String(32))
    block: Mapped[str | None] = mapped_column(String(32))
    depths: Mapped[str | None] = mapped_column(Text)
    widths: Mapped[str | None] = mapped_column(Text)
    group_widths: Mapped[str | None] = mapped_column(Text)
    stem_width: Mapped[int | None] = mapped_column(Integer)
    cardinality: Mapped[int | None] = mapped_column(Integer)
    bottleneck_width: Mapped[int | None] = mapped_column(Integer)
    params: Mapped[int | None] = mapped_column(BigInteger)
    flops: Mapped[int | None] = mapped_column(BigInteger)
    acts: Mapped[int | None] = mapped_column(BigInteger)
    params_deviation_pct: Mapped[float | None] = mapped_column(Float)
    flops_deviation_pct: Mapped[float | None] = mapped_column(Float)
    solved: Mapped[str | None] = mapped_column(String(32))
    latency_ms: Mapped[float | None] = mapped_column(Float)
    train_images_per_sec: Mapped[float | None] = mapped_column(Float)
    peak_memory_bytes: Mapped[int | None] = mapped_column(BigInteger)
    cost_device: Mapped[str | None] = mapped_column(String(128))


class TrialRow(_Base):
    __tablename__ = "trials"
    __table_args__ = (
        UniqueConstraint("experiment_id", "trial_key"),
        Index("ix_trials_experiment_candidate", "experiment_id", "candidate_key"),
        CheckConstraint(f"status IN ({', '.join(repr(s) for s in STATUSES)})",
                        name="ck_trials_status"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"))
    candidate_key: Mapped[str] = mapped_column(String(64))
    trial_key: Mapped[str] = mapped_column(String(128), index=True)
    seed: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    device: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    test_error: Mapped[float | None] = mapped_column(Float)
    test_top5_error: Mapped[float | None] = mapped_column(Float)
    train_loss: Mapped[float | None] = mapped_column(Float)
    train_error: Mapped[float | None] = mapped_column(Float)
    train_images_per_sec: Mapped[float | None] = mapped_column(Float)
    epochs_completed: Mapped[int | None] = mapped_column(Integer)
    seconds: Mapped[float | None] = mapped_column(Float)
    reused_from_trial_id: Mapped[int | None] = mapped_column(
        ForeignKey("trials.id", ondelete="SET NULL"))


class EpochRow(_Base):
    __tablename__ = "epochs"
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"),
                                          primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    train_loss: Mapped[float | None] = mapped_column(Float)
    train_error: Mapped[float | None] = mapped_column(Float)
    test_error: Mapped[float | None] = mapped_column(Float)
    test_top5_error: Mapped[float | None] = mapped_column(Float)
    lr: Mapped[float | None] = mapped_column(Float)
    seconds: Mapped[float | None] = mapped_column(Float)
    train_images_per_sec: Mapped[float | None] = mapped_column(Float)
    peak_memory_bytes: Mapped[int | None] = mapped_column(BigInteger)


# --- records ------------------------------------------------------------------------------


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
    def from_row(cls, row: Mapping[str, Any] | RowMapping) -> ExperimentRecord:
        return cls(
            id=row["id"], name=row["name"], version=row["version"], spec_text=row["spec_text"],
            spec_hash=row["spec_hash"], spec_json=json.loads(row["spec_json"]),
            git_revision=row["git_revision"],
            package_versions=json.loads(row["package_versions"] or "{}"),
            created_at=_aware(row["created_at"]),
        )


@dataclass(frozen=True)
class TrialRecord:
    """One trial as stored: identity, state and final metrics."""

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
    test_error: float | None
    test_top5_error: float | None
    train_loss: float | None
    train_error: float | None
    train_images_per_sec: float | None
    epochs_completed: int | None
    seconds: float | None
    reused_from_trial_id: int | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any] | RowMapping) -> TrialRecord:
        fields = {name: row[name] for name in cls.__dataclass_fields__}
        fields["started_at"] = _aware(fields["started_at"])
        fields["finished_at"] = _aware(fields["finished_at"])
        return cls(**fields)

    def metrics(self) -> dict[str, Any]:
        """The final metrics, by column name (what copy_finished carries over)."""
        return {name: getattr(self, name) for name in TRIAL_METRICS}


# --- environment --------------------------------------------------------------------------


def git_revision(package_dir: Path | None = None) -> str | None:
    """HEAD of the explorer checkout this code runs from, or None.

    Only trusted when the repository's top level is the parent of the package
    (an installed copy inside some other repository, e.g. a venv in a project,
    must not report that project's revision). Never raises, never hangs.
    """
    here = (package_dir or Path(__file__).resolve().parent).resolve()
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


# --- helpers ------------------------------------------------------------------------------


def database_path(runs_dir: str | os.PathLike[str]) -> Path:
    """Where the default SQLite database of a runs directory lives."""
    return Path(runs_dir).expanduser() / DB_FILENAME


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


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime | None) -> Any:
    """SQLite hands datetimes back naive; they were written in UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _json_dict(value: Mapping[str, Any] | str) -> dict[str, Any]:
    data = json.loads(value) if isinstance(value, str) else json.loads(_dumps(value))
    if not isinstance(data, dict):
        raise ValueError(f"spec_json must be a JSON object, got {type(data).__name__}")
    return data


def _coerce(name: str, value: Any) -> Any:
    """Plain Python values for the driver (numpy and torch scalars included)."""
    if value is None:
        return None
    if name in _TEXT_FIELDS:
        return str(value)
    if name in _INT_FIELDS:
        return int(value)
    return float(value)


def _pick(metrics: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    return {name: _coerce(name, metrics[name]) for name in names if name in metrics}


def _architecture(row: Mapping[str, Any]) -> str | None:
    """The canonical record: given, or rebuilt from the row when it reproduces the key."""
    given = row.get("architecture")
    if given is not None:
        return given if isinstance(given, str) else _dumps(given)
    try:
        arch = make_arch(
            template=row["template"], stem_width=int(row["stem_width"]),
            depths=tuple(row["depths"]), widths=tuple(row["widths"]),
            cardinality=int(row["cardinality"]), bottleneck_width=int(row["bottleneck_width"]),
            block=row.get("block") or "grouped",
        )
    except (KeyError, TypeError, ValueError):
        return None
    return _dumps(arch.canonical()) if arch.key == row["key"] else None


def candidate_record(candidate: Candidate | Mapping[str, Any]) -> dict[str, Any]:
    """A candidates-table row from a Candidate or its `row()` (plus an optional architecture)."""
    if isinstance(candidate, Mapping):
        row: Mapping[str, Any] = candidate
    else:
        row = {**candidate.row(), "architecture": candidate.arch.canonical()}
    if "space" not in row or "key" not in row:
        raise ValueError("a candidate row needs at least 'space' and 'key'")
    record: dict[str, Any] = {"space": str(row["space"]), "key": str(row["key"]),
                              "architecture": _architecture(row)}
    record.update({name: _coerce(name, row.get(name)) for name in CANDIDATE_FIELDS})
    for name in LIST_FIELDS:
        value = row.get(name)
        record[name] = None if value is None else _dumps([int(v) for v in value])
    return record


def _chunks(items: Sequence[int], size: int = _IN_CHUNK) -> Iterator[Sequence[int]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


# --- engines ------------------------------------------------------------------------------


def _resolve(url_or_path: str | os.PathLike[str]) -> URL | Path | None:
    """A non-SQLite URL, a SQLite file path, or None for an in-memory SQLite database.

    A directory stands for its default database file (the runs directory), and
    so does a path that does not exist yet and has no suffix (``runs``), so a
    fresh runs directory is not mistaken for a database file.
    """
    if isinstance(url_or_path, str) and "://" in url_or_path:
        url = make_url(url_or_path)
        if url.get_backend_name() != "sqlite":
            return url
        if url.database in (None, "", ":memory:"):
            return None
        path = Path(url.database)
    else:
        path = Path(url_or_path)
    path = path.expanduser()
    is_runs_dir = path.is_dir() or (not path.exists() and not path.suffix)
    return path / DB_FILENAME if is_runs_dir else path


def _sqlite_engine(path: Path | None, readonly: bool) -> Engine:
    """A pooled SQLite engine with the pragmas set on every new connection."""
    if path is None:
        target, uri = ":memory:", False
    else:
        target, uri = f"{path.resolve().as_uri()}?mode={'ro' if readonly else 'rwc'}", True

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(target, uri=uri, timeout=BUSY_TIMEOUT_MS / 1000,
                               check_same_thread=False)

    engine = create_engine(
        URL.create("sqlite+pysqlite", database=str(path) if path else None),
        creator=connect, poolclass=StaticPool if path is None else QueuePool,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Autocommit at the driver level; transactions are begun explicitly below.
        dbapi_connection.isolation_level = None
        pragmas = [f"busy_timeout={BUSY_TIMEOUT_MS}", "foreign_keys=ON"]
        if readonly:
            pragmas.append("query_only=ON")
        else:
            pragmas += ["journal_mode=WAL", "synchronous=NORMAL"]
        cursor = dbapi_connection.cursor()
        try:
            for pragma in pragmas:
                cursor.execute(f"PRAGMA {pragma}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

    return engine


_READONLY_SQL = {
    "postgresql": "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
    "mysql": "SET SESSION TRANSACTION READ ONLY",
    "mariadb": "SET SESSION TRANSACTION READ ONLY",
}


def _server_engine(url: URL, readonly: bool) -> Engine:
    """An engine for a database server; a read-only session where the backend has one."""
    engine = create_engine(url, pool_pre_ping=True)
    statement = _READONLY_SQL.get(url.get_backend_name())
    if readonly and statement is not None:

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute(statement)
            finally:
                cursor.close()
            # Committed, or the pool's reset-on-return rollback would undo the SET.
            dbapi_connection.commit()

    return engine


# --- the store ----------------------------------------------------------------------------


class Store:
    """Access to one results database; engines and connections are per instance.

    Open it with `Store.open`; close it (or use it as a context manager) to
    release its connections.
    """

    def __init__(self, engine: Engine, *, readonly: bool, where: str) -> None:
        self._engine = engine
        self._readonly = readonly
        self.where = where

    # -- opening -------------------------------------------------------------------------

    @classmethod
    def open(cls, url_or_path: str | os.PathLike[str], *, readonly: bool = False) -> Store:
        """Open (a writer: create) the database at a path, runs directory or SQLAlchemy URL.

        Read-only stores never create anything: a missing database raises
        StoreError naming it and how to make one.
        """
        target = _resolve(url_or_path)
        if isinstance(target, URL):
            where = target.render_as_string(hide_password=True)
            engine = _server_engine(target, readonly)
        else:
            where = str(target) if target is not None else ":memory:"
            if readonly and target is None:
                raise StoreError("an in-memory database cannot be opened read-only")
            if readonly and not target.is_file():  # type: ignore[union-attr]
                raise StoreError(f"no results database at {where}: run `explorer run SPEC` "
                                 "first (or pass the runs directory it was written to)")
            if target is not None and not readonly:
                target.parent.mkdir(parents=True, exist_ok=True)
            engine = _sqlite_engine(target, readonly)
        store = cls(engine, readonly=readonly, where=where)
        try:
            if readonly:
                store._check_schema()
            else:
                store._create_schema()
        except StoreError:
            engine.dispose()
            raise
        except DBAPIError as err:
            engine.dispose()
            reason = str(err.orig).splitlines()[0] if err.orig is not None else str(err)
            raise StoreError(f"cannot open the results database at {where}: {reason}") from None
        return store

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "read-only" if self._readonly else "writer"
        return f"Store({self.where!r}, {mode})"

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (for tests and ad-hoc queries)."""
        return self._engine

    @property
    def readonly(self) -> bool:
        return self._readonly

    def _create_schema(self) -> None:
        with self._engine.begin() as conn:
            _Base.metadata.create_all(conn)
            found = conn.scalar(select(func.max(SchemaVersion.version)))
            if found is None:
                conn.execute(insert(SchemaVersion).values(version=SCHEMA_VERSION,
                                                          applied_at=_now()))
            elif found > SCHEMA_VERSION:
                raise self._too_new(found)
            # Migrations from older versions go here, one per version, when there are any.
            if conn.scalar(select(StoreRevision.value).where(StoreRevision.id == 1)) is None:
                conn.execute(insert(StoreRevision).values(id=1, value=0))

    def _check_schema(self) -> None:
        with self._engine.connect() as conn:
            if not inspect(conn).has_table(SchemaVersion.__tablename__):
                raise StoreError(f"{self.where} is not an explorer results database (no "
                                 "schema_version table): run `explorer run SPEC` to create one")
            found = conn.scalar(select(func.max(SchemaVersion.version)))
            if found is not None and found > SCHEMA_VERSION:
                raise self._too_new(found)

    def _too_new(self, found: int) -> StoreError:
        return StoreError(f"{self.where} has schema version {found}, newer than this "
                          f"explorer's {SCHEMA_VERSION}: upgrade explorer to read it")

    def schema_version(self) -> int:
        with self._engine.connect() as conn:
            return int(conn.scalar(select(func.max(SchemaVersion.version))) or 0)

    # -- writer --------------------------------------------------------------------------

    def _require_writer(self) -> None:
        if self._readonly:
            raise StoreError(f"{self.where} is open read-only; only the sweep driver writes")

    @staticmethod
    def _bump(conn: Connection) -> None:
        conn.execute(update(StoreRevision).where(StoreRevision.id == 1)
                     .values(value=StoreRevision.value + 1))

    @staticmethod
    def _latest(conn: Connection, name: str) -> ExperimentRecord | None:
        row = conn.execute(select(Experiment.__table__).where(Experiment.name == name)
                           .order_by(Experiment.version.desc()).limit(1)).mappings().first()
        return ExperimentRecord.from_row(row) if row is not None else None

    def create_or_get_experiment(
        self, name: str, spec_text: str, spec_hash: str, spec_json: Mapping[str, Any] | str,
        *, new_version: bool = False, environment: Mapping[str, Any] | None = None,
    ) -> ExperimentRecord:
        """The latest version of `name` if it has this spec, else a new one.

        An unchanged hash returns the latest version; a changed spec raises
        SpecChanged naming the dotted keys that differ (a hash change with no
        semantic difference, e.g. comments, returns the latest version), unless
        `new_version`, which always adds version+1 beside the old ones.
        `environment` defaults to environment_info().
        """
        self._require_writer()
        spec = _json_dict(spec_json)
        env = dict(environment) if environment is not None else environment_info()
        for attempt in (1, 2):
            try:
                return self._create_or_get(name, spec_text, spec_hash, spec, new_version, env)
            except IntegrityError:
                if attempt == 2:  # a concurrent writer took the version twice in a row
                    raise
        raise AssertionError("unreachable")

    def _create_or_get(self, name: str, spec_text: str, spec_hash: str, spec: dict[str, Any],
                       new_version: bool, env: Mapping[str, Any]) -> ExperimentRecord:
        with self._engine.begin() as conn:
            latest = self._latest(conn, name)
            if latest is not None and not new_version:
                if latest.spec_hash == spec_hash:
                    return latest
                changed = differing_keys(latest.spec_json, spec)
                if changed:
                    raise SpecChanged(name, changed, latest.version)
                return latest
            conn.execute(insert(Experiment).values(
                name=name, version=1 if latest is None else latest.version + 1,
                spec_text=spec_text, spec_hash=spec_hash, spec_json=_dumps(spec),
                git_revision=env.get("git_revision"),
                package_versions=_dumps(env.get("package_versions") or {}), created_at=_now(),
            ))
            self._bump(conn)
            created = self._latest(conn, name)
            assert created is not None
            return created

    def add_candidates(self, experiment_id: int,
                       rows: Iterable[Candidate | Mapping[str, Any]]) -> int:
        """Insert or update candidates by (space, key); measured costs are kept.

        Takes Candidate objects or their `row()` dicts; the canonical
        architecture comes from the Candidate, the row's 'architecture', or is
        rebuilt from the row's fields when that reproduces its key.
        Returns the number of rows given.
        """
        self._require_writer()
        records = [{"experiment_id": experiment_id, **candidate_record(r)} for r in rows]
        if not records:
            return 0
        columns = ["architecture", *CANDIDATE_FIELDS, *LIST_FIELDS]
        with self._engine.begin() as conn:
            _upsert(conn, CandidateRow, records, ("experiment_id", "space", "key"), columns)
            self._bump(conn)
        return len(records)

    def add_trials(self, experiment_id: int, trials: Iterable[tuple[str, str, int]]) -> int:
        """Insert the missing (trial_key, candidate_key, seed) as pending; returns how many."""
        self._require_writer()
        wanted = {key: (candidate, int(seed)) for key, candidate, seed in trials}
        with self._engine.begin() as conn:
            have = set(conn.scalars(select(TrialRow.trial_key)
                                    .where(TrialRow.experiment_id == experiment_id)))
            now = _now()
            new = [{"experiment_id": experiment_id, "trial_key": key, "candidate_key": cand,
                    "seed": seed, "status": "pending", "attempts": 0, "created_at": now}
                   for key, (cand, seed) in wanted.items() if key not in have]
            if new:
                _insert_missing(conn, TrialRow, new, ("experiment_id", "trial_key"))
                self._bump(conn)
        return len(new)

    @staticmethod
    def _trial_id(conn: Connection, experiment_id: int, trial_key: str) -> int:
        found = conn.scalar(select(TrialRow.id).where(TrialRow.experiment_id == experiment_id,
                                                      TrialRow.trial_key == trial_key))
        if found is None:
            raise StoreError(f"no trial {trial_key} in experiment {experiment_id}: "
                             "add_trials() it first")
        return int(found)

    def mark_running(self, experiment_id: int, trial_key: str, device: str | None) -> None:
        """A new attempt starts: status running, attempts + 1, error and finish cleared."""
        self._require_writer()
        with self._engine.begin() as conn:
            trial_id = self._trial_id(conn, experiment_id, trial_key)
            conn.execute(update(TrialRow).where(TrialRow.id == trial_id).values(
                status="running", attempts=TrialRow.attempts + 1, device=device,
                started_at=_now(), finished_at=None, error=None,
            ))
            self._bump(conn)

    def record_epoch(self, experiment_id: int, trial_key: str, metrics: Mapping[str, Any]) -> None:
        """Store one epoch's metrics (`metrics['epoch']` required).

        Reporting an epoch again (a resumed trial) updates the row in place:
        the latest report wins for every column it gives (columns it leaves
        out keep their value); there is never a second row. The trial's
        epochs_completed follows the number of rows. Unknown keys are ignored.
        """
        self.record_epochs(experiment_id, trial_key, [metrics])

    def record_epochs(self, experiment_id: int, trial_key: str,
                      history: Iterable[Mapping[str, Any]]) -> None:
        """record_epoch for many epochs in one transaction (a trial's whole history)."""
        self._require_writer()
        rows = list(history)
        if any("epoch" not in metrics for metrics in rows):
            raise ValueError("every epoch's metrics need an 'epoch'")
        if not rows:
            return
        with self._engine.begin() as conn:
            trial_id = self._trial_id(conn, experiment_id, trial_key)
            for metrics in rows:
                values = _pick(metrics, EPOCH_METRICS)
                row = {"trial_id": trial_id, "epoch": int(metrics["epoch"]), **values}
                _upsert(conn, EpochRow, [row], ("trial_id", "epoch"), list(values))
            conn.execute(update(TrialRow).where(TrialRow.id == trial_id)
                         .values(epochs_completed=_epoch_count(trial_id)))
            self._bump(conn)

    def finish_trial(self, experiment_id: int, trial_key: str, status: str,
                     metrics: Mapping[str, Any], error: str | None = None) -> None:
        """Record the outcome: 'finished' or 'failed', the final metrics given, the error.

        epochs_completed defaults to the number of epoch rows recorded.
        """
        self._require_writer()
        if status not in OUTCOMES:
            raise ValueError(f"finish_trial status must be one of {OUTCOMES}, got {status!r}")
        values: dict[str, Any] = _pick(metrics, TRIAL_METRICS)
        with self._engine.begin() as conn:
            trial_id = self._trial_id(conn, experiment_id, trial_key)
            values.setdefault("epochs_completed", _epoch_count(trial_id))
            conn.execute(update(TrialRow).where(TrialRow.id == trial_id).values(
                status=status, error=error, finished_at=_now(), **values))
            self._bump(conn)

    def requeue_running(self, experiment_id: int) -> int:
        """Running trials of a driver that died go back to pending; returns how many."""
        self._require_writer()
        with self._engine.begin() as conn:
            done = conn.execute(update(TrialRow).where(TrialRow.experiment_id == experiment_id,
                                                       TrialRow.status == "running")
                                .values(status="pending"))
            if done.rowcount:
                self._bump(conn)
            return int(done.rowcount or 0)

    def find_finished(self, trial_key: str, *,
                      exclude_experiment_id: int | None = None) -> TrialRecord | None:
        """A finished trial with this key in any experiment (originals before copies)."""
        stmt = select(TrialRow.__table__).where(TrialRow.trial_key == trial_key,
                                                TrialRow.status == "finished")
        if exclude_experiment_id is not None:
            stmt = stmt.where(TrialRow.experiment_id != exclude_experiment_id)
        stmt = stmt.order_by(TrialRow.reused_from_trial_id.is_not(None), TrialRow.id).limit(1)
        with self._engine.connect() as conn:
            row = conn.execute(stmt).mappings().first()
        return TrialRecord.from_row(row) if row is not None else None

    def finished_trial_keys(self, experiment_id: int) -> set[str]:
        """Trial keys of this experiment already finished (trained or reused): skip them."""
        with self._engine.connect() as conn:
            return set(conn.scalars(select(TrialRow.trial_key).where(
                TrialRow.experiment_id == experiment_id, TrialRow.status == "finished")))

    def finished_results(self, experiment_id: int) -> dict[str, dict[str, Any]]:
        """Final metrics and complexity of this experiment's finished trials, by trial key.

        What a search (e.g. optuna) is told about work already done; the
        complexity columns are there because they can be objectives too.
        """
        complexity = (select(CandidateRow.key, func.max(CandidateRow.params).label("params"),
                             func.max(CandidateRow.flops).label("flops"),
                             func.max(CandidateRow.acts).label("acts"))
                      .where(CandidateRow.experiment_id == experiment_id)
                      .group_by(CandidateRow.key).subquery())
        stmt = (select(TrialRow.trial_key, *(getattr(TrialRow, n) for n in TRIAL_METRICS),
                       complexity.c.params, complexity.c.flops, complexity.c.acts)
                .outerjoin(complexity, complexity.c.key == TrialRow.candidate_key)
                .where(TrialRow.experiment_id == experiment_id, TrialRow.status == "finished"))
        with self._engine.connect() as conn:
            rows = conn.execute(stmt).mappings().all()
        return {row["trial_key"]: {k: v for k, v in row.items() if k != "trial_key"}
                for row in rows}

    def get_trial(self, experiment_id: int, trial_key: str) -> TrialRecord | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(TrialRow.__table__).where(
                TrialRow.experiment_id == experiment_id, TrialRow.trial_key == trial_key,
            )).mappings().first()
        return TrialRecord.from_row(row) if row is not None else None

    def copy_finished(self, experiment_id: int, trial_key: str, source: TrialRecord) -> None:
        """Reuse a finished trial: its final metrics and epoch rows, and a link to it.

        The trial is added if missing. Its timestamps are the copy's (when the
        result became part of this experiment); `seconds` stays the source's
        training time. Copying a trial onto itself does nothing.
        """
        self._require_writer()
        with self._engine.begin() as conn:
            src = conn.execute(select(TrialRow.__table__).where(TrialRow.id == source.id)
                               ).mappings().first()
            if src is None or src["status"] != "finished":
                raise StoreError(f"trial {source.id} is not a finished trial to copy")
            if src["experiment_id"] == experiment_id and src["trial_key"] == trial_key:
                return
            now = _now()
            _insert_missing(conn, TrialRow, [{
                "experiment_id": experiment_id, "trial_key": trial_key,
                "candidate_key": src["candidate_key"], "seed": src["seed"], "status": "pending",
                "attempts": 0, "created_at": now}], ("experiment_id", "trial_key"))
            trial_id = self._trial_id(conn, experiment_id, trial_key)
            conn.execute(update(TrialRow).where(TrialRow.id == trial_id).values(
                status="finished", error=None, device=src["device"], started_at=now,
                finished_at=now, reused_from_trial_id=src["id"],
                **{name: src[name] for name in TRIAL_METRICS},
            ))
            epochs = [{**dict(row), "trial_id": trial_id} for row in conn.execute(
                select(EpochRow.__table__).where(EpochRow.trial_id == src["id"])).mappings()]
            if epochs:
                _upsert(conn, EpochRow, epochs, ("trial_id", "epoch"), EPOCH_METRICS)
            self._bump(conn)

    def set_cost(self, experiment_id: int, key: str, cost: Mapping[str, Any]) -> None:
        """Measured cost of a candidate (every space it is in): latency, throughput, memory.

        Keys: latency_ms, train_images_per_sec, peak_memory_bytes, and
        cost_device (or device).
        """
        self._require_writer()
        given = dict(cost)
        if "device" in given and "cost_device" not in given:
            given["cost_device"] = given.pop("device")
        values = _pick(given, COST_FIELDS)
        if not values:
            return
        with self._engine.begin() as conn:
            done = conn.execute(update(CandidateRow).where(
                CandidateRow.experiment_id == experiment_id, CandidateRow.key == key,
            ).values(**values))
            if not done.rowcount:
                raise StoreError(f"no candidate {key} in experiment {experiment_id}: "
                                 "add_candidates() it first")
            self._bump(conn)

    # -- readers -------------------------------------------------------------------------

    def data_version(self) -> int:
        """A number that changes whenever the writer changes the data: a cache key.

        It counts the writer's transactions (see the module docstring), so it
        also sees a writer store's own writes.
        """
        with self._engine.connect() as conn:
            return int(conn.scalar(select(StoreRevision.value).where(StoreRevision.id == 1))
                       or 0)

    def experiments(self) -> pd.DataFrame:
        """Every version of every experiment, with its trial counts by status."""
        counts = [func.count(TrialRow.id).label("trials")] + [
            func.coalesce(func.sum(_is(TrialRow.status, s)), 0).label(s) for s in STATUSES]
        per_trial = (select(TrialRow.experiment_id, *counts)
                     .group_by(TrialRow.experiment_id).subquery())
        per_cand = (select(CandidateRow.experiment_id,
                           func.count(func.distinct(CandidateRow.key)).label("candidates"))
                    .group_by(CandidateRow.experiment_id).subquery())
        newest = aliased(Experiment)
        latest = (select(func.max(newest.version)).where(newest.name == Experiment.name)
                  .scalar_subquery())
        stmt = (
            select(Experiment.id.label("experiment_id"), Experiment.name.label("experiment"),
                   Experiment.version, (Experiment.version == latest).label("latest"),
                   Experiment.spec_hash, Experiment.spec_text, Experiment.git_revision,
                   Experiment.package_versions, Experiment.created_at,
                   func.coalesce(per_cand.c.candidates, 0).label("candidates"),
                   func.coalesce(per_trial.c.trials, 0).label("trials"),
                   *(func.coalesce(per_trial.c[s], 0).label(s) for s in STATUSES))
            .outerjoin(per_trial, per_trial.c.experiment_id == Experiment.id)
            .outerjoin(per_cand, per_cand.c.experiment_id == Experiment.id)
            .order_by(Experiment.name, Experiment.version)
        )
        kinds = {"package_versions": "json", "latest": "bool", "created_at": "time",
                 **dict.fromkeys(["experiment_id", "version", "candidates", "trials", *STATUSES],
                                 "int")}
        return self._frame(stmt, kinds)

    def trials_frame(self, experiment_names: Sequence[str] | None = None, *,
                     latest_version_only: bool = True) -> pd.DataFrame:
        """One row per (trial, space), the candidate's columns joined.

        A trial whose network is in several spaces appears once per space; one
        whose candidate was never added appears once with an empty space.
        """
        t, c, e = TrialRow, CandidateRow, Experiment
        stmt = (
            select(
                e.name.label("experiment"), e.version, e.id.label("experiment_id"),
                t.id.label("trial_id"), t.trial_key, t.candidate_key.label("key"), c.space,
                c.template, c.block, c.depths, c.widths, c.group_widths, c.stem_width,
                c.cardinality, c.bottleneck_width, c.params, c.flops, c.acts,
                c.params_deviation_pct, c.flops_deviation_pct, c.solved, c.latency_ms,
                c.train_images_per_sec.label("measured_train_images_per_sec"),
                c.peak_memory_bytes, c.cost_device, t.seed, t.status, t.attempts, t.device,
                t.error, t.created_at, t.started_at, t.finished_at,
                *(getattr(t, name) for name in TRIAL_METRICS), t.reused_from_trial_id,
            )
            .select_from(t).join(e, e.id == t.experiment_id)
            .outerjoin(c, and_(c.experiment_id == t.experiment_id, c.key == t.candidate_key))
            .where(*_experiment_filter(experiment_names, latest_version_only))
            .order_by(e.name, e.version, t.id, c.space)
        )
        return self._frame(stmt, _TRIAL_KINDS)

    def epochs_frame(self, trial_ids: Iterable[int] | None = None,
                     experiment_names: Sequence[str] | None = None, *,
                     latest_version_only: bool = True) -> pd.DataFrame:
        """Per-epoch metrics, one row per (trial, epoch), ordered by trial and epoch.

        Given trial ids, exactly those trials; otherwise the trials of the named
        experiments (all when None), latest versions only unless told.
        """
        t, e = TrialRow, Experiment
        base = (
            select(e.name.label("experiment"), e.version, EpochRow.trial_id, t.trial_key,
                   t.candidate_key.label("key"), t.seed, EpochRow.epoch,
                   *(getattr(EpochRow, name) for name in EPOCH_METRICS))
            .select_from(EpochRow).join(t, t.id == EpochRow.trial_id)
            .join(e, e.id == t.experiment_id)
            .order_by(EpochRow.trial_id, EpochRow.epoch)
        )
        if trial_ids is None:
            return self._frame(base.where(*_experiment_filter(experiment_names,
                                                              latest_version_only)), _EPOCH_KINDS)
        ids = sorted({int(i) for i in trial_ids})
        parts = [self._frame(base.where(EpochRow.trial_id.in_(chunk)), _EPOCH_KINDS)
                 for chunk in _chunks(ids)]
        if not parts:
            return self._frame(base.where(false()), _EPOCH_KINDS)
        return parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)

    def status_counts(self, experiment: str | int) -> dict[str, int]:
        """Trials by status for an experiment id, or a name's latest version (0s if none)."""
        if isinstance(experiment, str):
            newest = (select(Experiment.id).where(Experiment.name == experiment)
                      .order_by(Experiment.version.desc()).limit(1).scalar_subquery())
            where: ColumnElement[bool] = TrialRow.experiment_id == newest
        else:
            where = TrialRow.experiment_id == experiment
        counts: dict[str, int] = dict.fromkeys(STATUSES, 0)
        with self._engine.connect() as conn:
            for status, n in conn.execute(select(TrialRow.status, func.count())
                                          .where(where).group_by(TrialRow.status)):
                counts[status] = int(n)
        return counts

    def _frame(self, stmt: Any, kinds: Mapping[str, str]) -> pd.DataFrame:
        """Run a query into a frame, column by column, with the dtypes `kinds` names.

        Stable dtypes whether the frame is empty or not (the dashboard caches
        on them), built in one go because readers poll this several times a second.
        """
        with self._engine.connect() as conn:
            result = conn.execute(stmt)
            names = list(result.keys())
            rows = [tuple(row) for row in result]
        columns = list(zip(*rows, strict=True)) if rows else [()] * len(names)
        return pd.DataFrame({name: _column(values, kinds.get(name, ""))
                             for name, values in zip(names, columns, strict=True)},
                            columns=names)


# --- statements ---------------------------------------------------------------------------


def _is(column: Any, value: str) -> Any:
    return case((column == value, 1), else_=0)


def _epoch_count(trial_id: int) -> Any:
    return (select(func.count()).select_from(EpochRow).where(EpochRow.trial_id == trial_id)
            .scalar_subquery())


def _experiment_filter(names: Sequence[str] | None,
                       latest_only: bool) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if names is not None:
        where.append(Experiment.name.in_(list(names)))
    if latest_only:
        newest = aliased(Experiment)
        where.append(Experiment.version == select(func.max(newest.version))
                     .where(newest.name == Experiment.name).scalar_subquery())
    return where


def _upsert(conn: Connection, model: type[_Base], rows: list[dict[str, Any]],
            keys: Sequence[str], columns: Sequence[str]) -> None:
    """Insert rows, or update `columns` of those whose `keys` exist: in one statement
    on SQLite and PostgreSQL, row by row elsewhere (fine for a single writer)."""
    dialect = conn.dialect.name
    if dialect in ("sqlite", "postgresql"):
        make = sqlite.insert if dialect == "sqlite" else postgresql.insert
        for row in rows:  # rows may carry different columns; one statement each is fast enough
            stmt = make(model).values(row)
            names = [c for c in columns if c in row]
            # Spelled out: `stmt.excluded` builds a whole column collection per statement.
            stmt = (stmt.on_conflict_do_update(index_elements=list(keys),
                                               set_={c: literal_column(f"excluded.{c}")
                                                     for c in names})
                    if names else stmt.on_conflict_do_nothing(index_elements=list(keys)))
            conn.execute(stmt)
        return
    table = model.__table__
    for row in rows:
        match = and_(*(table.c[k] == row[k] for k in keys))
        values = {c: row[c] for c in columns if c in row}
        done = conn.execute(update(model).where(match).values(values)) if values else None
        if done is None or not done.rowcount:
            exists = conn.scalar(select(func.count()).select_from(table).where(match))
            if not exists:
                conn.execute(insert(model).values(row))


def _insert_missing(conn: Connection, model: type[_Base], rows: list[dict[str, Any]],
                    keys: Sequence[str]) -> None:
    """Insert the rows whose keys are not there yet; never an IntegrityError for a duplicate."""
    _upsert(conn, model, rows, keys, ())


# --- frames -------------------------------------------------------------------------------


_TRIAL_KINDS: Mapping[str, str] = {
    **dict.fromkeys(["version", "experiment_id", "trial_id", "seed", "attempts"], "int"),
    **dict.fromkeys(["stem_width", "cardinality", "bottleneck_width", "params", "flops", "acts",
                     "peak_memory_bytes", "epochs_completed", "reused_from_trial_id"], "Int"),
    **dict.fromkeys(["params_deviation_pct", "flops_deviation_pct", "latency_ms",
                     "measured_train_images_per_sec", "test_error", "test_top5_error",
                     "train_loss", "train_error", "train_images_per_sec", "seconds"], "float"),
    **dict.fromkeys(["created_at", "started_at", "finished_at"], "time"),
    **dict.fromkeys(LIST_FIELDS, "tuple"),
}
_EPOCH_KINDS: Mapping[str, str] = {
    **dict.fromkeys(["version", "trial_id", "seed", "epoch"], "int"),
    **{name: "Int" if name in INTEGER_METRICS else "float" for name in EPOCH_METRICS},
}


def _column(values: Sequence[Any], kind: str) -> Any:
    """One column's values as the array type `kind` names (default: pandas infers)."""
    if kind == "int":
        return np.array(values, dtype="int64")
    if kind == "Int":
        return pd.array(list(values), dtype="Int64")
    if kind == "float":
        return np.array(values, dtype="float64")  # None becomes NaN
    if kind == "bool":
        return np.array(values, dtype=bool)
    if kind == "time":
        return pd.to_datetime(list(values), utc=True).as_unit("us")
    if kind in ("tuple", "json"):
        out = np.empty(len(values), dtype=object)
        for i, text in enumerate(values):
            data = json.loads(text) if isinstance(text, str) else None
            out[i] = tuple(data) if kind == "tuple" and data is not None else data
        return out
    return list(values)
