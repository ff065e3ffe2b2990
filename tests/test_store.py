"""explorer.store: schema, idempotent writes, reuse across experiments, read-only
readers, and one writer with polling readers in other processes on one database.

The backend-neutral tests (those taking `store_url`, `store` or `first_release`) run
twice, on SQLite and on PostgreSQL: each on a fresh database, on PostgreSQL one made
on the server EXPLORER_TEST_POSTGRES_URL names (conftest.py's `store_url`; .ci/run
starts a throwaway server). Without that variable the PostgreSQL runs skip, except
under CI, where they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from conftest import STORE_BACKENDS
from fixtures_store import make_fixture_store

from explorer.arch import Arch, Stage, resnext29
from explorer.complexity import count
from explorer.space import Candidate
from explorer.store import (
    DB_FILENAME,
    SCHEMA_VERSION,
    Reader,
    SpecChanged,
    StoreError,
    Writer,
    differing_keys,
    environment_info,
    git_revision,
    package_versions,
)
from explorer.store.__main__ import main as store_main
from explorer.store.migrate import alembic_config
from explorer.store.schema import metadata

REPO = Path(__file__).resolve().parents[1]
SPEC: dict[str, Any] = {"name": "exp", "train": {"epochs": 3, "lr": 0.1, "seeds": [0]},
        "spaces": {"preserved": {"axes": {"cardinality": [1, 2]}}}}
ENV = {"git_revision": None, "package_versions": {"explorer": "0.1.0"}}


def candidate(space: str, c: int = 8, d: int = 64) -> Candidate:
    arch = resnext29(c, d)
    cost = count(arch, 32, 10)
    return Candidate(space, arch, cost, cost)


def experiment(store: Writer, name: str = "exp", spec: dict[str, Any] | None = None,
               **kwargs: Any) -> int:
    spec = spec or SPEC
    record = store.create_or_get_experiment(name, f"name: {name}\n", json.dumps(spec), spec,
                                            environment=ENV, **kwargs)
    return record.id


@contextmanager
def plain_engine(url: str) -> Iterator[sa.Engine]:
    """An engine with none of the store's code (no pragmas, no read-only session)."""
    engine = sa.create_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def store(store_url: str) -> Iterator[Writer]:
    with Writer.open(store_url) as opened:
        yield opened


# --- opening and schema -------------------------------------------------------------------


def test_writer_creates_the_schema_in_wal_mode(tmp_path: Path) -> None:
    with Writer.open(tmp_path / "runs") as store:
        assert store.where == str(tmp_path / "runs" / DB_FILENAME)
        tables = set(sa.inspect(store.engine).get_table_names())
        assert {"experiments", "candidates", "trials", "epochs", "schema_version"} <= tables
        assert store.schema_version() == SCHEMA_VERSION
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    # Opening again (a resumed run) keeps the one schema_version row (per version applied).
    with Writer.open(f"sqlite:///{tmp_path / 'runs' / DB_FILENAME}") as again, \
            again.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM schema_version")).scalar() == \
            SCHEMA_VERSION


def test_reopening_keeps_one_schema_version_row_per_version(store_url: str) -> None:
    for _ in range(2):  # the second open is a resumed run's
        with Writer.open(store_url) as store, store.engine.connect() as conn:
            assert store.schema_version() == SCHEMA_VERSION
            assert {"experiments", "candidates", "trials", "epochs", "schema_version"} <= \
                set(sa.inspect(conn).get_table_names())
            versions = conn.execute(sa.text("SELECT version FROM schema_version "
                                            "ORDER BY version")).scalars().all()
            assert versions == list(range(1, SCHEMA_VERSION + 1))


def test_an_explicit_file_path_is_the_database(tmp_path: Path) -> None:
    with Writer.open(tmp_path / "results.sqlite") as store:
        assert store.where == str(tmp_path / "results.sqlite")
    assert (tmp_path / "results.sqlite").is_file()


def test_readonly_open_of_a_missing_database_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(StoreError) as caught:
        Reader.open(tmp_path / "runs")
    message = str(caught.value)
    assert str(tmp_path / "runs" / DB_FILENAME) in message and "explorer run" in message
    assert "\n" not in message
    assert list(tmp_path.iterdir()) == []  # nothing created


def test_readonly_open_of_something_else_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty.db").write_bytes(b"")
    with pytest.raises(StoreError, match="not an explorer results database"):
        Reader.open(tmp_path / "empty.db")
    (tmp_path / "junk.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match=r"junk\.db"):
        Reader.open(tmp_path / "junk.db")


WRITER_METHODS = ("create_or_get_experiment", "add_candidates", "add_trials", "mark_running",
                  "record_epoch", "record_epochs", "finish_trial", "requeue_running",
                  "copy_finished", "set_cost")


def test_readonly_store_cannot_write(store_url: str) -> None:
    """On SQLite the file is opened read-only; on PostgreSQL the session is."""
    with Writer.open(store_url) as writer:
        experiment(writer)
    with Reader.open(store_url) as reader:
        for _ in range(2):  # and still after the pool took the connection back and reset it
            with pytest.raises(sa.exc.DBAPIError, match=r"(?i)read-?only"), \
                    reader.engine.begin() as conn:
                conn.execute(sa.text("INSERT INTO schema_version VALUES (99, '2020-01-01')"))
        # No writer method to call: a Reader is read-only by construction.
        assert [name for name in WRITER_METHODS if hasattr(reader, name)] == []
        assert all(callable(getattr(Writer, name)) for name in WRITER_METHODS)
        assert reader.experiments()["experiment"].tolist() == ["exp"]
    with Reader.open(store_url) as reader:  # after the writer closed (no -shm on SQLite)
        assert reader.schema_version() == SCHEMA_VERSION


def test_readonly_postgres_never_creates_tables(postgres_url: str) -> None:
    with pytest.raises(StoreError, match="explorer run") as caught:
        Reader.open(postgres_url)
    assert "\n" not in str(caught.value)
    with plain_engine(postgres_url) as engine:
        assert sa.inspect(engine).get_table_names() == []


def test_in_memory_store_for_quick_use() -> None:
    with Writer.open("sqlite://") as store:
        exp = experiment(store)
        store.add_trials(exp, [("t", "k", 0)])
        assert store.status_counts(exp)["pending"] == 1
    with pytest.raises(StoreError, match="in-memory"):
        Reader.open("sqlite://")


# --- schema versions and migrations -------------------------------------------------------

FIRST_RELEASE_DB = REPO / "tests" / "data" / "store_v1.db"


def _rows(url: str, table: str) -> list[tuple[Any, ...]]:
    """Every row of a table in primary-key order, as the driver gives it (no store code)."""
    with plain_engine(url) as engine, engine.connect() as conn:
        key = sa.inspect(conn).get_pk_constraint(table)["constrained_columns"]
        rows = conn.execute(sa.text(f"SELECT * FROM {table} ORDER BY {', '.join(key)}"))
        return [tuple(row) for row in rows]


def _schema(path: Path) -> dict[str, list[str]]:
    """What SQLite says each table and index is, by name, without Alembic's own table.

    Each definition's lines in sorted order: a table rebuilt by Alembic's batch mode
    lists its unnamed constraints (the foreign keys) in no fixed order.
    """
    with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as conn:
        return {name: sorted(line.strip().rstrip(",") for line in sql.splitlines())
                for name, sql in conn.execute(
                    "SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL "
                    "AND name NOT LIKE 'alembic%'")}


@pytest.fixture
def first_release_db(tmp_path: Path) -> Path:
    """A copy of the database the first release wrote (tests/data/README.md)."""
    copy = tmp_path / "runs" / DB_FILENAME
    copy.parent.mkdir()
    shutil.copyfile(FIRST_RELEASE_DB, copy)
    return copy


def _utc(value: Any) -> Any:
    """SQLite keeps no time zone; the release wrote UTC."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def make_first_release_postgres(url: str) -> None:
    """Make the empty PostgreSQL database at `url` what the first release left there.

    Revision 0001's tables are exactly the release's, and it had no Alembic table:
    so upgrade to 0001, drop alembic_version, and copy in every row of store_v1.db
    (its counters' sequences moved past the copied ids, as inserting them would have).
    """
    with plain_engine(f"sqlite:///file:{FIRST_RELEASE_DB}?mode=ro&uri=true") as source, \
            plain_engine(url) as target, target.begin() as conn, source.connect() as release:
        command.upgrade(alembic_config(conn), "0001")
        conn.execute(sa.text("DROP TABLE alembic_version"))
        tables, written = sa.MetaData(), sa.MetaData()
        tables.reflect(conn)
        written.reflect(release)  # as SQLite typed the columns: its datetimes are parsed
        for table in reversed(tables.sorted_tables):  # what 0001 itself inserted
            conn.execute(table.delete())
        for table in tables.sorted_tables:
            old = written.tables[table.name]
            rows = [{k: _utc(v) for k, v in row._mapping.items()}
                    for row in release.execute(sa.select(old).order_by(*old.primary_key))]
            conn.execute(table.insert(), rows)
            if "id" in table.c and table.c.id.autoincrement is True:
                conn.execute(sa.text(f"SELECT setval(pg_get_serial_sequence('{table.name}', "
                                     f"'id'), (SELECT max(id) FROM {table.name}))"))


@pytest.fixture(params=STORE_BACKENDS)
def first_release(request: pytest.FixtureRequest) -> str:
    """A database the first release wrote, as a URL: a copy of store_v1.db, or its rows
    on PostgreSQL in that release's tables (`make_first_release_postgres`)."""
    if request.param == "sqlite":
        return f"sqlite:///{request.getfixturevalue('first_release_db')}"
    url: str = request.getfixturevalue("postgres_url")
    make_first_release_postgres(url)
    return url


def test_schema_version_is_the_newest_revision() -> None:
    with Writer.open("sqlite://") as store, store.engine.connect() as conn:
        script = ScriptDirectory.from_config(alembic_config(conn))
        assert script.get_current_head() == f"{SCHEMA_VERSION:04d}"
        assert MigrationContext.configure(conn).get_current_revision() == f"{SCHEMA_VERSION:04d}"


def test_the_revisions_make_exactly_the_schema_modules_tables(store_url: str) -> None:
    """A new metric in explorer/metrics.py needs its revision: this fails until it has one."""
    with Writer.open(store_url) as store, store.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
        versions = conn.execute(sa.text("SELECT version FROM schema_version")).scalars().all()
        assert versions == list(range(1, SCHEMA_VERSION + 1))  # what older releases look at


def test_first_release_database_is_upgraded_in_place(first_release: str) -> None:
    tables = ("experiments", "candidates", "trials", "epochs", "store_revision")
    before = {table: _rows(first_release, table) for table in tables}
    assert [len(before[t]) for t in tables] == [3, 12, 9, 18, 1]
    with Writer.open(first_release) as writer:
        assert writer.schema_version() == SCHEMA_VERSION
        assert writer.data_version() == 47
    after = {table: _rows(first_release, table) for table in tables}
    for table in tables:  # every row and value intact (new columns, if any, come last)
        assert [row[:len(old)] for row, old in zip(after[table], before[table], strict=True)] \
            == before[table], table
    assert _rows(first_release, "schema_version")[0][0] == 1  # the release's row is kept
    with plain_engine(first_release) as engine, engine.connect() as conn:  # the newest schema
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []

    with Reader.open(first_release) as reader:
        assert reader.experiments()[["experiment", "version", "trials"]].values.tolist() == [
            ["cifar10-cardinality", 1, 3], ["cifar10-cardinality", 2, 3],
            ["cifar10-width", 1, 3]]
        trials = reader.trials_frame(latest_version_only=False)
        assert len(trials) == 12 and trials["trial_id"].nunique() == 9
        assert trials.drop_duplicates("trial_id")["status"].value_counts().to_dict() == {
            "finished": 3, "running": 3, "failed": 3}
        first = reader.get_trial(1, "8d1d3cc66be668e0")
        assert first is not None and first.test_error == pytest.approx(5.73518521952596)
        copied = reader.get_trial(3, "8d1d3cc66be668e0")
        assert copied is not None and copied.reused_from_trial_id == first.id
        epochs = reader.epochs_frame([first.id])
        assert epochs["test_error"].tolist() == pytest.approx(
            [62.0, 12.4421155483917, 5.73518521952596])
        assert epochs["peak_memory_bytes"].tolist() == [4202707968] * 3
        assert trials["cost_device"].eq("NVIDIA H100 80GB HBM3").all()
    with Writer.open(first_release) as again:  # a second open has nothing left to do
        assert again.data_version() == 47
        assert again.trials_frame(latest_version_only=False).equals(trials)
        assert again.add_trials(1, [("after-the-upgrade", "k", 0)]) == 1  # and it carries on
        assert again.get_trial(1, "after-the-upgrade") is not None


def test_an_upgraded_first_release_file_is_a_fresh_file_to_the_letter(
        first_release_db: Path, tmp_path: Path) -> None:
    Writer.open(first_release_db).close()
    fresh = tmp_path / "fresh.db"
    Writer.open(fresh).close()
    assert _schema(first_release_db) == _schema(fresh)


def test_a_reader_reads_a_first_release_database_without_touching_it(
        first_release_db: Path) -> None:
    original = first_release_db.read_bytes()
    if SCHEMA_VERSION == 1:
        with Reader.open(first_release_db) as reader:
            assert reader.schema_version() == 1
            assert len(reader.epochs_frame(latest_version_only=False)) == 18
    else:
        with pytest.raises(StoreError, match="older than this explorer's"):
            Reader.open(first_release_db)
    assert first_release_db.read_bytes() == original
    assert "alembic_version" not in _schema(first_release_db)


def test_newer_schemas_are_refused_by_readers_and_writers(store_url: str) -> None:
    newer = f"{SCHEMA_VERSION + 1:04d}"
    with Writer.open(store_url) as store, store.engine.begin() as conn:  # as a later explorer would
        conn.execute(sa.text("UPDATE alembic_version SET version_num = :v"), {"v": newer})
    for opener in (Reader.open, Writer.open):
        with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}, newer") \
                as caught:
            opener(store_url)
        assert "\n" not in str(caught.value) and "upgrade explorer" in str(caught.value)


def test_older_schemas_are_left_to_the_writer(store_url: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader never migrates: it says how to upgrade (simulated: one more revision known)."""
    Writer.open(store_url).close()
    monkeypatch.setattr("explorer.store.reader.SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with pytest.raises(StoreError, match="older than this explorer's") as caught:
        Reader.open(store_url)
    assert "explorer.store upgrade" in str(caught.value) and "\n" not in str(caught.value)


def test_upgrade_command(first_release: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert store_main(["upgrade", first_release]) == 0
    assert f"schema version {SCHEMA_VERSION}" in capsys.readouterr().out
    assert _rows(first_release, "alembic_version") == [(f"{SCHEMA_VERSION:04d}",)]
    with Reader.open(first_release) as reader:
        assert reader.schema_version() == SCHEMA_VERSION


# --- experiments --------------------------------------------------------------------------


def test_same_spec_returns_the_existing_experiment(store: Writer) -> None:
    first = experiment(store)
    assert experiment(store) == first
    assert store.experiments()["version"].tolist() == [1]


def test_spec_changed_names_the_differing_keys(store: Writer) -> None:
    experiment(store)
    changed = json.loads(json.dumps(SPEC))
    changed["train"]["epochs"] = 30
    changed["spaces"]["preserved"]["axes"]["cardinality"] = [1, 2, 4]
    changed["data"] = {"dataset": "cifar100"}
    with pytest.raises(SpecChanged) as caught:
        experiment(store, spec=changed)
    assert caught.value.name == "exp"
    assert caught.value.differing_keys == ["data", "spaces.preserved.axes.cardinality",
                                           "train.epochs"]
    assert "train.epochs" in str(caught.value) and "--new-version" in str(caught.value)
    assert isinstance(caught.value, StoreError)


def test_differing_keys_recurses_into_objects_only() -> None:
    old = {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    assert differing_keys(old, {"a": {"b": 2, "c": [1, 3]}, "e": 1}) == ["a.b", "a.c", "d", "e"]
    assert differing_keys(old, old) == []


def test_new_version_lives_side_by_side(store: Writer) -> None:
    v1 = experiment(store)
    changed = {**SPEC, "train": {**SPEC["train"], "epochs": 9}}
    v2 = experiment(store, spec=changed, new_version=True)
    assert v2 != v1
    store.add_trials(v1, [("old", "k", 0)])
    store.add_trials(v2, [("new", "k", 0)])
    frame = store.experiments()
    assert frame[["version", "latest"]].values.tolist() == [[1, False], [2, True]]
    assert store.trials_frame()["trial_key"].tolist() == ["new"]
    everything = store.trials_frame(latest_version_only=False)
    assert everything[["version", "trial_key"]].values.tolist() == [[1, "old"], [2, "new"]]
    assert experiment(store, spec=changed) == v2  # the latest version, unchanged
    assert store.status_counts("exp") == {"pending": 1, "running": 0, "finished": 0,
                                          "stopped": 0, "failed": 0}


def test_experiment_records_the_environment(store: Writer) -> None:
    record = store.create_or_get_experiment("e", "name: e\n", "h", '{"name": "e"}')
    assert record.version == 1 and record.spec_json == {"name": "e"}
    assert set(record.package_versions) >= {"explorer", "torch", "ray", "optuna"}
    assert record.created_at.tzinfo is not None


# --- trials and epochs --------------------------------------------------------------------


def test_trials_are_unique_per_experiment(store: Writer) -> None:
    a, b = experiment(store, "a"), experiment(store, "b")
    assert store.add_trials(a, [("t1", "k", 0), ("t2", "k", 1)]) == 2
    assert store.add_trials(a, [("t1", "k", 0), ("t3", "k", 2)]) == 1
    assert store.add_trials(b, [("t1", "k", 0)]) == 1  # the same key in another experiment
    assert store.status_counts(a)["pending"] == 3
    with pytest.raises(sa.exc.IntegrityError), store.engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO trials (experiment_id, candidate_key, trial_key, "
                             "seed, status, attempts) VALUES (:e, 'k', 't1', 0, 'pending', 0)"),
                     {"e": a})


def test_record_epoch_is_idempotent_and_the_latest_report_wins(store: Writer) -> None:
    exp = experiment(store)
    store.add_trials(exp, [("t", "k", 0)])
    store.mark_running(exp, "t", "cuda:0")
    store.record_epoch(exp, "t", {"epoch": 0, "test_error": 50.0, "lr": 0.1, "extra": 1})
    store.record_epoch(exp, "t", {"epoch": 1, "test_error": 40.0, "lr": 0.1})
    store.record_epoch(exp, "t", {"epoch": 1, "test_error": 39.0})  # a resumed trial re-reports
    epochs = store.epochs_frame(experiment_names=["exp"])
    assert epochs["epoch"].tolist() == [0, 1]
    assert epochs["test_error"].tolist() == [50.0, 39.0]
    assert epochs["lr"].tolist() == [0.1, 0.1]  # a column not re-reported keeps its value
    assert store.trials_frame()["epochs_completed"].tolist() == [2]
    store.record_epochs(exp, "t", [{"epoch": 1, "test_error": 38.0}, {"epoch": 2, "lr": 0.01}])
    epochs = store.epochs_frame()
    assert epochs["test_error"].tolist()[1] == 38.0 and epochs["lr"].tolist()[2] == 0.01
    assert store.trials_frame()["epochs_completed"].tolist() == [3]
    with pytest.raises(ValueError, match="epoch"):
        store.record_epoch(exp, "t", {"test_error": 1.0})
    with pytest.raises(StoreError, match="no trial"):
        store.record_epoch(exp, "missing", {"epoch": 0})


def test_attempts_finish_and_requeue(store: Writer) -> None:
    exp = experiment(store)
    store.add_trials(exp, [("t", "k", 0), ("u", "k", 1)])
    store.mark_running(exp, "t", "cuda:0")
    store.mark_running(exp, "t", "cuda:1")
    store.mark_running(exp, "u", "cuda:2")
    store.finish_trial(exp, "t", "failed", {}, "RuntimeError: CUDA out of memory")
    trial = store.get_trial(exp, "t")
    assert trial is not None
    assert (trial.attempts, trial.status, trial.device) == (2, "failed", "cuda:1")
    assert trial.error == "RuntimeError: CUDA out of memory"
    assert store.requeue_running(exp) == 1
    assert store.status_counts(exp) == {"pending": 1, "running": 0, "finished": 0,
                                        "stopped": 0, "failed": 1}
    with pytest.raises(ValueError, match="finished"):
        store.finish_trial(exp, "t", "running", {})


def test_find_finished_across_experiments_and_copy_finished(store: Writer) -> None:
    a, b = experiment(store, "a"), experiment(store, "b")
    store.add_trials(a, [("shared", "k", 0)])
    store.add_trials(b, [("shared", "k", 0)])
    assert store.find_finished("shared") is None
    store.mark_running(a, "shared", "cuda:0")
    for epoch in range(3):
        store.record_epoch(a, "shared", {"epoch": epoch, "test_error": 30.0 - epoch})
    store.finish_trial(a, "shared", "finished", {"test_error": 28.0, "seconds": 12.5})
    source = store.find_finished("shared")
    assert source is not None and source.experiment_id == a and source.test_error == 28.0

    store.copy_finished(b, "shared", source)
    store.copy_finished(b, "shared", source)  # idempotent
    copied = store.get_trial(b, "shared")
    assert copied is not None
    assert (copied.status, copied.test_error, copied.seconds, copied.epochs_completed) == \
        ("finished", 28.0, 12.5, 3)
    assert copied.reused_from_trial_id == source.id
    epochs = store.epochs_frame([copied.id])
    assert epochs["test_error"].tolist() == [30.0, 29.0, 28.0]
    assert store.finished_trial_keys(b) == {"shared"}

    assert store.find_finished("shared") == source  # the original, not the copy
    other = store.find_finished("shared", exclude_experiment_id=a)
    assert other is not None and other.experiment_id == b
    store.copy_finished(a, "shared", source)  # onto itself: nothing happens
    assert store.get_trial(a, "shared") == source

    store.copy_finished(experiment(store, "c"), "shared", source)  # added when missing
    assert store.status_counts("c")["finished"] == 1


def _experiment_rows(store: Writer, table: str, experiment_id: int,
                     skip: tuple[str, ...]) -> list[tuple[str, ...]]:
    """A table's rows of one experiment by plain SQL, sorted, without the columns `skip`."""
    with store.engine.connect() as conn:
        result = conn.execute(sa.text(f"SELECT * FROM {table} WHERE experiment_id = :e"),
                              {"e": experiment_id}).mappings().all()
    return sorted(tuple(str(v) for k, v in row.items() if k not in skip) for row in result)


def test_batched_adds_give_the_rows_of_adding_one_by_one(store: Writer) -> None:
    cands = [candidate(f"s{s}", c, d) for s in range(3) for c in (1, 2, 4, 8)
             for d in (4, 8, 16, 32, 64)]  # 60 distinct (space, key)
    trials = [(f"t{i}", cands[i % len(cands)].key, i % 3) for i in range(1300)]
    one, many = experiment(store, "one"), experiment(store, "many")
    for c in cands:
        store.add_candidates(one, [c])
    added = [store.add_trials(one, [trial]) for trial in trials]
    assert sum(added) == len(trials)
    # Repeats inside the batch: the same (space, key) and trial key given twice.
    assert store.add_candidates(many, [*cands, *cands[:7]]) == len(cands) + 7
    assert store.add_trials(many, [*trials, *trials[:5]]) == len(trials)

    skip_c, skip_t = ("id", "experiment_id"), ("id", "experiment_id", "created_at")
    by_one = _experiment_rows(store, "candidates", one, skip_c)
    assert len(by_one) == len(cands)
    assert sorted(r[1] for r in by_one) == sorted(str(c.key) for c in cands)  # r: space, key
    assert _experiment_rows(store, "candidates", many, skip_c) == by_one
    assert (_experiment_rows(store, "trials", many, skip_t)
            == _experiment_rows(store, "trials", one, skip_t))

    # Rerunning is idempotent, and the measured cost of a candidate is kept.
    store.set_cost(many, cands[0].key, {"latency_ms": 2.5})
    before_c = _experiment_rows(store, "candidates", many, skip_c)
    before_t = _experiment_rows(store, "trials", many, ("id",))
    assert store.add_candidates(many, cands) == len(cands)
    assert store.add_trials(many, trials) == 0
    assert _experiment_rows(store, "candidates", many, skip_c) == before_c
    assert _experiment_rows(store, "trials", many, ("id",)) == before_t


def test_find_finished_many_is_find_finished_per_key(store: Writer) -> None:
    a, b, c = experiment(store, "a"), experiment(store, "b"), experiment(store, "c")
    keys = [f"t{i}" for i in range(1100)]  # more than one chunk of keys
    for exp in (a, b, c):
        store.add_trials(exp, [(key, "k", 0) for key in keys])
    for i, key in enumerate(keys[:60]):
        if i % 3:  # finished in a; some copied to b (a copy comes after its original)
            store.finish_trial(a, key, "finished", {"test_error": float(i)})
            if i % 2:
                store.copy_finished(b, key, store.get_trial(a, key))  # type: ignore[arg-type]
        else:  # finished only in b, failed in a
            store.finish_trial(b, key, "finished", {"test_error": 100.0 + i})
            store.finish_trial(a, key, "failed", {}, "boom")
    store.finish_trial(a, keys[-1], "finished", {"test_error": 1.0})  # the last chunk
    asked = [*keys, "missing", keys[0]]
    for exclude in (None, a, b, c):
        expected = {key: found for key in asked
                    if (found := store.find_finished(key, exclude_experiment_id=exclude))}
        assert store.find_finished_many(asked, exclude_experiment_id=exclude) == expected
        assert expected  # each case finds some
    assert store.find_finished_many([]) == {}


def test_finished_results_carry_metrics_and_complexity(store: Writer) -> None:
    exp = experiment(store)
    c = candidate("preserved")
    store.add_candidates(exp, [c])
    store.add_trials(exp, [("t", c.key, 0), ("u", c.key, 1)])
    store.finish_trial(exp, "t", "finished", {"test_error": 4.0})
    results = store.finished_results(exp)
    assert list(results) == ["t"]
    assert results["t"]["test_error"] == 4.0 and results["t"]["flops"] == c.complexity.flops


# --- candidates and frames ----------------------------------------------------------------


def test_trials_frame_has_one_row_per_trial_and_space(store: Writer) -> None:
    exp = experiment(store)
    shared, solo = candidate("preserved", 8, 64), candidate("preserved", 2, 40)
    store.add_candidates(exp, [shared, solo, candidate("deeper", 8, 64)])
    store.add_candidates(exp, [shared])  # upsert: still one row per (space, key)
    store.add_trials(exp, [("t-shared", shared.key, 0), ("t-solo", solo.key, 0),
                           ("t-orphan", "no-such-candidate", 0)])
    frame = store.trials_frame(["exp"])
    pairs = sorted(zip(frame["trial_key"], frame["space"].fillna("-"), strict=True))
    assert pairs == [("t-orphan", "-"), ("t-shared", "deeper"), ("t-shared", "preserved"),
                     ("t-solo", "preserved")]
    assert frame["trial_id"].nunique() == 3
    required = {"experiment", "version", "trial_id", "trial_key", "key", "space", "cardinality",
                "bottleneck_width", "depths", "widths", "params", "flops", "acts", "seed",
                "status", "test_error", "test_top5_error", "error", "epochs_completed",
                "train_images_per_sec", "latency_ms"}
    assert required <= set(frame.columns)
    row = frame[frame["trial_key"] == "t-solo"].iloc[0]
    assert (row["cardinality"], row["bottleneck_width"], row["params"]) == \
        (2, 40, solo.complexity.params)
    assert row["depths"] == (3, 3, 3) and row["widths"] == (256, 512, 1024)
    with store.engine.connect() as conn:
        arch = conn.execute(sa.text("SELECT architecture FROM candidates WHERE key = :k"),
                            {"k": solo.key}).scalars().all()
    assert arch == [json.dumps(solo.arch.canonical(), sort_keys=True, separators=(",", ":"))]


def test_set_cost_reaches_every_space_of_the_candidate(store: Writer) -> None:
    exp = experiment(store)
    c = candidate("preserved")
    store.add_candidates(exp, [c, candidate("deeper")])
    store.add_trials(exp, [("t", c.key, 0)])
    store.set_cost(exp, c.key, {"latency_ms": 3.5, "device": "H100", "ignored": 1})
    store.add_candidates(exp, [c])  # re-adding keeps the measured cost
    frame = store.trials_frame()
    assert frame["latency_ms"].tolist() == [3.5, 3.5]
    assert frame["cost_device"].tolist() == ["H100", "H100"]
    with pytest.raises(StoreError, match="no candidate"):
        store.set_cost(exp, "nope", {"latency_ms": 1.0})


def test_empty_frames_keep_their_columns(store: Writer) -> None:
    trials, epochs = store.trials_frame(), store.epochs_frame()
    assert trials.empty and "test_error" in trials.columns
    assert trials["test_error"].dtype == "float64" and trials["trial_id"].dtype == "int64"
    assert epochs.empty and list(epochs.columns)[:3] == ["experiment", "version", "trial_id"]
    assert store.epochs_frame([]).empty
    assert store.experiments().empty
    assert store.status_counts("nothing") == {"pending": 0, "running": 0, "finished": 0,
                                              "stopped": 0, "failed": 0}


def test_data_version_changes_with_every_write(store_url: str) -> None:
    with Writer.open(store_url) as writer, Reader.open(store_url) as reader:
        before = reader.data_version()
        assert reader.data_version() == before  # polling alone changes nothing
        exp = experiment(writer)
        after_experiment = reader.data_version()
        assert after_experiment != before and writer.data_version() == after_experiment
        writer.add_trials(exp, [("t", "k", 0)])
        assert reader.data_version() != after_experiment
        unchanged = reader.data_version()
        writer.add_trials(exp, [("t", "k", 0)])  # nothing new
        assert reader.data_version() == unchanged


def test_fixture_store_is_consistent(store_url: str, tmp_path: Path) -> None:
    summary = make_fixture_store(store_url, trials_per_space=3, epochs=4, failed=1, running=1,
                                 seeds=2, versions=2)
    with Reader.open(store_url) as reader:
        everything = reader.trials_frame(latest_version_only=False)
        assert len(everything) == summary.trial_spaces
        assert everything["trial_id"].nunique() == summary.trials
        assert len(reader.epochs_frame(latest_version_only=False)) == summary.epochs
        statuses = everything.drop_duplicates("trial_id")["status"].value_counts().to_dict()
        assert statuses == {k: v for k, v in summary.status.items() if v}
        assert everything["reused_from_trial_id"].notna().sum() > 0
        assert summary.reused > 0
        finished = everything[everything["status"] == "finished"]
        assert finished["test_error"].between(2, 8).all()
        assert everything["latency_ms"].notna().all()
        assert reader.experiments()["version"].tolist() == [1, 2, 1]
    again = tmp_path / "again"
    assert make_fixture_store(again, trials_per_space=3, epochs=4, failed=1, running=1,
                              seeds=2, versions=2) == summary


# --- one writer, polling readers ----------------------------------------------------------

READER = textwrap.dedent("""
    import json, sys, time
    from explorer.store import Reader

    store = Reader.open(sys.argv[1])
    end = time.monotonic() + float(sys.argv[2])
    polls, errors, seen, versions, slowest = 0, [], [], set(), 0.0
    while time.monotonic() < end:
        began = time.monotonic()
        try:
            trials = store.trials_frame(["busy"])
            epochs = store.epochs_frame(experiment_names=["busy"])
            versions.add(store.data_version())
            seen.append(len(epochs))
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
        slowest = max(slowest, time.monotonic() - began)
        polls += 1
        time.sleep(0.05)
    print(json.dumps({"polls": polls, "errors": errors, "seen": seen,
                      "versions": len(versions), "slowest": slowest}))
""")


def test_writer_and_polling_readers_never_lock(store_url: str) -> None:
    writer = Writer.open(store_url)
    exp = experiment(writer, "busy")
    c = candidate("preserved")
    writer.add_candidates(exp, [c, candidate("deeper")])
    keys = [f"t{i}" for i in range(8)]
    writer.add_trials(exp, [(k, c.key, i) for i, k in enumerate(keys)])
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path}
    readers = [subprocess.Popen([sys.executable, "-c", READER, store_url, "3"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env) for _ in range(2)]
    writes, write_errors, epoch = 0, [], 0
    try:
        while any(reader.poll() is None for reader in readers):
            try:
                for key in keys:
                    writer.record_epoch(exp, key, {"epoch": epoch, "test_error": 50 - epoch / 100,
                                                   "lr": 0.1})
                    writes += 1
                writer.record_epoch(exp, keys[0], {"epoch": epoch, "test_error": 1.0})  # again
                epoch += 1
            except Exception as exc:  # reported below, with the readers'
                write_errors.append(f"{type(exc).__name__}: {exc}")
        outputs = [reader.communicate(timeout=30) for reader in readers]
    finally:
        for reader in readers:
            if reader.poll() is None:
                reader.kill()
        writer.close()
    assert write_errors == [] and writes >= 100
    for reader, (out, err) in zip(readers, outputs, strict=True):
        assert reader.returncode == 0, err
        report = json.loads(out)
        summary = {k: v for k, v in report.items() if k != "seen"}
        print("reader", summary, "writer epochs", writes)  # shown with pytest -s
        assert report["errors"] == []
        assert report["polls"] >= 10, summary
        seen = report["seen"]
        assert seen == sorted(seen) and seen[-1] > seen[0]  # progress seen, never a regression
        assert report["versions"] >= 5
        assert report["slowest"] < 2.0, summary
    with Reader.open(store_url) as check:
        assert len(check.epochs_frame(experiment_names=["busy"])) == epoch * len(keys)


# --- environment --------------------------------------------------------------------------


def test_environment_info_never_fails(tmp_path: Path) -> None:
    info = environment_info()
    assert set(info) == {"git_revision", "package_versions"}
    assert info["git_revision"] is None or len(info["git_revision"]) >= 40
    assert git_revision(tmp_path / "not-a-checkout") is None
    versions = package_versions(("explorer", "surely-not-installed-package"))
    assert versions["explorer"] and versions["surely-not-installed-package"] is None


def _loaded_by_importing_the_store(modules: set[str]) -> str:
    """Which of these modules a fresh interpreter has loaded after `import explorer.store`."""
    code = f"import sys, explorer.store; print(sorted(set({sorted(modules)!r}) & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=REPO)
    return done.stdout.strip()


def test_store_imports_no_heavy_dependency() -> None:
    assert _loaded_by_importing_the_store({"torch", "ray", "streamlit", "optuna"}) == "[]"


def test_readers_need_neither_the_spec_machinery_nor_alembic() -> None:
    assert _loaded_by_importing_the_store({"explorer.space", "explorer.spec", "alembic"}) == "[]"


def test_trials_carry_each_stages_c_and_d(store: Writer) -> None:
    # A sampled space draws C and d per stage; the scalar columns hold stage 1's only.
    stages = tuple(Stage(depth=1, width=w, cardinality=c, bottleneck_width=d, stride=s)
                   for w, c, d, s in ((64, 2, 8, 1), (128, 4, 16, 2), (256, 8, 4, 2)))
    arch = Arch(template="cifar", stem_width=16, stages=stages)
    cost = count(arch, 32, 10)
    exp = experiment(store, "per-stage")
    store.add_candidates(exp, [Candidate("sampled", arch, cost, cost)])
    store.add_trials(exp, [("t0", arch.key, 0)])
    row = store.trials_frame(["per-stage"]).iloc[0]
    assert (row["cardinality"], row["bottleneck_width"]) == (2, 8)
    assert row["cardinalities"] == (2, 4, 8)
    assert row["bottleneck_widths"] == (8, 16, 4)
    assert row["group_widths"] == (16, 64, 32)
