"""Writing the results database: the sweep driver's side, and only the driver's.

There is one writer (the driver); it reads too, so a `Writer` is a `Reader`
with write methods and a read-write engine. Opening one creates the database
if needed and upgrades its schema to this explorer's (explorer.store.migrate).

Every write method is idempotent and runs in its own short transaction, so a
resumed sweep can replay its calls and a polling reader is never held up for
long; each bumps the ``store_revision`` counter readers poll (Reader.data_version).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from itertools import groupby
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Connection,
    Engine,
    Table,
    and_,
    bindparam,
    func,
    insert,
    literal_column,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from explorer.metrics import EPOCH_METRICS, OUTCOMES, PROVENANCE, TRIAL_METRICS, Status
from explorer.store.engine import open_engine, resolve
from explorer.store.errors import LeaseHeld, SpecChanged, StoreError
from explorer.store.provenance import differing_keys, environment_info
from explorer.store.reader import _KEY_CHUNK, Reader, _chunks
from explorer.store.records import (
    ExperimentRecord,
    Holder,
    TrialRecord,
    candidate_record,
    dumps,
    json_dict,
    now,
    pick,
)
from explorer.store.retry import read_only_store
from explorer.store.schema import (
    CANDIDATE_FIELDS,
    COST_FIELDS,
    LIST_FIELDS,
    candidate_table,
    epoch_table,
    experiment_table,
    lease_table,
    revision_table,
    trial_table,
)

if TYPE_CHECKING:  # annotations only: the store takes Candidates without importing them
    from explorer.space import Candidate

__all__ = [
    "Writer",
]


class Writer(Reader):
    """The one writer of a results database (it reads as a Reader does).

    Open it with `Writer.open`; close it (or use it as a context manager) to
    release its connections.
    """

    def __init__(self, engine: Engine, where: str) -> None:
        super().__init__(engine, where)
        self._local = threading.local()  # the open batch's connection, per thread

    @classmethod
    def open(cls, url_or_path: str | os.PathLike[str]) -> Writer:
        """Open, creating it if missing, the database at a path, runs directory or URL,
        and upgrade its schema to this explorer's (a newer one raises StoreError)."""
        from explorer.store import migrate  # Alembic: only writers pay for importing it

        engine, where = open_engine(url_or_path, readonly=False)
        writer = cls(engine, where)

        def prepare(conn: Connection) -> None:
            migrate.upgrade(conn, where)
            # A write that changes nothing (readers' data_version stays): a read-only file
            # (SQLite opens one read-only without a word) is found here, in one line, not
            # at the sweep's first write.
            conn.execute(update(revision_table).where(revision_table.c.id == 1)
                         .values(value=revision_table.c.value))

        try:
            writer._prepare(prepare, sqlite_foreign_keys=False)
        except StoreError as problem:
            path = resolve(url_or_path)
            if isinstance(path, Path) and not _writable(path):
                raise read_only_store(where) from None
            raise problem from None
        return writer

    def __enter__(self) -> Writer:
        return self

    # -- batches -------------------------------------------------------------------------

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Every write method called inside, on this thread, joins one transaction.

        The rows are exactly those of the same calls one by one; readers see them all at
        once, at the end, with one bump of the revision counter. A write that fails rolls
        the whole batch back. Nested batches join the outer one. The lease's methods
        (called from the heartbeat thread) never join: they commit on their own.
        """
        if getattr(self._local, "conn", None) is not None:
            yield
            return
        with self._engine.begin() as conn:
            self._local.conn, self._local.changed = conn, False
            try:
                yield
                if self._local.changed:
                    _bump(conn)
            finally:
                self._local.conn = None

    @contextlib.contextmanager
    def _begin(self) -> Iterator[Connection]:
        """The batch's connection inside `batch()`, else a transaction of its own."""
        joined = getattr(self._local, "conn", None)
        if joined is not None:
            yield joined
            return
        with self._engine.begin() as conn:
            yield conn

    def _bump(self, conn: Connection) -> None:
        """Count the write: now, or once at the end of the batch it is part of."""
        if getattr(self._local, "conn", None) is conn:
            self._local.changed = True
        else:
            _bump(conn)

    # -- experiments ---------------------------------------------------------------------

    def create_or_get_experiment(
        self, name: str, spec_text: str, spec_hash: str, spec_json: Mapping[str, Any] | str,
        *, new_version: bool = False, environment: Mapping[str, Any] | None = None,
        ignored_keys: Collection[str] = (),
    ) -> ExperimentRecord:
        """The latest version of `name` if it has this spec, else a new one.

        An unchanged hash returns the latest version; a changed spec raises
        SpecChanged naming the dotted keys that differ (a hash change with no
        semantic difference, e.g. comments, or differences only at the dotted keys of
        `ignored_keys`, returns the latest version), unless `new_version`, which always
        adds version+1 beside the old ones. `environment` defaults to environment_info().
        """
        spec = json_dict(spec_json)
        env = dict(environment) if environment is not None else environment_info()
        for attempt in (1, 2):
            try:
                return self._create_or_get(name, spec_text, spec_hash, spec, new_version, env,
                                           frozenset(ignored_keys))
            except IntegrityError:
                if attempt == 2:  # a concurrent writer took the version twice in a row
                    raise
        raise AssertionError("unreachable")

    def _create_or_get(self, name: str, spec_text: str, spec_hash: str, spec: dict[str, Any],
                       new_version: bool, env: Mapping[str, Any],
                       ignored_keys: frozenset[str]) -> ExperimentRecord:
        with self._engine.begin() as conn:
            latest = _latest(conn, name)
            if latest is not None and not new_version:
                if latest.spec_hash == spec_hash:
                    return latest
                changed = [k for k in differing_keys(latest.spec_json, spec)
                           if k not in ignored_keys]
                if changed:
                    raise SpecChanged(name, changed, latest.version)
                return latest
            conn.execute(insert(experiment_table).values(
                name=name, version=1 if latest is None else latest.version + 1,
                spec_text=spec_text, spec_hash=spec_hash, spec_json=dumps(spec),
                git_revision=env.get("git_revision"),
                package_versions=dumps(env.get("package_versions") or {}), created_at=now(),
            ))
            _bump(conn)
            created = _latest(conn, name)
            assert created is not None
            return created

    # -- candidates ----------------------------------------------------------------------

    def add_candidates(self, experiment_id: int, candidates: Iterable[Candidate]) -> int:
        """Insert or update candidates by (space, key); measured costs are kept.

        Returns the number of candidates given.
        """
        records = [{"experiment_id": experiment_id, **candidate_record(c)} for c in candidates]
        if not records:
            return 0
        columns = ["architecture", *CANDIDATE_FIELDS, *LIST_FIELDS]
        with self._begin() as conn:
            _upsert(conn, candidate_table, records, ("experiment_id", "space", "key"), columns)
            self._bump(conn)
        return len(records)

    def set_cost(self, experiment_id: int, key: str, cost: Mapping[str, Any]) -> None:
        """Measured cost of a candidate (every space it is in): latency, throughput, memory.

        Keys: latency_ms, train_images_per_sec, peak_memory_bytes, and
        cost_device (or device).
        """
        given = dict(cost)
        if "device" in given and "cost_device" not in given:
            given["cost_device"] = given.pop("device")
        values = pick(given, candidate_table, COST_FIELDS)
        if not values:
            return
        c = candidate_table.c
        with self._begin() as conn:
            done = conn.execute(update(candidate_table).where(
                c.experiment_id == experiment_id, c.key == key).values(**values))
            if not done.rowcount:
                raise StoreError(f"no candidate {key} in experiment {experiment_id}: "
                                 "add_candidates() it first")
            self._bump(conn)

    # -- trials --------------------------------------------------------------------------

    def add_trials(self, experiment_id: int, trials: Iterable[tuple[str, str, int]]) -> int:
        """Insert the missing (trial_key, candidate_key, seed) as pending; returns how many."""
        wanted = {key: (candidate, int(seed)) for key, candidate, seed in trials}
        t = trial_table.c
        with self._begin() as conn:
            # Only the keys asked about, a chunk per query through the unique index: the
            # cost follows the trials given, not the trials the experiment already has.
            have: set[str] = set()
            for chunk in _chunks(list(wanted), _KEY_CHUNK):
                have.update(conn.scalars(select(t.trial_key).where(
                    t.experiment_id == experiment_id, t.trial_key.in_(chunk))))
            at = now()
            new = [{"experiment_id": experiment_id, "trial_key": key, "candidate_key": cand,
                    "seed": seed, "status": Status.PENDING, "attempts": 0, "created_at": at}
                   for key, (cand, seed) in wanted.items() if key not in have]
            if new:
                _insert_missing(conn, trial_table, new, ("experiment_id", "trial_key"))
                self._bump(conn)
        return len(new)

    def mark_running(self, experiment_id: int, trial_key: str, device: str | None) -> None:
        """A new attempt starts: status running, attempts + 1, error and finish cleared."""
        with self._begin() as conn:
            trial_id = _trial_id(conn, experiment_id, trial_key)
            conn.execute(update(trial_table).where(trial_table.c.id == trial_id).values(
                status=Status.RUNNING, attempts=trial_table.c.attempts + 1, device=device,
                started_at=now(), finished_at=None, error=None,
            ))
            self._bump(conn)

    def record_provenance(self, experiment_id: int, trial_key: str,
                          provenance: Mapping[str, Any]) -> None:
        """What the trial's attempt runs with (explorer/metrics.py's PROVENANCE, by name)."""
        values = pick(provenance, trial_table, PROVENANCE)
        if not values:
            return
        with self._begin() as conn:
            trial_id = _trial_id(conn, experiment_id, trial_key)
            conn.execute(update(trial_table).where(trial_table.c.id == trial_id).values(values))
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
        rows = list(history)
        if any("epoch" not in metrics for metrics in rows):
            raise ValueError("every epoch's metrics need an 'epoch'")
        if not rows:
            return
        with self._begin() as conn:
            trial_id = _trial_id(conn, experiment_id, trial_key)
            records = [{"trial_id": trial_id, "epoch": int(metrics["epoch"]),
                        **pick(metrics, epoch_table, EPOCH_METRICS)} for metrics in rows]
            # One executemany per run of rows giving the same columns (_upsert's batches);
            # each row updates only the columns it gives.
            _upsert(conn, epoch_table, records, ("trial_id", "epoch"), EPOCH_METRICS)
            conn.execute(update(trial_table).where(trial_table.c.id == trial_id)
                         .values(epochs_completed=_epoch_count(trial_id)))
            self._bump(conn)

    def finish_trial(self, experiment_id: int, trial_key: str, status: Status,
                     metrics: Mapping[str, Any], error: str | None = None) -> None:
        """Record the outcome (finished, stopped or failed), the final metrics given, the error.

        epochs_completed defaults to the number of epoch rows recorded.
        """
        if status not in OUTCOMES:
            raise ValueError(f"finish_trial status must be one of {OUTCOMES}, got {status!r}")
        values: dict[str, Any] = pick(metrics, trial_table, TRIAL_METRICS)
        with self._begin() as conn:
            trial_id = _trial_id(conn, experiment_id, trial_key)
            values.setdefault("epochs_completed", _epoch_count(trial_id))
            conn.execute(update(trial_table).where(trial_table.c.id == trial_id).values(
                status=status, error=error, finished_at=now(), **values))
            self._bump(conn)

    def finish_many(self, experiment_id: int,
                    results: Iterable[tuple[str, Mapping[str, Any], Sequence[Mapping[str, Any]]]],
                    ) -> int:
        """finish_trial(status 'finished') and record_epochs for many trials in one
        transaction: (trial_key, final metrics, epoch history) each, the trials added
        first. Batched statements, so a population trained elsewhere (explorer import)
        is written in seconds, not a transaction per trial. Idempotent like the two.
        Returns how many trials were given.
        """
        given = list(results)
        if not given:
            return 0
        t = trial_table.c
        with self._begin() as conn:
            ids: dict[str, int] = {}
            keys = [key for key, _, _ in given]
            for chunk in _chunks(keys, _KEY_CHUNK):
                ids.update((str(key), int(i)) for key, i in conn.execute(
                    select(t.trial_key, t.id).where(t.experiment_id == experiment_id,
                                                    t.trial_key.in_(chunk))))
            missing = [key for key in keys if key not in ids]
            if missing:
                raise StoreError(f"no trial {missing[0]} in experiment {experiment_id}: "
                                 "add_trials() it first")
            at = now()
            updates, epochs = [], []
            for key, metrics, history in given:
                values: dict[str, Any] = dict.fromkeys(TRIAL_METRICS)
                values.update(pick(metrics, trial_table, TRIAL_METRICS))
                if values["epochs_completed"] is None:
                    values["epochs_completed"] = len(history)
                updates.append({"_id": ids[key], **values})
                for row in history:
                    epochs.append({"trial_id": ids[key], "epoch": int(row["epoch"]),
                                   **dict.fromkeys(EPOCH_METRICS),
                                   **pick(row, epoch_table, EPOCH_METRICS)})
            conn.execute(update(trial_table).where(t.id == bindparam("_id")).values(
                status=Status.FINISHED, error=None, started_at=at, finished_at=at,
                **{name: bindparam(name) for name in TRIAL_METRICS}), updates)
            if epochs:
                _upsert(conn, epoch_table, epochs, ("trial_id", "epoch"), EPOCH_METRICS)
            self._bump(conn)
        return len(given)

    def requeue_running(self, experiment_id: int) -> int:
        """Running trials of a driver that died go back to pending; returns how many."""
        t = trial_table.c
        with self._begin() as conn:
            done = conn.execute(update(trial_table)
                                .where(t.experiment_id == experiment_id, t.status == Status.RUNNING)
                                .values(status=Status.PENDING))
            if done.rowcount:
                self._bump(conn)
            return int(done.rowcount or 0)

    def copy_finished(self, experiment_id: int, trial_key: str, source: TrialRecord) -> None:
        """Reuse a finished trial: its final metrics and epoch rows, and a link to it.

        The trial is added if missing. Its timestamps are the copy's (when the
        result became part of this experiment); `seconds` stays the source's
        training time. Copying a trial onto itself does nothing.
        """
        t = trial_table.c
        with self._begin() as conn:
            src = conn.execute(select(trial_table).where(t.id == source.id)).mappings().first()
            if src is None or src["status"] != Status.FINISHED:
                raise StoreError(f"trial {source.id} is not a finished trial to copy")
            if src["experiment_id"] == experiment_id and src["trial_key"] == trial_key:
                return
            at = now()
            _insert_missing(conn, trial_table, [{
                "experiment_id": experiment_id, "trial_key": trial_key,
                "candidate_key": src["candidate_key"], "seed": src["seed"],
                "status": Status.PENDING, "attempts": 0, "created_at": at}],
                ("experiment_id", "trial_key"))
            trial_id = _trial_id(conn, experiment_id, trial_key)
            conn.execute(update(trial_table).where(t.id == trial_id).values(
                status=Status.FINISHED, error=None, device=src["device"], started_at=at,
                finished_at=at, reused_from_trial_id=src["id"],
                **{name: src[name] for name in (*TRIAL_METRICS, *PROVENANCE)},
            ))
            epochs = [{**dict(row), "trial_id": trial_id} for row in conn.execute(
                select(epoch_table).where(epoch_table.c.trial_id == src["id"])).mappings()]
            if epochs:
                _upsert(conn, epoch_table, epochs, ("trial_id", "epoch"), EPOCH_METRICS)
            self._bump(conn)


# --- statements ---------------------------------------------------------------------------


    # -- the driver's lease --------------------------------------------------------------

    def take_lease(self, experiment: ExperimentRecord, token: str, host: str, pid: int,
                   gone: Callable[[Holder], bool]) -> Holder | None:
        """Hold `experiment` for the driver `token` (its `host` and `pid`).

        Atomic on every backend: the row is locked (PostgreSQL's FOR UPDATE; on
        SQLite the writer's transactions hold the write lock from the start), so of
        two drivers exactly one gets it. Returns the holder taken over from, when
        `gone(holder)` says it is gone, or None when the lease was free; raises
        LeaseHeld naming a holder that is alive.
        """
        key = experiment.id
        with self._engine.begin() as conn:
            _insert_missing(conn, lease_table, [{"experiment_id": key}], ("experiment_id",))
            row = conn.execute(select(lease_table).where(lease_table.c.experiment_id == key)
                               .with_for_update()).mappings().one()
            previous = Holder.from_row(row) if row["token"] and row["token"] != token else None
            if previous is not None and not gone(previous):
                age = (now() - previous.heartbeat_at).total_seconds()
                raise LeaseHeld(f"{experiment.name!r} v{experiment.version}", previous, age)
            at = now()
            conn.execute(update(lease_table).where(lease_table.c.experiment_id == key).values(
                token=token, host=host, pid=pid, started_at=at, heartbeat_at=at))
            _bump(conn)
        return previous

    def heartbeat(self, experiment_id: int, token: str) -> bool:
        """Say the holder `token` is alive; False when it no longer holds the lease."""
        t = lease_table.c
        with self._engine.begin() as conn:
            done = conn.execute(update(lease_table)
                                .where(t.experiment_id == experiment_id, t.token == token)
                                .values(heartbeat_at=now()))
        return bool(done.rowcount)

    def release_lease(self, experiment_id: int, token: str) -> None:
        """Give the lease back (if `token` still holds it): the next driver starts at once."""
        t = lease_table.c
        with self._engine.begin() as conn:
            done = conn.execute(update(lease_table)
                                .where(t.experiment_id == experiment_id, t.token == token)
                                .values(token=None, host=None, pid=None, started_at=None,
                                        heartbeat_at=None))
            if done.rowcount:
                _bump(conn)


def _writable(path: Path) -> bool:
    """Whether SQLite can write the file and its folder (its -wal and -shm files); access(2)
    answers False on a read-only mount and for an immutable file, even to root."""
    folder_ok = os.access(path.parent, os.W_OK)
    return folder_ok and (not path.exists() or os.access(path, os.W_OK))


def _bump(conn: Connection) -> None:
    """Count this write transaction (what Reader.data_version reports)."""
    conn.execute(update(revision_table).where(revision_table.c.id == 1)
                 .values(value=revision_table.c.value + 1))


def _latest(conn: Connection, name: str) -> ExperimentRecord | None:
    e = experiment_table.c
    row = conn.execute(select(experiment_table).where(e.name == name)
                       .order_by(e.version.desc()).limit(1)).mappings().first()
    return ExperimentRecord.from_row(row) if row is not None else None


def _trial_id(conn: Connection, experiment_id: int, trial_key: str) -> int:
    t = trial_table.c
    found = conn.scalar(select(t.id).where(t.experiment_id == experiment_id,
                                           t.trial_key == trial_key))
    if found is None:
        raise StoreError(f"no trial {trial_key} in experiment {experiment_id}: "
                         "add_trials() it first")
    return int(found)


def _epoch_count(trial_id: int) -> Any:
    return (select(func.count()).select_from(epoch_table)
            .where(epoch_table.c.trial_id == trial_id).scalar_subquery())


def _upsert(conn: Connection, table: Table, rows: list[dict[str, Any]],
            keys: Sequence[str], columns: Sequence[str]) -> None:
    """Insert rows, or update `columns` of those whose `keys` exist: batched statements
    on SQLite and PostgreSQL, row by row elsewhere (fine for a single writer)."""
    dialect = conn.dialect.name
    if dialect in ("sqlite", "postgresql"):
        make = sqlite.insert if dialect == "sqlite" else postgresql.insert
        for batch in _batches(rows, keys):
            names = [c for c in columns if c in batch[0]]
            stmt = make(table)
            # Spelled out: `stmt.excluded` builds a whole column collection per statement.
            stmt = (stmt.on_conflict_do_update(index_elements=list(keys),
                                               set_={c: literal_column(f"excluded.{c}")
                                                     for c in names})
                    if names else stmt.on_conflict_do_nothing(index_elements=list(keys)))
            conn.execute(stmt, batch)  # executemany
        return
    for row in rows:
        match = and_(*(table.c[k] == row[k] for k in keys))
        values = {c: row[c] for c in columns if c in row}
        done = conn.execute(update(table).where(match).values(values)) if values else None
        if done is None or not done.rowcount:
            exists = conn.scalar(select(func.count()).select_from(table).where(match))
            if not exists:
                conn.execute(insert(table).values(row))


def _insert_missing(conn: Connection, table: Table, rows: list[dict[str, Any]],
                    keys: Sequence[str]) -> None:
    """Insert the rows whose keys are not there yet; never an IntegrityError for a duplicate."""
    _upsert(conn, table, rows, keys, ())


def _batches(rows: list[dict[str, Any]], keys: Sequence[str]) -> Iterator[list[dict[str, Any]]]:
    """The rows in order, cut into runs that carry the same columns and no key twice.

    One executemany needs one set of columns; and a driver may send it as a multi-row
    VALUES (psycopg2 does), where PostgreSQL refuses ON CONFLICT DO UPDATE reaching
    a row twice. So each batch applies exactly as its rows one by one would.
    """
    for _columns, run in groupby(rows, key=_column_names):
        batch: list[dict[str, Any]] = []
        seen: set[tuple[Any, ...]] = set()
        for row in run:
            key = tuple(row[k] for k in keys)
            if key in seen:
                yield batch
                batch, seen = [], set()
            batch.append(row)
            seen.add(key)
        yield batch


def _column_names(row: dict[str, Any]) -> tuple[str, ...]:
    return tuple(row)
