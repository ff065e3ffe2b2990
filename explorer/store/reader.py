"""Reading the results database: what the dashboard, the CLI's reports and the driver see.

A `Reader` is read-only by construction: it has no write methods, and
`Reader.open` gives it a read-only engine (see explorer.store.engine), so not
even raw SQL through `reader.engine` can write. It never creates a table nor
migrates: a database of a newer schema than this explorer knows is refused
(upgrade explorer), and so is one of an older schema: the writer upgrades a
database in place when it opens it (`explorer run`, or ``python -m
explorer.store upgrade``), and a reader waits for that rather than guess
which of the columns it names are missing.

``data_version()`` is a counter (table ``store_revision``) that every write
transaction bumps. It is one indexed row, the same on every backend, sees the
writer's own writes (``PRAGMA data_version`` does not, and is only comparable
on one connection, which a pool does not give), and the dashboard uses it as
its cache key. Writes made outside the writer do not bump it.

Needs neither torch, ray, streamlit nor the spec machinery.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from pyarrow import json as pa_json
from sqlalchemy import (
    ColumnElement,
    CompoundSelect,
    Connection,
    Engine,
    Select,
    and_,
    case,
    false,
    func,
    select,
    union,
)
from sqlalchemy.exc import DBAPIError

from explorer.columns import stored_order
from explorer.metrics import (
    EPOCH_METRICS,
    PROVENANCE,
    PROVENANCE_TYPES,
    STATUSES,
    TRIAL_METRICS,
    Status,
)
from explorer.store.engine import cannot_open, open_engine
from explorer.store.errors import StoreError
from explorer.store.records import ExperimentRecord, Holder, TrialRecord, aware
from explorer.store.schema import (
    LIST_FIELDS,
    METRIC_INTEGER_TYPES,
    SCHEMA_VERSION,
    candidate_table,
    epoch_table,
    experiment_table,
    lease_table,
    revision_table,
    stored_version,
    too_new,
    trial_table,
)

__all__ = [
    "SINCE_MARGIN",
    "STAGE_LIST_COLUMNS",
    "Reader",
    "Seen",
]

# SQLite's bound-parameter limit is far higher, but this keeps every backend happy.
_IN_CHUNK = 5000
_Item = TypeVar("_Item")
# Keys are long strings: fewer per statement keeps each one small (SQLite's variable limit
# was 999 before 3.32).
_KEY_CHUNK = 500
# The store's one filter for a finished trial (the one a rerun skips and another reuses).
_FINISHED = trial_table.c.status == Status.FINISHED


class Reader:
    """Read access to one results database; its engine and connections are its own.

    Open it with `Reader.open`; close it (or use it as a context manager) to
    release its connections.
    """

    def __init__(self, engine: Engine, where: str) -> None:
        self._engine = engine
        self.where = where

    @classmethod
    def open(cls, url_or_path: str | os.PathLike[str]) -> Reader:
        """Open the database at a path, runs directory or SQLAlchemy URL, read-only.

        Creates nothing: a missing database, or one that is not explorer's or
        not of this explorer's schema version, raises StoreError saying so.
        """
        engine, where = open_engine(url_or_path, readonly=True)
        reader = cls(engine, where)
        reader._prepare(reader._check_schema)
        return reader

    def _prepare(self, step: Callable[[Connection], None], *,
                 sqlite_foreign_keys: bool = True) -> None:
        """Run the opening `step` in a transaction; on failure release the engine, and
        turn a driver's error into one line.

        `sqlite_foreign_keys=False` runs it with SQLite's foreign keys off (a schema
        upgrade that rebuilds a table; see explorer.store.migrate): SQLite only changes
        that setting outside a transaction, so it is set before this one begins.
        """
        try:
            with self._engine.connect() as conn:
                switch = not sqlite_foreign_keys and conn.dialect.name == "sqlite"
                if switch:
                    _sqlite_pragma(conn, "foreign_keys=OFF")
                try:
                    with conn.begin():
                        step(conn)
                finally:
                    if switch:
                        _sqlite_pragma(conn, "foreign_keys=ON")
        except StoreError:
            self._engine.dispose()
            raise
        except DBAPIError as err:
            self._engine.dispose()
            raise cannot_open(self.where, err) from None

    def _check_schema(self, conn: Connection) -> None:
        found = stored_version(conn)
        if found is None:
            raise StoreError(f"{self.where} is not an explorer results database (no "
                             "schema_version table): run `explorer run SPEC` to create one")
        if found > SCHEMA_VERSION:
            raise too_new(self.where, found)
        if found < SCHEMA_VERSION:
            raise StoreError(f"{self.where} has schema version {found}, older than this "
                             f"explorer's {SCHEMA_VERSION}: the writer upgrades it in place "
                             "(`python -m explorer.store upgrade` on it, or `explorer run`)")

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.where!r})"

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (for tests and ad-hoc queries)."""
        return self._engine

    def schema_version(self) -> int:
        with self._engine.connect() as conn:
            return stored_version(conn) or 0

    def data_version(self) -> int:
        """A number that changes whenever the writer changes the data: a cache key.

        It counts the writer's transactions (see the module docstring), so it
        also sees a writer's own writes.
        """
        with self._engine.connect() as conn:
            return int(conn.scalar(select(revision_table.c.value)
                                   .where(revision_table.c.id == 1)) or 0)

    def latest_experiment(self, name: str) -> ExperimentRecord | None:
        """The newest version of the experiment `name`, or None when there is none."""
        e = experiment_table.c
        with self._engine.connect() as conn:
            row = conn.execute(select(experiment_table).where(e.name == name)
                               .order_by(e.version.desc()).limit(1)).mappings().first()
        return ExperimentRecord.from_row(row) if row is not None else None

    # -- trials, one at a time -----------------------------------------------------------

    def get_trial(self, experiment_id: int, trial_key: str) -> TrialRecord | None:
        return self._trial(select(trial_table).where(
            trial_table.c.experiment_id == experiment_id, trial_table.c.trial_key == trial_key))

    def find_finished(self, trial_key: str, *,
                      exclude_experiment_id: int | None = None) -> TrialRecord | None:
        """A finished trial with this key in any experiment (originals before copies)."""
        t = trial_table.c
        stmt = select(trial_table).where(t.trial_key == trial_key, _FINISHED)
        if exclude_experiment_id is not None:
            stmt = stmt.where(t.experiment_id != exclude_experiment_id)
        return self._trial(stmt.order_by(t.reused_from_trial_id.is_not(None), t.id).limit(1))

    def find_finished_many(self, trial_keys: Iterable[str], *,
                           exclude_experiment_id: int | None = None) -> dict[str, TrialRecord]:
        """find_finished for many keys at once, a query per chunk of keys: the keys that
        have a finished trial, each with the one find_finished would give."""
        t = trial_table.c
        found: dict[str, TrialRecord] = {}
        with self._engine.connect() as conn:
            for chunk in _chunks(sorted(set(trial_keys)), _KEY_CHUNK):
                stmt = select(trial_table).where(t.trial_key.in_(chunk), _FINISHED)
                if exclude_experiment_id is not None:
                    stmt = stmt.where(t.experiment_id != exclude_experiment_id)
                # find_finished's order within each key: the first row per key wins.
                stmt = stmt.order_by(t.reused_from_trial_id.is_not(None), t.id)
                for row in conn.execute(stmt).mappings():
                    if row["trial_key"] not in found:
                        found[row["trial_key"]] = TrialRecord.from_row(row)
        return found

    def _trial(self, stmt: Select[Any]) -> TrialRecord | None:
        with self._engine.connect() as conn:
            row = conn.execute(stmt).mappings().first()
        return TrialRecord.from_row(row) if row is not None else None

    def finished_trial_keys(self, experiment_id: int) -> set[str]:
        """Trial keys of this experiment already finished (trained or reused): skip them."""
        t = trial_table.c
        with self._engine.connect() as conn:
            return set(conn.scalars(select(t.trial_key).where(
                t.experiment_id == experiment_id, _FINISHED)))

    def trial_keys(self, experiment_id: int) -> dict[tuple[str, int], str]:
        """This experiment's trial keys by (candidate key, seed), which identify a trial
        within one experiment (one spec, so one recipe): a run keeps the key a trial was
        stored under, whichever key version made it."""
        t = trial_table.c
        with self._engine.connect() as conn:
            rows = conn.execute(select(t.candidate_key, t.seed, t.trial_key).where(
                t.experiment_id == experiment_id).order_by(t.id))
            found: dict[tuple[str, int], str] = {}
            for candidate, seed, key in rows:
                found.setdefault((candidate, int(seed)), key)
            return found

    def finished_results(self, experiment_id: int) -> dict[str, dict[str, Any]]:
        """Final metrics and complexity of this experiment's finished trials, by trial key.

        What a search (e.g. optuna) is told about work already done; the
        complexity columns are there because they can be objectives too.
        """
        t, c = trial_table.c, candidate_table.c
        complexity = (select(c.key, func.max(c.params).label("params"),
                             func.max(c.flops).label("flops"), func.max(c.acts).label("acts"))
                      .where(c.experiment_id == experiment_id)
                      .group_by(c.key).subquery())
        stmt = (select(t.trial_key, *(t[n] for n in TRIAL_METRICS),
                       complexity.c.params, complexity.c.flops, complexity.c.acts)
                .outerjoin(complexity, complexity.c.key == t.candidate_key)
                .where(t.experiment_id == experiment_id, _FINISHED))
        with self._engine.connect() as conn:
            rows = conn.execute(stmt).mappings().all()
        return {row["trial_key"]: {k: v for k, v in row.items() if k != "trial_key"}
                for row in rows}

    def leases(self) -> dict[int, Holder]:
        """The driver holding each experiment that has one, by experiment id."""
        t = lease_table.c
        with self._engine.connect() as conn:
            rows = conn.execute(select(lease_table).where(t.token.is_not(None))).mappings()
            return {int(row["experiment_id"]): Holder.from_row(row) for row in rows}

    def status_counts(self, experiment: str | int) -> dict[str, int]:
        """Trials by status for an experiment id, or a name's latest version (0s if none)."""
        t, e = trial_table.c, experiment_table.c
        if isinstance(experiment, str):
            newest = (select(e.id).where(e.name == experiment)
                      .order_by(e.version.desc()).limit(1).scalar_subquery())
            where: ColumnElement[bool] = t.experiment_id == newest
        else:
            where = t.experiment_id == experiment
        counts: dict[str, int] = dict.fromkeys(STATUSES, 0)
        with self._engine.connect() as conn:
            for status, n in conn.execute(select(t.status, func.count())
                                          .where(where).group_by(t.status)):
                counts[status] = int(n)
        return counts

    # -- frames --------------------------------------------------------------------------

    def experiments(self) -> pd.DataFrame:
        """Every version of every experiment, with its trial counts by status."""
        t, c, e = trial_table.c, candidate_table.c, experiment_table.c
        counts = [func.count(t.id).label("trials")] + [
            func.coalesce(func.sum(_is(t.status, s)), 0).label(s) for s in STATUSES]
        per_trial = select(t.experiment_id, *counts).group_by(t.experiment_id).subquery()
        per_cand = (select(c.experiment_id, func.count(func.distinct(c.key)).label("candidates"))
                    .group_by(c.experiment_id).subquery())
        newest = experiment_table.alias()
        latest = (select(func.max(newest.c.version)).where(newest.c.name == e.name)
                  .scalar_subquery())
        stmt = (
            select(e.id.label("experiment_id"), e.name.label("experiment"), e.version,
                   (e.version == latest).label("latest"), e.spec_hash, e.spec_text,
                   e.git_revision, e.package_versions, e.created_at,
                   func.coalesce(per_cand.c.candidates, 0).label("candidates"),
                   func.coalesce(per_trial.c.trials, 0).label("trials"),
                   *(func.coalesce(per_trial.c[s], 0).label(s) for s in STATUSES))
            .outerjoin(per_trial, per_trial.c.experiment_id == e.id)
            .outerjoin(per_cand, per_cand.c.experiment_id == e.id)
            .order_by(e.name, e.version)
        )
        kinds = {"package_versions": "json", "latest": "bool", "created_at": "time",
                 **dict.fromkeys(["experiment_id", "version", "candidates", "trials", *STATUSES],
                                 "int")}
        return self._frame(stmt, kinds)

    def trials_frame(self, experiment_names: Sequence[str] | None = None, *,
                     latest_version_only: bool = True,
                     columns: Sequence[str] | None = None) -> pd.DataFrame:
        """One row per (trial, space), the candidate's columns joined.

        A trial whose network is in several spaces appears once per space; one
        whose candidate was never added appears once with an empty space. With
        `columns`, only those (names of the full frame, in the full frame's order):
        a narrower read for an analysis that needs a few.
        """
        frame = self._trials(experiment_names, latest_version_only, columns, None)
        assert isinstance(frame, pd.DataFrame)
        return frame

    def _trials(self, experiment_names: Sequence[str] | None, latest_version_only: bool,
                columns: Sequence[str] | None, chunk_rows: int | None
                ) -> Any:
        """trials_frame's statement, read whole (`chunk_rows` None) or as an iterator of
        chunks."""
        t, c, e = trial_table.c, candidate_table.c, experiment_table.c
        selected = {
            "experiment": e.name.label("experiment"), "version": e.version,
            "experiment_id": e.id.label("experiment_id"), "trial_id": t.id.label("trial_id"),
            "trial_key": t.trial_key, "key": t.candidate_key.label("key"), "space": c.space,
            **{name: c[name] for name in (*_CANDIDATE_COLUMNS, "architecture", "latency_ms")},
            "measured_train_images_per_sec": c.train_images_per_sec.label(
                "measured_train_images_per_sec"),
            **{name: c[name] for name in ("peak_memory_bytes", "cost_device")},
            **{name: t[name] for name in ("seed", "status", "attempts", "device", "error",
                                          "created_at", "started_at", "finished_at",
                                          *TRIAL_METRICS, "reused_from_trial_id",
                                          *PROVENANCE)},
        }
        lists = {c.name for c in _RECORD_LISTS}
        wanted = set(selected) | lists if columns is None else set(columns)
        unknown = wanted - set(selected) - lists
        if unknown:
            raise ValueError(f"trials_frame has no column {sorted(unknown)[0]!r}")
        if wanted & lists:
            wanted.add("architecture")  # the stage lists come from the stored record
        stmt = (
            select(*(column for name, column in selected.items() if name in wanted))
            .select_from(trial_table).join(experiment_table, e.id == t.experiment_id)
            .outerjoin(candidate_table,
                       and_(c.experiment_id == t.experiment_id, c.key == t.candidate_key))
            .where(*_experiment_filter(experiment_names, latest_version_only))
            .order_by(e.name, e.version, t.id, c.space)
        )
        if chunk_rows is not None:
            return (_trial_columns(frame, wanted, columns)
                    for frame in self._frames(stmt, _TRIAL_KINDS, chunk_rows))
        return _trial_columns(self._frame(stmt, _TRIAL_KINDS), wanted, columns)

    def iter_trials_frames(self, experiment_names: Sequence[str] | None = None, *,
                           latest_version_only: bool = True, rows: int = 50_000
                           ) -> Iterator[pd.DataFrame]:
        """`trials_frame` in chunks of `rows` rows (the first even when empty): what
        `explorer export` streams, its memory flat in the number of trials."""
        return self._trials(experiment_names, latest_version_only, None, rows)

    def iter_epochs_frames(self, experiment_names: Sequence[str] | None = None, *,
                           latest_version_only: bool = True, rows: int = 200_000
                           ) -> Iterator[pd.DataFrame]:
        """`epochs_frame` of the named experiments in chunks of `rows` rows."""
        stmt = _epochs_statement().where(*_experiment_filter(experiment_names,
                                                             latest_version_only))
        return self._frames(stmt, _EPOCH_KINDS, rows)

    def experiment_status(self, experiment_names: Sequence[str] | None = None
                          ) -> pd.DataFrame:
        """Per latest experiment version (of the names given, else every one): its trials by
        status and the best finished test error (NaN when none), counted by the database.

        What `explorer status` shows, without reading a trial into Python.
        """
        t, e = trial_table.c, experiment_table.c
        counts = [func.count(t.id).label("trials"),
                  *(func.coalesce(func.sum(_is(t.status, s)), 0).label(s) for s in STATUSES),
                  func.min(case((t.status == Status.FINISHED, t.test_error))).label(
                      "best_test_error")]
        stmt = (select(e.name.label("experiment"), e.version, e.id.label("experiment_id"),
                       *counts)
                .select_from(experiment_table)
                .outerjoin(trial_table, t.experiment_id == e.id)
                .where(*_experiment_filter(experiment_names, True))
                .group_by(e.name, e.version, e.id)
                .order_by(e.name, e.version))
        kinds = {**dict.fromkeys(["version", "experiment_id", "trials", *STATUSES], "int"),
                 "best_test_error": "float"}
        return self._frame(stmt, kinds)

    def candidate_means(self, experiment_names: Sequence[str] | None = None, *,
                        latest_version_only: bool = True) -> pd.DataFrame:
        """Mean ± std of the error over seeds per candidate and space, aggregated by the
        database: the frame `analysis.by_candidate` makes of `trials_frame`, in its order.

        Over finished trials with a test error; std is the sample's (n - 1), 0 for one
        seed; two passes (the mean, then the squared deviations from it), so no precision
        is lost to cancellation. A candidate never added has an empty space.
        """
        t, c, e = trial_table.c, candidate_table.c, experiment_table.c
        done = and_(t.status == Status.FINISHED, t.test_error.is_not(None),
                    *_experiment_filter(experiment_names, latest_version_only))
        means = (select(t.experiment_id, t.candidate_key, func.min(t.id).label("first_id"),
                        func.avg(t.test_error).label("test_error_mean"),
                        func.count(t.id).label("seeds"),
                        func.avg(t.test_top5_error).label("test_top5_error_mean"),
                        func.avg(t.train_images_per_sec).label("train_images_per_sec"))
                 .select_from(trial_table).join(experiment_table, e.id == t.experiment_id)
                 .where(done).group_by(t.experiment_id, t.candidate_key).subquery())
        spread = (select(t.experiment_id, t.candidate_key,
                         func.sum((t.test_error - means.c.test_error_mean)
                                  * (t.test_error - means.c.test_error_mean)).label("squares"))
                  .select_from(trial_table)
                  .join(means, and_(means.c.experiment_id == t.experiment_id,
                                    means.c.candidate_key == t.candidate_key))
                  .where(t.status == Status.FINISHED, t.test_error.is_not(None))
                  .group_by(t.experiment_id, t.candidate_key).subquery())
        stmt = (select(e.name.label("experiment"), c.space, means.c.candidate_key.label("key"),
                       c.cardinality, c.bottleneck_width, c.depths, c.widths, c.params,
                       c.flops, c.acts, means.c.test_error_mean, spread.c.squares,
                       means.c.seeds, means.c.test_top5_error_mean,
                       means.c.train_images_per_sec, c.latency_ms)
                .select_from(means).join(experiment_table, e.id == means.c.experiment_id)
                .join(spread, and_(spread.c.experiment_id == means.c.experiment_id,
                                   spread.c.candidate_key == means.c.candidate_key))
                .outerjoin(candidate_table, and_(c.experiment_id == means.c.experiment_id,
                                                 c.key == means.c.candidate_key))
                .order_by(e.name, e.version, means.c.first_id, c.space))
        kinds = {**_TRIAL_KINDS, "seeds": "int", "squares": "float",
                 **dict.fromkeys(["test_error_mean", "test_top5_error_mean",
                                  "train_images_per_sec"], "float")}
        frame = self._frame(stmt, kinds)
        squares = frame.pop("squares").to_numpy()
        seeds = frame["seeds"].to_numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            std = np.where(seeds > 1, np.sqrt(squares / np.maximum(seeds - 1, 1)), 0.0)
        frame.insert(frame.columns.get_loc("test_error_mean") + 1, "test_error_std", std)
        return frame

    def epoch_errors(self, epoch: int, experiment_names: Sequence[str] | None = None, *,
                     latest_version_only: bool = True) -> pd.DataFrame:
        """trial_id, epoch and test_error of every trial's epoch `epoch` (those that reported
        it): an early epoch's errors without reading the other epochs."""
        t, e, ep = trial_table.c, experiment_table.c, epoch_table.c
        stmt = (select(ep.trial_id, ep.epoch, ep.test_error)
                .select_from(epoch_table).join(trial_table, t.id == ep.trial_id)
                .join(experiment_table, e.id == t.experiment_id)
                .where(ep.epoch == epoch,
                       *_experiment_filter(experiment_names, latest_version_only))
                .order_by(ep.trial_id))
        return self._frame(stmt, _EPOCH_KINDS)

    def epochs_frame(self, trial_ids: Iterable[int] | None = None,
                     experiment_names: Sequence[str] | None = None, *,
                     latest_version_only: bool = True) -> pd.DataFrame:
        """Per-epoch metrics, one row per (trial, epoch), ordered by trial and epoch.

        Given trial ids, exactly those trials; otherwise the trials of the named
        experiments (all when None), latest versions only unless told.
        """
        ep = epoch_table.c
        base = _epochs_statement()
        if trial_ids is None:
            return self._frame(base.where(*_experiment_filter(experiment_names,
                                                              latest_version_only)), _EPOCH_KINDS)
        ids = sorted({int(i) for i in trial_ids})
        parts = [self._frame(base.where(ep.trial_id.in_(chunk)), _EPOCH_KINDS)
                 for chunk in _chunks(ids)]
        if not parts:
            return self._frame(base.where(false()), _EPOCH_KINDS)
        return parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)

    def _frame(self, stmt: Select[Any], kinds: Mapping[str, str]) -> pd.DataFrame:
        """Run a query into a frame, column by column, with the dtypes `kinds` names.

        Stable dtypes whether the frame is empty or not (the dashboard caches
        on them), built in one go because readers poll this several times a second.
        """
        with self._engine.connect() as conn:
            result = conn.execute(stmt)
            names = list(result.keys())
            # The driver's rows as they come, not SQLAlchemy's: its per-value result
            # processing (SQLite's datetimes parsed one by one) is what a large read
            # spends its time on; `_column` converts each column in one go instead.
            rows = result.cursor.fetchall() if result.cursor is not None else []
        return _frame_of(names, rows, kinds)

    def _frames(self, stmt: Select[Any], kinds: Mapping[str, str],
                rows: int) -> Iterator[pd.DataFrame]:
        """`_frame` a chunk of `rows` rows at a time (the first one even when empty), so
        that memory stays flat in the size of the result.

        SQLite's cursor steps through the result as it is fetched; on PostgreSQL a
        server-side cursor does (SQLAlchemy's streaming, whose rows need no processing
        there: the driver already gives Python's types).
        """
        with self._engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                result = conn.execute(stmt)
                cursor = result.cursor
                fetch: Callable[[], Sequence[Any]] = (
                    (lambda: cursor.fetchmany(rows)) if cursor is not None else list)
            else:
                result = conn.execution_options(stream_results=True).execute(stmt)
                fetch = lambda: result.fetchmany(rows)  # noqa: E731
            names = list(result.keys())
            first = True
            while True:
                chunk = fetch()
                if chunk or first:
                    yield _frame_of(names, chunk, kinds)
                if len(chunk) < rows:
                    return
                first = False


    # -- the dashboard's reads: what it draws, and only what changed ---------------------

    def dashboard_trials(self, experiment_names: Sequence[str]) -> pd.DataFrame:
        """trials_frame's rows for the latest versions of these experiments, with only the
        columns the dashboard draws and filters on.

        No architecture record, provenance, timestamps nor spec: per-stage lists are
        decoded once per distinct value, and the error text only travels for failed
        trials. The frame's ``attrs["seen"]`` (a `Seen`, read in the same transaction) is
        what `dashboard_trials_since` needs to bring it up to date.
        """
        with self._engine.connect() as conn, conn.begin():
            ids = _latest_ids(conn, experiment_names)
            seen = _seen(conn, ids)
            frame = _dashboard_frame(conn, ids)
        frame.attrs["seen"] = seen
        frame.attrs["changed_trials"] = None  # a full read
        return frame

    def experiment_versions(self) -> pd.DataFrame:
        """Every version of every experiment (id, name, version, latest, created_at, its
        spec's text) without `experiments`' trial counts: what a page lists, from the
        experiments table alone."""
        e = experiment_table.c
        newest = experiment_table.alias()
        latest = (select(func.max(newest.c.version)).where(newest.c.name == e.name)
                  .scalar_subquery())
        stmt = (select(e.id.label("experiment_id"), e.name.label("experiment"), e.version,
                       (e.version == latest).label("latest"), e.created_at, e.spec_text)
                .order_by(e.name, e.version))
        return self._frame(stmt, {"experiment_id": "int", "version": "int", "latest": "bool",
                                  "created_at": "time"})

    def dashboard_trials_since(self, known: pd.DataFrame,
                               experiment_names: Sequence[str]) -> pd.DataFrame:
        """`known` (a `dashboard_trials` frame) brought up to date: equal to a new
        `dashboard_trials`, reading only the trials that may have changed.

        The writer changes a trial by adding it (a higher id), starting it (started_at),
        ending it (finished_at), or, while it runs, recording its epochs and provenance,
        or putting it back to pending. So the rows read again are those with a higher id
        than `known` saw, those started or finished since the newest time it saw (less
        SINCE_MARGIN, for transactions that commit out of order), the running ones and
        those `known` had running. What trial rows do not show (a new experiment version,
        candidates added or their measured cost set) makes it one full read. Sets
        ``attrs["changed_trials"]`` to the ids of the trials read again (None after a full
        read).
        """
        seen: Seen | None = known.attrs.get("seen")
        running = known.loc[known["status"] == Status.RUNNING, "trial_id"].unique().tolist() \
            if not known.empty else []
        with self._engine.connect() as conn, conn.begin():
            ids = _latest_ids(conn, experiment_names)
            now = _seen(conn, ids)
            if (seen is None or seen.experiment_ids != now.experiment_ids
                    or seen.candidates != now.candidates or len(running) > _IN_CHUNK):
                fresh = _dashboard_frame(conn, ids)
                fresh.attrs = {"seen": now, "changed_trials": None}
                return fresh
            t = trial_table.c
            changed: list[ColumnElement[bool]] = [t.id > seen.max_trial_id,
                                                  t.status == Status.RUNNING]
            if running:
                changed.append(t.id.in_([int(i) for i in running]))
            if seen.newest_time is not None:
                since = seen.newest_time - SINCE_MARGIN
                changed += [t.started_at >= since, t.finished_at >= since]
            # Ids first, each condition by its own index (a union: SQLite scans every
            # trial for an OR of more than two), then those rows by primary key: a
            # condition on experiment_id would walk its index over every trial instead.
            # Of the trials the time margin brings back, only those whose state differs
            # from `known`'s are read again: a store whose trials share a finish time
            # (a bulk import, a burst of short trials) would otherwise be re-read whole.
            state = [t[name] for name in _STATE]
            _names, states = _raw_rows(conn, union(*(select(*state).where(condition)
                                                     for condition in changed)))
            found = _differing(known, states, {int(i) for i in running})
            parts = [_dashboard_frame(conn, ids, t.id.in_(chunk))
                     for chunk in _chunks(found)]
        fresh = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0] if parts \
            else known.iloc[:0]
        fresh = fresh[fresh["experiment_id"].isin(ids)].reset_index(drop=True)
        merged = _merged(known, fresh)
        merged.attrs = {"seen": now, "changed_trials": tuple(found)}
        return merged


def _merged(known: pd.DataFrame, fresh: pd.DataFrame) -> pd.DataFrame:
    """`known` with `fresh`'s trials (read again) in place of its own, in `_in_order`'s
    order. Trials newer than every known one, of the experiment `known` ends with (a
    sweep's next trials), go at the end as they are: sorting the whole frame again cost
    more than the rest of a poll (30 ms at 100,000 trials)."""
    if fresh.empty:
        return known
    if known.empty:
        return fresh
    if (int(fresh["trial_id"].min()) > int(known["trial_id"].max())
            and (fresh["experiment_id"] == known["experiment_id"].iat[-1]).all()):
        return pd.concat([known, fresh], ignore_index=True)
    kept = known[~known["trial_id"].isin(fresh["trial_id"])]
    return _in_order(pd.concat([kept, fresh], ignore_index=True)) if not kept.empty \
        else fresh


# What `dashboard_trials_since` compares to tell a trial that changed: the writer changes
# one of these whenever it changes what the dashboard's frame shows of the trial.
_STATE = ("id", "status", "epochs_completed", "test_error")


def _differing(known: pd.DataFrame, states: Sequence[Sequence[Any]],
               running: set[int]) -> list[int]:
    """The ids among `states` (rows of _STATE) that `known` lacks, had running, or holds
    with another status, epoch count or error, sorted. Column-wise: the first refresh of
    a store whose trials share a finish time compares tens of thousands of them."""
    if not states:
        return []
    ids_, statuses, epochs, errors = zip(*states, strict=True)
    ids = np.array(ids_, dtype=np.int64)
    # Only the rows of those trials: the whole of `known` is the store's every trial.
    before = known.loc[known["trial_id"].isin(ids),
                       ["trial_id", "status", "epochs_completed", "test_error"]]
    if before.empty:
        return sorted(int(i) for i in ids)
    before = before.drop_duplicates("trial_id")
    at = pd.Index(before["trial_id"].to_numpy(dtype=np.int64)).get_indexer(ids)
    same = (at >= 0) & ~np.isin(ids, list(running))
    at = np.where(at >= 0, at, 0)
    same &= np.array(statuses, dtype=object) == before["status"].to_numpy(dtype=object)[at]
    for values, column in ((epochs, "epochs_completed"), (errors, "test_error")):
        a = np.array(values, dtype="float64")  # None: NaN
        b = before[column].to_numpy(dtype="float64", na_value=np.nan)[at]
        same &= (a == b) | (np.isnan(a) & np.isnan(b))
    return sorted(int(i) for i in ids[~same])


# --- statements ---------------------------------------------------------------------------


def _epochs_statement() -> Select[Any]:
    """epochs_frame's rows: every epoch of every trial, by trial and epoch."""
    t, e, ep = trial_table.c, experiment_table.c, epoch_table.c
    return (
        select(e.name.label("experiment"), e.version, ep.trial_id, t.trial_key,
               t.candidate_key.label("key"), t.seed, ep.epoch,
               *(ep[name] for name in EPOCH_METRICS))
        .select_from(epoch_table).join(trial_table, t.id == ep.trial_id)
        .join(experiment_table, e.id == t.experiment_id)
        .order_by(ep.trial_id, ep.epoch)
    )


def _trial_columns(frame: pd.DataFrame, wanted: set[str],
                   columns: Sequence[str] | None) -> pd.DataFrame:
    """A trials frame read with the stored record: its per-stage lists, the columns asked."""
    if "architecture" not in frame.columns:
        return frame
    frame = _with_stage_lists(frame)
    return frame if columns is None else frame[[n for n in frame.columns if n in wanted]]


def _is(column: Any, value: str) -> Any:
    return case((column == value, 1), else_=0)


def _experiment_filter(names: Sequence[str] | None,
                       latest_only: bool) -> list[ColumnElement[bool]]:
    e = experiment_table.c
    where: list[ColumnElement[bool]] = []
    if names is not None:
        where.append(e.name.in_(list(names)))
    if latest_only:
        newest = experiment_table.alias()
        where.append(e.version == select(func.max(newest.c.version))
                     .where(newest.c.name == e.name).scalar_subquery())
    return where


def _chunks(items: Sequence[_Item], size: int = _IN_CHUNK) -> Iterator[Sequence[_Item]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _sqlite_pragma(conn: Connection, pragma: str) -> None:
    """A PRAGMA on the driver's connection itself, outside SQLAlchemy's transaction (the
    driver is in autocommit mode: the engine begins transactions explicitly)."""
    conn.connection.driver_connection.execute(f"PRAGMA {pragma}")  # type: ignore[union-attr]


# --- frames -------------------------------------------------------------------------------


def _metric_kinds(names: Iterable[str]) -> dict[str, str]:
    """Whole-number metrics as nullable integers, the others as floats (NaN for none)."""
    return {name: "Int" if name in METRIC_INTEGER_TYPES else "float" for name in names}


# How a candidate column the store keeps is read back (explorer/columns.py's `stored`):
# integers as nullable Int64 (a trial whose candidate was never added has none), JSON
# lists as tuples; text as pandas infers it.
_STORED_KINDS = {"int": "Int", "bigint": "Int", "float": "float", "json": "tuple"}
# The candidate's columns the trials frame selects, in the store's order; the per-stage
# lists held in the architecture record come from it (_with_stage_lists).
_CANDIDATE_COLUMNS = tuple(c.name for c in stored_order() if c.stored != "record")
_RECORD_LISTS = tuple(c for c in stored_order() if c.stored == "record")

_TRIAL_KINDS: Mapping[str, str] = {
    **dict.fromkeys(["version", "experiment_id", "trial_id", "seed", "attempts"], "int"),
    **{c.name: _STORED_KINDS[c.stored] for c in stored_order() if c.stored in _STORED_KINDS},
    **dict.fromkeys(["peak_memory_bytes", "reused_from_trial_id"], "Int"),
    **dict.fromkeys(["latency_ms", "measured_train_images_per_sec"], "float"),
    **_metric_kinds(TRIAL_METRICS),
    # Provenance: nullable (a trial that never started has none), so integers as Int64
    # and flags as pandas' nullable booleans.
    **{name: {int: "Int", bool: "boolean"}.get(PROVENANCE_TYPES[name], "") for name in PROVENANCE},
    **dict.fromkeys(["created_at", "started_at", "finished_at"], "time"),
    "architecture": "text",  # decoded by _with_stage_lists
}
_EPOCH_KINDS: Mapping[str, str] = {
    **dict.fromkeys(["version", "trial_id", "seed", "epoch"], "int"),
    **_metric_kinds(EPOCH_METRICS),
}


# The trials frame's columns of per-stage lists (tuples of ints), in its order.
STAGE_LIST_COLUMNS = tuple(c.name for c in stored_order() if c.per_stage)


def _with_stage_lists(frame: pd.DataFrame) -> pd.DataFrame:
    """The per-stage lists the stored architecture record holds (each stage's C and d), as
    tuples, each after the column before it in the store's order (at the end if that was
    not read); the scalar columns hold stage 1's. A sampled space draws them per stage."""
    records = frame.pop("architecture")
    lists = _json_lists(records.tolist(), "stages",
                        tuple(str(c.record_field) for c in _RECORD_LISTS))
    order = [c.name for c in stored_order()]
    for column in _RECORD_LISTS:
        before = order[order.index(column.name) - 1]
        at = (frame.columns.get_loc(before) + 1 if before in frame.columns
              else len(frame.columns))
        frame.insert(at, column.name, lists[str(column.record_field)])
    return frame


def _json_lists(texts: Sequence[Any], member: str | None,
                fields: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """Lists held in JSON texts, as a tuple per text (None for no text or no list).

    With `member` None each text is a list of numbers (the result's key is ""); else
    each text is an object whose `member` is a list of objects, and the result has the
    tuple of each of `fields` over them. Each distinct text is decoded once, all of them
    by pyarrow's JSON reader at once: rows share few texts, and per-text json.loads is
    what made a large trials table slow.
    """
    codes, uniques = pd.factorize(np.array(texts, dtype=object))
    names = list(fields) if member is not None else [""]
    out = {name: np.empty(len(codes), dtype=object) for name in names}
    if not len(uniques):
        return out
    lines = (uniques if member is not None
             else np.array(['{"v":' + text + "}" for text in uniques], dtype=object))
    table = pa_json.read_json(io.BytesIO("\n".join(lines).encode()))
    lists = table.column(member or "v").combine_chunks()
    starts, ends = lists.offsets.to_numpy()[:-1], lists.offsets.to_numpy()[1:]
    empty = lists.is_null().to_numpy(zero_copy_only=False)
    if member is not None:  # a record without stages has no per-stage lists
        empty |= ends == starts
    items = lists.flatten()
    for name in names:
        values = (items.field(name) if member is not None else items).to_numpy(
            zero_copy_only=False).tolist()
        distinct = np.empty(len(uniques) + 1, dtype=object)  # the last: no text (code -1)
        for i, (start, end) in enumerate(zip(starts, ends, strict=True)):
            distinct[i] = None if empty[i] else tuple(values[start:end])
        out[name] = distinct[codes]
    return out


def _frame_of(names: Sequence[str], rows: Sequence[Sequence[Any]],
              kinds: Mapping[str, str]) -> pd.DataFrame:
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(names)
    return pd.DataFrame({name: _column(values, kinds.get(name, ""))
                         for name, values in zip(names, columns, strict=True)},
                        columns=list(names))


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
    if kind == "boolean":
        return pd.array(list(values), dtype="boolean")
    if kind == "time":
        # SQLite hands back text (written in UTC), PostgreSQL aware datetimes.
        return pd.to_datetime(list(values), utc=True, format="ISO8601").as_unit("us")
    if kind == "tuple":
        return _json_lists(values, None)[""]
    if kind == "json":
        return _parsed(values)
    if kind == "text":
        return np.array(values, dtype=object)
    return list(values)


def _parsed(texts: Sequence[Any]) -> np.ndarray:
    """JSON texts decoded (None for no text), each distinct text once."""
    codes, uniques = pd.factorize(np.array(texts, dtype=object))
    decoded = np.empty(len(uniques) + 1, dtype=object)  # the last slot: no text (code -1)
    for i, text in enumerate(uniques):
        decoded[i] = json.loads(text)
    return decoded[codes] if len(codes) else np.empty(0, dtype=object)


# --- the dashboard's reads ----------------------------------------------------------------

# Timestamps come from the driver's clock: rows started or finished this long before the
# newest seen are read again, in case a transaction committed after a later one.
SINCE_MARGIN = timedelta(seconds=60)


@dataclass(frozen=True)
class Seen:
    """What a dashboard frame was read at: the experiments' ids, a digest of the
    candidates (the newest id, and the measured cost set), the newest trial id and the
    newest start or finish time."""

    experiment_ids: tuple[int, ...]
    candidates: tuple[Any, ...]
    max_trial_id: int
    newest_time: datetime | None


def _latest_ids(conn: Connection, names: Sequence[str]) -> tuple[int, ...]:
    e = experiment_table.c
    return tuple(sorted(int(i) for i in conn.scalars(
        select(e.id).where(*_experiment_filter(names, True)))))


def _seen(conn: Connection, ids: tuple[int, ...]) -> Seen:
    """Over the whole store, not only `ids`: a newer time or higher id elsewhere only makes
    the next read look further back, and a candidate change elsewhere a full read. Each
    figure by its own index (schema revision 0003): the newest candidate id, the
    candidates with a measured cost, the newest trial id, start and finish; one aggregate
    per query, since SQLite reads a max from an index only when it is the query's one
    aggregate."""
    if not ids:
        return Seen(ids, (), 0, None)
    c, t = candidate_table.c, trial_table.c
    measured = conn.execute(select(func.count(c.latency_ms), func.sum(c.latency_ms))
                            .where(c.latency_ms.is_not(None))).one()
    newest = [conn.scalar(select(func.max(column))) for column in
              (c.id, t.id, t.started_at, t.finished_at)]
    times = [aware(stamp) for stamp in newest[2:] if stamp is not None]
    return Seen(ids, (newest[0], *measured), int(newest[1] or 0),
                max(times) if times else None)


# The dashboard's columns, in this order: a trial's, then its candidate's (one row per
# space the candidate is in), then the trial's results.
_DASHBOARD_COLUMNS = (
    "experiment", "version", "experiment_id", "trial_id", "trial_key", "key", "space",
    "depths", "widths", "cardinality", "bottleneck_width", "params", "flops", "acts",
    "latency_ms", "seed", "status", "error", "epochs_completed", "test_error",
    "test_top5_error", "train_error", "train_images_per_sec")


def _dashboard_trials_select(ids: tuple[int, ...],
                             rows: ColumnElement[bool] | None = None) -> Select[Any]:
    """The dashboard's trial columns for the trials of experiments `ids`, or for the `rows`
    (by trial id) of any experiment: a condition on the experiment there can make the
    planner walk every trial of it instead of looking the rows up."""
    t, e = trial_table.c, experiment_table.c
    where = (t.experiment_id.in_(ids) if ids else false()) if rows is None else rows
    return (
        select(e.name.label("experiment"), e.version, e.id.label("experiment_id"),
               t.id.label("trial_id"), t.trial_key, t.candidate_key.label("key"), t.seed,
               t.status, case((t.status == Status.FAILED, t.error), else_=None).label("error"),
               t.epochs_completed, t.test_error, t.test_top5_error, t.train_error,
               t.train_images_per_sec)
        .select_from(trial_table).join(experiment_table, e.id == t.experiment_id)
        .where(where)
    )


def _dashboard_candidates_select(ids: Sequence[int],
                                 keys: Sequence[str] | None = None) -> Select[Any]:
    """The dashboard's candidate columns for experiments `ids` (only `keys`, if given)."""
    c = candidate_table.c
    where = [c.experiment_id.in_([int(i) for i in ids])]
    if keys is not None:
        where.append(c.key.in_(list(keys)))
    return (select(c.experiment_id, c.key, c.space, c.depths, c.widths, c.cardinality,
                   c.bottleneck_width, c.params, c.flops, c.acts, c.latency_ms)
            .where(*where))


_TEXT_COLUMNS = ("experiment", "trial_key", "key", "space", "status", "error")


def _in_order(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows in the order of experiment (name, version), trial and space, by a stable sort
    on integers and the spaces' codes."""
    experiments = frame[["experiment", "version", "experiment_id"]].drop_duplicates()
    rank = dict(zip(experiments.sort_values(["experiment", "version"])["experiment_id"],
                    range(len(experiments)), strict=True))
    spaces = frame["space"].astype(object)
    codes, _ = pd.factorize(spaces.where(spaces.notna(), ""), sort=True)
    order = np.lexsort((codes, frame["trial_id"].to_numpy(),
                        frame["experiment_id"].map(rank).to_numpy()))
    return frame.iloc[order].reset_index(drop=True)


def _dashboard_frame(conn: Connection, ids: tuple[int, ...],
                     rows: ColumnElement[bool] | None = None) -> pd.DataFrame:
    """The dashboard's frame (`_DASHBOARD_COLUMNS`) for the trials of experiments `ids`, or
    for the `rows` (by trial id): the trials and their candidates read apart and joined
    here, since SQLite's join of 100,000 trials to their candidates costs twice the two
    reads; the candidates' per-stage lists decoded by pyarrow at once (`_json_lists`)."""
    trials = _rows_frame(conn, _dashboard_trials_select(ids, rows))
    experiments = sorted({int(i) for i in trials["experiment_id"].unique()})
    if rows is None or trials.empty:
        stmts = [_dashboard_candidates_select(experiments)] if experiments else []
    else:
        keys = sorted({str(k) for k in trials["key"].unique()})
        stmts = [_dashboard_candidates_select(experiments, chunk) for chunk in _chunks(keys)]
    parts = [_rows_frame(conn, stmt) for stmt in stmts]
    candidates = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0] \
        if parts else _rows_frame(conn, _dashboard_candidates_select([]))
    frame = trials.merge(candidates, how="left", on=["experiment_id", "key"], sort=False)
    for name in LIST_FIELDS:  # a trial without its candidate row: None, as the join gave
        if name in frame.columns and frame[name].isna().any():
            frame[name] = frame[name].astype(object).where(frame[name].notna(), None)
    frame = _in_order(frame[list(_DASHBOARD_COLUMNS)]) if not frame.empty \
        else frame[list(_DASHBOARD_COLUMNS)].reset_index(drop=True)
    # Text as pandas' string dtype whatever the rows hold (all None would infer object),
    # so that a few rows read again concatenate to the dtypes of a full read.
    return frame.astype(dict.fromkeys(_TEXT_COLUMNS, "str"))


def _raw_rows(conn: Connection, stmt: Select[Any] | CompoundSelect[Any]
              ) -> tuple[list[str], Sequence[Any]]:
    """The statement's column names and rows, from the driver's cursor where it has one
    (SQLAlchemy's row objects cost more than the read)."""
    result = conn.execute(stmt)
    names = list(result.keys())
    cursor = result.cursor if conn.dialect.name == "sqlite" else None
    return names, cursor.fetchall() if cursor is not None else result.all()


def _rows_frame(conn: Connection, stmt: Select[Any]) -> pd.DataFrame:
    """The statement's rows as a frame, column by column (as Reader._frame does)."""
    names, rows = _raw_rows(conn, stmt)
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(names)
    return pd.DataFrame({name: _column(values, _TRIAL_KINDS.get(name, ""))
                         if name not in LIST_FIELDS else _json_lists(values, None)[""]
                         for name, values in zip(names, columns, strict=True)}, columns=names)


