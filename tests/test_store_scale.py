"""The store at scale: batched writes give the rows of the writes one by one, and the
column-wise, aggregated read paths give the frames of the plain ones.

Backend-neutral tests (taking `store_url` or `store`) run on SQLite and PostgreSQL, as
in test_store.py. No timings here: benchmarks/scale.py measures them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from explorer.arch import resnext29
from explorer.complexity import count
from explorer.experiment import StoreSink, Unobserved
from explorer.plan import TrialPlan
from explorer.space import Candidate
from explorer.spec import parse_spec
from explorer.store import Reader, StoreError, Writer

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
