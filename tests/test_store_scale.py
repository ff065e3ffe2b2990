"""The store at scale: batched writes give the rows of the writes one by one, and the
column-wise, aggregated read paths give the frames of the plain ones.

Backend-neutral tests (taking `store_url` or `store`) run on SQLite and PostgreSQL, as
in test_store.py. No timings here: benchmarks/scale.py measures them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from fixtures_store import make_fixture_store

from explorer import analysis, compare, stats
from explorer.arch import resnext29
from explorer.complexity import count
from explorer.experiment import StoreSink, Unobserved
from explorer.plan import TrialPlan
from explorer.space import Candidate
from explorer.spec import parse_spec
from explorer.store import STAGE_LIST_COLUMNS, Reader, StoreError, Writer
from explorer.store.records import aware
from explorer.store.schema import trial_table
from explorer.tables import write_frames, write_table

SPEC: dict[str, Any] = {"name": "exp", "train": {"epochs": 3, "seeds": [0, 1]}}
ENV = {"git_revision": None, "package_versions": {}}


@pytest.fixture
def store(store_url: str) -> Iterator[Writer]:
    with Writer.open(store_url) as opened:
        yield opened


def experiment(store: Writer, name: str) -> int:
    return store.create_or_get_experiment(name, f"name: {name}\n", name, SPEC,
                                          environment=ENV).id


def candidate(space: str, c: int, d: int) -> Candidate:
    arch = resnext29(c, d)
    cost = count(arch, 32, 10)
    return Candidate(space, arch, cost, cost)


def rows(store: Writer, table: str, experiment_id: int) -> list[tuple[Any, ...]]:
    """An experiment's rows of `table` without ids and timestamps (epochs by trial key),
    sorted, so two experiments written differently compare equal."""
    with store.engine.connect() as conn:
        if table == "epochs":
            result = conn.execute(sa.text(
                "SELECT t.trial_key, e.* FROM epochs e JOIN trials t ON t.id = e.trial_id "
                "WHERE t.experiment_id = :e"), {"e": experiment_id})
        else:
            result = conn.execute(sa.text(f"SELECT * FROM {table} WHERE experiment_id = :e"),
                                  {"e": experiment_id})
        skip = {"id", "trial_id", "experiment_id", "created_at", "started_at", "finished_at",
                "reused_from_trial_id"}
        columns = list(result.keys())
        names = [n for n in columns if n not in skip]
        return sorted(tuple(row._mapping[n] for n in names) for row in result)


def plan(spec_text: str, key: str, cand: Candidate, seed: int) -> TrialPlan:
    spec = parse_spec(spec_text)
    return TrialPlan(trial_key=key, candidate_key=cand.key, spaces=(cand.space,),
                     arch=cand.arch, seed=seed, num_classes=10, data=spec.data,
                     train=spec.train)


SPEC_TEXT = """\
name: sink
model: {template: cifar, depths: [3, 3, 3], stem_width: 64, widths: [256, 512, 1024],
        cardinality: 1, bottleneck_width: 64}
spaces: {s: {axes: {cardinality: [1, 2]}}}
data: {dataset: cifar10}
train: {epochs: 3, seeds: [0, 1]}
"""


def events(cands: list[Candidate]) -> list[tuple[str, tuple[Any, ...]]]:
    """A sweep's events for five trials, interleaved as Tune sends them: an epoch reported
    twice (the latest wins), a failed trial, a trial that only starts, histories again
    at the end."""
    trials = [(f"t{i}", cands[i % len(cands)], i % 2) for i in range(5)]
    out: list[tuple[str, tuple[Any, ...]]] = []
    for key, cand, seed in trials:
        out.append(("trial_planned", (plan(SPEC_TEXT, key, cand, seed), cand)))
    for key, _cand, _seed in trials[:4]:
        out.append(("trial_started", (key, "node-abcdefgh", "cpu")))
        out.append(("trial_provenance", (key, {"precision": "fp32", "compiled": False,
                                               "resumed_from_epoch": None})))
    for epoch in (1, 2, 3):
        for i, (key, _cand, _seed) in enumerate(trials[:3]):
            out.append(("epoch", (key, {"epoch": epoch, "test_error": 50.0 / epoch + i,
                                        "lr": 0.1})))
    out.append(("epoch", ("t0", {"epoch": 2, "test_error": 7.0})))  # reported again
    history = [{"epoch": e, "test_error": 50.0 / e, "train_error": 40.0 / e}
               for e in (1, 2, 3)]
    out.append(("trial_ended", ("t0", "finished", {"test_error": 16.6}, None, history)))
    out.append(("trial_ended", ("t1", "failed", {}, "RuntimeError: boom", history[:1])))
    out.append(("trial_ended", ("t2", "finished", {"test_error": 18.0,
                                                    "epochs_completed": 3}, None, [])))
    return out


def one_by_one(store: Writer, experiment_id: int, name: str, args: tuple[Any, ...]) -> None:
    """What the sink wrote before it batched: one writer call per event."""
    if name == "trial_planned":
        trial_plan, cand = args
        store.add_candidates(experiment_id, [cand])
        store.add_trials(experiment_id, [(trial_plan.trial_key, trial_plan.candidate_key,
                                          trial_plan.seed)])
    elif name == "trial_started":
        key, node, device = args
        store.mark_running(experiment_id, key, f"{device}@{node[:8]}")
    elif name == "trial_provenance":
        store.record_provenance(experiment_id, *args)
    elif name == "epoch":
        store.record_epoch(experiment_id, *args)
    else:
        key, status, metrics, error, history = args
        if history:
            store.record_epochs(experiment_id, key, history)
        store.finish_trial(experiment_id, key, status, metrics, error)


@pytest.mark.parametrize("flush_events", [512, 3])
def test_the_sinks_batched_writes_give_the_rows_of_writing_one_by_one(
        store: Writer, flush_events: int) -> None:
    cands = [candidate("s", c, d) for c, d in ((1, 64), (2, 40), (4, 24))]
    happened = events(cands)
    single, batched = experiment(store, "single"), experiment(store, "batched")
    for name, args in happened:
        one_by_one(store, single, name, args)
    sink = StoreSink(store, batched, Unobserved())
    sink.FLUSH_EVENTS = flush_events
    before = store.data_version()
    for i, (name, args) in enumerate(happened):
        getattr(sink, name)(*args)
        if i == 12:
            sink.tick()
    sink.flush()
    assert store.data_version() > before
    for table in ("candidates", "trials", "epochs"):
        assert rows(store, table, batched) == rows(store, table, single), table
    assert store.status_counts(batched) == {"pending": 1, "running": 1, "finished": 2,
                                            "stopped": 0, "failed": 1}


def test_a_batch_is_one_transaction(store_url: str) -> None:
    store = Writer.open(store_url)
    exp = experiment(store, "exp")
    cand = candidate("s", 1, 64)
    before = store.data_version()
    with store.batch():
        store.add_candidates(exp, [cand])
        with store.batch():  # nested: joins
            store.add_trials(exp, [("a", cand.key, 0), ("b", cand.key, 1)])
        store.mark_running(exp, "a", "cpu")
        with Reader.open(store_url) as other:
            # Another connection sees nothing of the batch before it ends.
            assert other.status_counts(exp)["pending"] == 0
    assert store.data_version() == before + 1  # one bump for the batch
    assert store.status_counts(exp)["running"] == 1
    with pytest.raises(StoreError), store.batch():
        store.add_trials(exp, [("c", cand.key, 0)])
        store.mark_running(exp, "no such trial", "cpu")
    assert store.get_trial(exp, "c") is None  # rolled back with the failing write
    assert store.data_version() == before + 1
    store.close()


def test_add_trials_looks_up_only_the_keys_given(store: Writer) -> None:
    exp = experiment(store, "exp")
    cand = candidate("s", 1, 64)
    keys = [(f"k{i}", cand.key, i % 2) for i in range(1203)]  # more than a chunk of keys
    assert store.add_trials(exp, keys[:700]) == 700
    assert store.add_trials(exp, keys) == 503
    assert store.add_trials(exp, keys[::-1]) == 0
    assert store.add_trials(exp, [("new", cand.key, 0), ("k5", cand.key, 1)]) == 1
    assert store.status_counts(exp)["pending"] == 1204


# --- the read paths -----------------------------------------------------------------------


@pytest.fixture
def fixture_url(store_url: str) -> str:
    """The realistic fixture store (two experiments, two versions of the first, seeds,
    a failed and a running trial, shared candidates), on each backend."""
    make_fixture_store(store_url, trials_per_space=3, seeds=2, failed=1, running=1,
                       versions=2)
    return store_url


def reference_trials(reader: Reader) -> pd.DataFrame:
    """trials_frame's rows the plain way: SQLAlchemy's processed rows, JSON decoded per row."""
    with reader.engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT t.id AS trial_id, c.space, c.depths, c.architecture, t.created_at, "
            "t.finished_at, t.compiled, t.test_error, t.status FROM trials t "
            "JOIN experiments e ON e.id = t.experiment_id LEFT JOIN candidates c "
            "ON c.experiment_id = t.experiment_id AND c.key = t.candidate_key "
            "WHERE e.version = (SELECT max(version) FROM experiments x WHERE x.name = e.name) "
            "ORDER BY e.name, e.version, t.id, c.space")).mappings().all()
        processed = conn.execute(
            sa.select(trial_table.c.id, trial_table.c.created_at, trial_table.c.finished_at,
                      trial_table.c.compiled)).all()
    when = {row[0]: row[1:] for row in processed}
    return pd.DataFrame([{
        "trial_id": row["trial_id"], "space": row["space"],
        "depths": None if row["depths"] is None else tuple(json.loads(row["depths"])),
        "cardinalities": None if row["architecture"] is None else tuple(
            stage["cardinality"] for stage in json.loads(row["architecture"])["stages"]),
        "created_at": when[row["trial_id"]][0], "finished_at": when[row["trial_id"]][1],
        "compiled": when[row["trial_id"]][2], "test_error": row["test_error"],
        "status": row["status"],
    } for row in rows])


def test_the_column_wise_trials_frame_has_the_plain_reads_values(fixture_url: str) -> None:
    with Reader.open(fixture_url) as reader:
        frame = reader.trials_frame()
        expected = reference_trials(reader)
    assert len(frame) == len(expected) > 20
    assert frame["trial_id"].tolist() == expected["trial_id"].tolist()
    assert frame["space"].fillna("").tolist() == expected["space"].fillna("").tolist()
    assert frame["depths"].tolist() == expected["depths"].tolist()
    assert frame["cardinalities"].tolist() == expected["cardinalities"].tolist()
    assert frame["status"].tolist() == expected["status"].tolist()
    np.testing.assert_array_equal(frame["test_error"].to_numpy(dtype=float),
                                  expected["test_error"].to_numpy(dtype=float))
    for column in ("created_at", "finished_at"):
        stamps = [None if pd.isna(v) else pd.Timestamp(aware(v)) for v in expected[column]]
        assert [None if pd.isna(v) else v for v in frame[column]] == stamps
    assert frame["compiled"].tolist() == [pd.NA if v is None else bool(v)
                                          for v in expected["compiled"]]


def assert_same_values(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """The same columns and the same values row by row, any missing value as None."""
    assert list(got.columns) == list(want.columns)
    for column in want.columns:
        assert ([None if not isinstance(v, tuple) and pd.isna(v) else v for v in got[column]]
                == [None if not isinstance(v, tuple) and pd.isna(v) else v
                    for v in want[column]]), column


def test_narrow_and_chunked_reads_are_the_full_frames_parts(fixture_url: str) -> None:
    with Reader.open(fixture_url) as reader:
        full = reader.trials_frame()
        narrow = reader.trials_frame(columns=["status", "trial_id", "cardinalities", "space"])
        pd.testing.assert_frame_equal(narrow, full[["trial_id", "space", "status",
                                                    "cardinalities"]])
        chunks = list(reader.iter_trials_frames(rows=7))
        assert len(chunks) > 2 and all(len(c) <= 7 for c in chunks)
        # A chunk whose text column is all empty infers no string type: values compared.
        assert_same_values(pd.concat(chunks, ignore_index=True), full)
        epochs = reader.epochs_frame(experiment_names=["cifar10-cardinality"])
        parts = list(reader.iter_epochs_frames(["cifar10-cardinality"], rows=11))
        assert_same_values(pd.concat(parts, ignore_index=True), epochs)
        empty = list(reader.iter_trials_frames(["nope"]))
        assert len(empty) == 1 and empty[0].empty
        assert list(empty[0].columns) == list(full.columns)
        with pytest.raises(ValueError, match="no column 'nope'"):
            reader.trials_frame(columns=["nope"])


def test_status_and_means_by_the_database_are_the_frames(fixture_url: str) -> None:
    with Reader.open(fixture_url) as reader:
        trials = reader.trials_frame()
        status = reader.experiment_status()
        means = reader.candidate_means()
        early = reader.epoch_errors(2, ["cifar10-width"])
        epochs = reader.epochs_frame(experiment_names=["cifar10-width"])
    per_trial = trials.drop_duplicates("trial_id")
    assert status["experiment"].tolist() == sorted(per_trial["experiment"].unique())
    for row in status.itertuples(index=False):
        mine = per_trial[per_trial["experiment"] == row.experiment]
        assert row.version == mine["version"].iloc[0]
        assert row.trials == len(mine)
        for name in ("finished", "running", "failed", "pending", "stopped"):
            assert getattr(row, name) == int((mine["status"] == name).sum())
        assert row.best_test_error == mine.loc[mine["status"] == "finished",
                                               "test_error"].min()
    expected = analysis.by_candidate(trials)
    assert len(expected) >= 10 and expected["seeds"].max() == 2
    pd.testing.assert_frame_equal(means, expected, check_exact=False, rtol=1e-12, atol=1e-12)
    at = epochs[epochs["epoch"] == 2][["trial_id", "epoch", "test_error"]]
    pd.testing.assert_frame_equal(early, at.reset_index(drop=True))


def test_compare_on_the_narrow_read_and_the_means_is_compare_on_the_frame(
        fixture_url: str) -> None:
    with Reader.open(fixture_url) as reader:
        full = reader.trials_frame(["cifar10-cardinality"])
        narrow = reader.trials_frame(["cifar10-cardinality"], columns=compare.TRIAL_COLUMNS)
        means = reader.candidate_means(["cifar10-cardinality"])
    for normalize in ("none", "params"):
        plain = compare.compare_spaces(full, normalize=normalize, bins=2)
        fast = compare.compare_spaces(narrow, normalize=normalize, bins=2, candidates=means)
        assert fast.to_json() == plain.to_json()
        assert (compare.plan_json(compare.plan_samples(fast, narrow, candidates=means))
                == compare.plan_json(compare.plan_samples(plain, full)))


def old_by_candidate(trials: pd.DataFrame) -> pd.DataFrame:
    """by_candidate as it was: grouped by the architecture's columns too, hashed per row."""
    done = analysis.finished(trials)
    present = [c for c in analysis.ARCH_COLUMNS if c in done.columns]
    keyed = done.assign(**{c: done[c].map(analysis.hashable) for c in present})
    grouped = keyed.groupby([*analysis.CANDIDATE, *present], dropna=False, sort=False)
    out = grouped.agg(
        test_error_mean=("test_error", "mean"), test_error_std=("test_error", "std"),
        seeds=("test_error", "size"), test_top5_error_mean=("test_top5_error", "mean"),
        train_images_per_sec=("train_images_per_sec", "mean"),
        latency_ms=("latency_ms", "mean")).reset_index()
    out["test_error_std"] = out["test_error_std"].fillna(0.0)
    return out


def test_by_candidate_groups_as_it_did(tmp_path: Path) -> None:
    make_fixture_store(tmp_path / "s.db", trials_per_space=4, seeds=3, failed=1, running=1)
    with Reader.open(tmp_path / "s.db") as reader:
        trials = reader.trials_frame()
    pd.testing.assert_frame_equal(analysis.by_candidate(trials), old_by_candidate(trials))


# --- what a screen shows ------------------------------------------------------------------


def drawn_edf(grid: np.ndarray, values: np.ndarray, at: np.ndarray) -> np.ndarray:
    """The EDF drawn from its values on `grid`, each held until the next (plotly's "hv"):
    at x, the value of the last grid point <= x (0 before the first)."""
    where = np.searchsorted(grid, at, side="right") - 1
    return np.where(where >= 0, values[np.maximum(where, 0)], 0.0)


@pytest.mark.parametrize("weighted", [False, True])
def test_the_screen_grid_keeps_the_edf_within_its_tolerance(weighted: bool) -> None:
    rng = np.random.default_rng(7)
    errors = np.round(rng.gamma(4.0, 1.5, 50_000) + 3, 3)  # ties, like stored errors
    weights = rng.uniform(0, 2, errors.size) if weighted else np.ones(errors.size)
    weights /= weights.sum()
    tolerance = 0.002
    grid = analysis.screen_grid(errors, weights, tolerance)
    assert grid.size <= 1 / tolerance + 1
    order = np.argsort(errors)
    exact_at = np.unique(errors)
    # The exact weighted EDF at every distinct error, and just below each (its left limit).
    cumulative = np.concatenate([[0.0], np.cumsum(weights[order])])
    exact = cumulative[np.searchsorted(errors[order], exact_at, side="right")]
    below = cumulative[np.searchsorted(errors[order], exact_at, side="left")]
    values = cumulative[np.searchsorted(errors[order], grid, side="right")]
    shown = drawn_edf(grid, values, exact_at)
    assert np.all(shown <= exact + 1e-12)
    assert np.max(exact - shown) <= tolerance + 1e-12
    shown_below = drawn_edf(grid, values, np.nextafter(exact_at, -np.inf))
    assert np.max(below - shown_below) <= tolerance + 1e-12
    # Without the screen grid, 200 even points miss by far more on 50,000 models.
    even = np.linspace(errors.min(), errors.max(), 200)
    coarse = drawn_edf(even, cumulative[np.searchsorted(errors[order], even, side="right")],
                       exact_at)
    assert np.max(exact - coarse) > 5 * tolerance


def test_edf_table_with_a_tolerance_draws_each_space_within_it() -> None:
    rng = np.random.default_rng(3)
    n = 6000
    candidates = pd.DataFrame({
        "experiment": "e", "space": np.where(np.arange(n) % 3 == 0, "a", "b"),
        "key": [f"k{i}" for i in range(n)], "test_error_mean": rng.normal(6, 1, n).round(2),
        "test_error_std": 0.0, "seeds": 1, "params": rng.integers(10**5, 10**7, n),
        "flops": rng.integers(10**7, 10**9, n)})
    table = analysis.edf_table(pd.DataFrame(), candidates=candidates, tolerance=0.002,
                               bootstrap=5, normalize_by="flops", bins=4)
    weights = analysis.group_weights([candidates[candidates["space"] == s] for s in "ab"],
                                     "flops", 4)
    for space, weight in zip("ab", weights, strict=True):
        part = table[table["space"] == space]
        errors = candidates.loc[candidates["space"] == space, "test_error_mean"].to_numpy()
        at = np.unique(errors)
        exact = stats.weighted_edf(errors, weight, at)
        shown = drawn_edf(part["error"].to_numpy(), part["edf"].to_numpy(), at)
        assert np.max(np.abs(exact - shown)) <= 0.002 + 1e-12
        assert len(part) <= 200 + 501


def test_a_screen_sample_keeps_the_front_and_a_point_per_cell() -> None:
    rng = np.random.default_rng(5)
    n = 20_000
    frame = pd.DataFrame({"space": np.where(np.arange(n) % 2 == 0, "a", "b"),
                          "flops": 10 ** rng.uniform(7, 9, n),
                          "test_error_mean": rng.normal(6, 1, n)})
    sample = analysis.screen_sample(frame, "flops", "test_error_mean", cells=(40, 20))
    front = analysis.pareto_front(frame, "flops")
    assert set(front.index) <= set(sample.index)
    pd.testing.assert_frame_equal(analysis.pareto_front(sample, "flops"), front)
    # At most one point per cell and space, besides the front; every occupied cell kept.
    logs = np.log10(frame["flops"].to_numpy())
    column = np.minimum(((logs - logs.min()) / np.ptp(logs) * 40).astype(int), 39)
    y = frame["test_error_mean"].to_numpy()
    row = np.minimum(((y - y.min()) / np.ptp(y) * 20).astype(int), 19)
    cells = pd.Series(list(zip(frame["space"], column, row, strict=True)), index=frame.index)
    assert cells[sample.index].nunique() == cells.nunique()
    assert len(sample) <= cells.nunique() + len(front)
    small = frame.head(300)
    pd.testing.assert_frame_equal(analysis.screen_sample(small, "flops", "test_error_mean"),
                                  small)


# --- streamed export ----------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".json"])
def test_streamed_export_writes_the_table_of_the_whole_frame(tmp_path: Path,
                                                             suffix: str) -> None:
    make_fixture_store(tmp_path / "s.db", trials_per_space=3, seeds=2, failed=1, running=1)
    with Reader.open(tmp_path / "s.db") as reader:
        frame = reader.trials_frame(["cifar10-cardinality"])
        whole, streamed = tmp_path / f"whole{suffix}", tmp_path / f"streamed{suffix}"
        write_table(frame, whole)
        rows = write_frames(reader.iter_trials_frames(["cifar10-cardinality"], rows=5),
                            streamed, lists=STAGE_LIST_COLUMNS)
    assert rows == len(frame)
    if suffix == ".csv":
        assert streamed.read_text() == whole.read_text()
    elif suffix == ".json":
        assert json.loads(streamed.read_text()) == json.loads(whole.read_text())
    else:
        # An all-empty text column is typed text in the stream (null in a whole frame's).
        got, want = pd.read_parquet(streamed), pd.read_parquet(whole)
        assert_same_values(got.map(lambda v: tuple(v) if isinstance(v, np.ndarray) else v),
                           want.map(lambda v: tuple(v) if isinstance(v, np.ndarray) else v))


def test_read_only_commands_do_not_import_the_writer(tmp_path: Path) -> None:
    """explorer.store gives Writer when asked for it, so `explorer status` (and the other
    readers) start without the writer's imports; `from explorer.store import Writer` works
    as before."""
    import subprocess
    import sys

    path = tmp_path / "explorer.db"
    make_fixture_store(path)
    probe = ("import sys\nfrom explorer.cli import main\ncode = 0\n"
             "try:\n    main()\nexcept SystemExit as done:\n    code = done.code\n"
             "print(code, 'explorer.store.writer' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", probe, "status", "--store", str(path)],
                          capture_output=True, text=True, check=True)
    assert done.stdout.split()[-2:] == ["0", "False"], done.stdout + done.stderr
    from explorer.store import Writer
    from explorer.store.writer import Writer as Defined

    assert Writer is Defined
