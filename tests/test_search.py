"""Search strategies without Ray: what each hands out, and what Optuna is told."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from conftest import tiny_spec

from explorer.complexity import count
from explorer.search import (
    Listed,
    OptunaStrategy,
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
    told = [t.values for t in later.study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    # Every known result it met was told as it was, and every trained one as reported.
    assert {v[0] for v in told} <= {40.0, 50.0}
    assert sum(v == [40.0] for v in told) == 4


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
