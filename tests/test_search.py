"""Search strategies without Ray: what each hands out, and what Optuna is told."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import optuna
import pytest
from conftest import tiny_spec

from explorer.arch import make_arch
from explorer.complexity import count
from explorer.search import (
    Listed,
    OptunaStrategy,
    StudyPlace,
    listed_candidates,
    listed_trials,
    sample_candidates,
)
from explorer.space import enumerate_spec
from explorer.spec import Spec, load_spec

FLOPS_BOUND = 300_000  # with d in 1..64 at C=1 or 2, most networks of the tiny spec are over


def optuna_spec(tmp_path: Path, **search: object) -> Spec:
    return load_spec(tiny_spec(
        tmp_path, name="optuna",
        spaces={"grid": {"axes": {"cardinality": [1, 2],
                                  "bottleneck_width": {"low": 1, "high": 64, "int": True}}}},
        constraints={"flops": [None, FLOPS_BOUND]},
        search={"strategy": "optuna", "n_trials": 6, "seed": 3, **search},
        train={"seeds": [0]},
    ))


def test_listed_hands_out_every_trial_once_in_order(tmp_path: Path) -> None:
    spec = load_spec(tiny_spec(tmp_path))
    candidates = listed_candidates(spec)
    assert candidates is not None
    trials = listed_trials(spec, candidates)
    assert len(trials) == 2 * 2  # 2 cardinalities x 2 seeds, as the spec says
    strategy = Listed(trials)
    handed = []
    while (s := strategy.ask()) is not None:
        handed.append(s)
        assert strategy.budget == len(trials) - len(handed)
    assert handed == trials
    assert all(s.plan.candidate_key == s.candidate.key for s in handed)


def test_grid_lists_the_enumeration_and_optuna_lists_nothing(tmp_path: Path) -> None:
    spec = load_spec(tiny_spec(tmp_path))
    assert listed_candidates(spec) == list(enumerate_spec(spec).candidates)
    assert listed_candidates(optuna_spec(tmp_path)) is None


def test_random_sample_is_seeded_distinct_and_feasible(tmp_path: Path) -> None:
    spec = optuna_spec(tmp_path)
    first, dropped = sample_candidates(spec, 5, seed=7)
    again, _ = sample_candidates(spec, 5, seed=7)
    other, _ = sample_candidates(spec, 5, seed=8)
    keys = [c.key for c in first]
    assert keys == [c.key for c in again]
    assert keys != [c.key for c in other]
    assert len(set(keys)) == len(keys) == 5
    assert dropped, "the flops bound drops most draws"
    for c in first:  # counted again by the formula, not taken from the candidate
        assert count(c.arch, spec.data.resolution, spec.num_classes).flops <= FLOPS_BOUND


def test_optuna_never_hands_out_an_infeasible_or_known_trial(tmp_path: Path) -> None:
    spec = optuna_spec(tmp_path)
    first = OptunaStrategy(spec, {}, n_trials=3)
    handed = [first.ask() for _ in range(3)]
    assert all(s is not None for s in handed)
    assert first.ask() is None and first.budget == 0
    assert first.infeasible > 0
    for s in handed:
        assert s is not None
        assert count(s.candidate.arch, spec.data.resolution,
                     spec.num_classes).flops <= FLOPS_BOUND
    known = {s.plan.trial_key: {"test_error": 50.0} for s in handed if s is not None}

    later = OptunaStrategy(spec, known, n_trials=4)
    while (s := later.ask()) is not None:
        assert s.plan.trial_key not in known
        later.tell(s.plan.trial_key, {"test_error": 40.0})
    complete = [t for t in later.study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    # Every known result it met was told as it was (a repeat, marked so), and every trained
    # one as reported, once.
    assert {t.values[0] for t in complete} <= {40.0, 50.0}
    trained = [t for t in complete if "repeat_of" not in t.user_attrs]
    assert [t.values for t in trained] == [[40.0]] * 4
    assert len({t.user_attrs["trial_key"] for t in trained}) == 4
    for repeat in (t for t in complete if "repeat_of" in t.user_attrs):
        key = repeat.user_attrs["repeat_of"]
        assert repeat.values == [known[key]["test_error"] if key in known else 40.0]


@pytest.mark.parametrize("result", [None, {}, {"status": "failed"}])
def test_optuna_tells_a_trial_without_an_error_figure_as_failed(
        tmp_path: Path, result: dict[str, object] | None) -> None:
    strategy = OptunaStrategy(optuna_spec(tmp_path), {}, n_trials=1)
    suggestion = strategy.ask()
    assert suggestion is not None
    strategy.tell(suggestion.plan.trial_key, result)
    last = strategy.study.trials[-1]
    assert last.state == optuna.trial.TrialState.FAIL
    assert last.values is None


def test_complexity_objectives_come_from_the_candidate(tmp_path: Path) -> None:
    strategy = OptunaStrategy(optuna_spec(tmp_path, objectives=["test_error", "flops"]), {},
                              n_trials=1)
    suggestion = strategy.ask()
    assert suggestion is not None
    strategy.tell(suggestion.plan.trial_key, {"test_error": 12.5})
    spec = strategy.spec
    flops = count(suggestion.candidate.arch, spec.data.resolution, spec.num_classes).flops
    assert strategy.study.trials[-1].values == [12.5, float(flops)]


# --- Optuna's own storage --------------------------------------------------------------------


def _cardinality_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.trials if "trial_key" in t.user_attrs]


def test_the_study_lives_in_optunas_storage_and_a_rerun_continues(tmp_path: Path) -> None:
    spec = optuna_spec(tmp_path)
    place = StudyPlace(f"sqlite:///{tmp_path / 'optuna.db'}", "optuna")
    first = OptunaStrategy(spec, {}, n_trials=5, place=place)
    handed = [first.ask() for _ in range(5)]
    keys = [s.plan.trial_key for s in handed if s is not None]
    assert len(keys) == 5
    results = {key: {"test_error": 50.0 - i} for i, key in enumerate(keys)}
    for key in keys[:3]:  # the 4th and 5th are in flight when the driver dies
        first.tell(key, results[key])
    del first

    stored = optuna.load_study(study_name="optuna", storage=place.storage)
    states = [t.state.name for t in _cardinality_trials(stored)]
    assert states == ["COMPLETE"] * 3 + ["RUNNING"] * 2
    before = {t.number: t.params for t in stored.trials}
    assert len(before) > 5, "the infeasible points are in the study too"

    # The store finished the 4th before the driver died, not the 5th: the rerun tells the
    # 4th its result, hands out the 5th again first (it resumes), then one new point.
    known = {key: results[key] for key in keys[:4]}
    later = OptunaStrategy(spec, known, n_trials=2, place=place)
    again = later.ask()
    assert again is not None and again.plan.trial_key == keys[4]
    later.tell(keys[4], results[keys[4]])
    while (s := later.ask()) is not None:
        assert s.plan.trial_key not in results
        later.tell(s.plan.trial_key, {"test_error": 40.0})
    stored = optuna.load_study(study_name="optuna", storage=place.storage)
    assert {t.number: t.params for t in stored.trials[:len(before)]} == before  # history kept
    trained = [t for t in _cardinality_trials(stored) if t.state.name == "COMPLETE"]
    assert [t.values for t in trained] == [[v["test_error"]] for v in results.values()] + [
        [40.0]]
    trained_keys = [t.user_attrs["trial_key"] for t in trained]
    assert len(set(trained_keys)) == len(trained_keys) == 6, "no trained point counted twice"
    assert [t.state.name for t in _cardinality_trials(stored)].count("FAIL") == 1  # the 5th


def test_list_axes_are_their_values_and_infeasible_points_carry_their_violation(
        tmp_path: Path) -> None:
    spec = load_spec(tiny_spec(
        tmp_path, name="values",
        spaces={"grid": {"axes": {"depths": [[1, 1], [2, 1]], "cardinality": [1, 2],
                                  "bottleneck_width": {"low": 1, "high": 64, "int": True}}}},
        constraints={"flops": [None, FLOPS_BOUND]},
        search={"strategy": "optuna", "n_trials": 4, "seed": 5}, train={"seeds": [0]}))
    strategy = OptunaStrategy(spec, {}, n_trials=4)
    while (s := strategy.ask()) is not None:
        strategy.tell(s.plan.trial_key, {"test_error": 30.0})
    assert strategy.infeasible > 0
    base = spec.model
    for trial in strategy.study.trials:
        depths = trial.params["grid.depths"]
        assert depths in ("[1,1]", "[2,1]")  # values, as JSON text, not indices
        assert trial.params["grid.cardinality"] in (1, 2)
        arch = make_arch(template=base.template, stem_width=base.stem_width,
                         depths=tuple(int(d) for d in depths.strip("[]").split(",")),
                         widths=tuple(base.widths), cardinality=trial.params["grid.cardinality"],
                         bottleneck_width=trial.params["grid.bottleneck_width"], block=base.block)
        flops = count(arch, spec.data.resolution, spec.num_classes).flops
        assert trial.constraints["flops"] == pytest.approx((flops - FLOPS_BOUND) / FLOPS_BOUND)
        # Over the bound: pruned before it trained (TPE ranks it by the violation); else trained.
        assert trial.state.name == ("PRUNED" if flops > FLOPS_BOUND else "COMPLETE")
        if trial.state.name == "COMPLETE":
            assert trial.user_attrs["trial_key"]


@pytest.mark.slow
def test_optuna_dashboard_serves_the_study(tmp_path: Path) -> None:
    """`optuna-dashboard sqlite:///RUNS/optuna.db` opens the study a search left there."""
    spec = optuna_spec(tmp_path)
    place = StudyPlace(f"sqlite:///{tmp_path / 'optuna.db'}", "optuna")
    strategy = OptunaStrategy(spec, {}, n_trials=2, place=place)
    while (s := strategy.ask()) is not None:
        strategy.tell(s.plan.trial_key, {"test_error": 25.0})
    trials = len(strategy.study.trials)

    beside = Path(sys.executable).with_name("optuna-dashboard")
    command = str(beside) if beside.exists() else shutil.which("optuna-dashboard")
    assert command, "optuna-dashboard is not installed (it is in the dev extra)"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([command, place.storage, "--host", "127.0.0.1", "--port",
                               str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def get(path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return json.loads(answer.read())

    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                summaries = get("/api/studies")["study_summaries"]
                break
            except OSError:
                assert server.poll() is None, "optuna-dashboard exited"
                assert time.monotonic() < deadline, "optuna-dashboard did not answer in 120 s"
                time.sleep(0.5)
        assert [s["study_name"] for s in summaries] == ["optuna"]
        detail = get(f"/api/studies/{summaries[0]['study_id']}")
        assert len(detail["trials"]) == trials
    finally:
        server.terminate()
        server.wait(timeout=30)
