"""Search strategies, in one room: which trials an experiment runs, and in what order.

Every strategy hands out trials one at a time and is told how each ended,
the ask-and-tell shape of Optuna's own samplers:

- `Listed`: a list known before anything runs. The grid (every candidate the
  spaces enumerate) and random search (a seeded sample of the spaces) are
  lists; a rerun hands out only the trials not finished yet.
- `OptunaStrategy`: asks an Optuna study for each point, turns it into a
  candidate first, and never hands out an infeasible one (outside the
  tolerance or the constraints) or one already trained. The study can live
  in Optuna's own storage (`explorer run` keeps it in RUNS_DIR/optuna.db), so
  optuna-dashboard opens it and a rerun continues the sampler's history.

The sweep's Ray adapter (explorer/sweep/) drives any of them. This module
needs neither torch nor ray; optuna is imported only when an Optuna search
is made.
"""

from __future__ import annotations

import abc
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from explorer.arch import canonical_json
from explorer.complexity import Complexity, count
from explorer.errors import ExplorerError
from explorer.plan import TrialPlan, plan_trial, plan_trials
from explorer.space import (
    AXIS_FIELDS,
    Candidate,
    Dropped,
    base_candidate,
    build_arch,
    enumerate_spec,
    realise,
    valid_widths,
)
from explorer.spec import Range, Spec

if TYPE_CHECKING:
    import optuna

    from explorer.sampling import SampleReport

__all__ = [
    "DRAWS_PER_CANDIDATE",
    "Chooser",
    "Listed",
    "OptunaChooser",
    "OptunaStrategy",
    "RandomChooser",
    "SearchError",
    "Strategy",
    "StudyPlace",
    "Suggestion",
    "listed_candidates",
    "listed_trials",
    "listed_with_draws",
    "sample_candidates",
]

# Where a tiny feasible region ends: random search stops drawing after this many
# tries per wanted candidate, Optuna after this many infeasible points in a row.
DRAWS_PER_CANDIDATE = 50
_INFEASIBLE_IN_A_ROW = 1000


class SearchError(ExplorerError):
    """A search that cannot go on (e.g. nothing feasible to suggest); one line for people."""


@dataclass(frozen=True)
class Suggestion:
    """A trial to run, and the candidate it trains."""

    plan: TrialPlan
    candidate: Candidate


class Strategy(abc.ABC):
    """Hands out the trials to run, one at a time, and hears how each ended."""

    @abc.abstractmethod
    def ask(self) -> Suggestion | None:
        """The next trial to run, or None when there is none left."""

    def tell(self, trial_key: str, result: Mapping[str, Any] | None) -> None:  # noqa: B027
        """How a trial handed out by `ask` ended: its final report, or None if it failed.

        Fixed lists learn nothing from results, hence the empty default.
        """

    @property
    @abc.abstractmethod
    def budget(self) -> int:
        """At most how many more trials `ask` hands out."""


class Listed(Strategy):
    """Trials known up front (grid and random search), handed out in order."""

    def __init__(self, suggestions: Iterable[Suggestion]) -> None:
        self._left = deque(suggestions)

    def ask(self) -> Suggestion | None:
        return self._left.popleft() if self._left else None

    @property
    def budget(self) -> int:
        return len(self._left)


# --- turning a space's axes into a point ---------------------------------------------------


class Chooser(Protocol):
    """Picks a value per axis: an index into a list axis's values, a number in a range axis."""

    def index(self, name: str, values: Sequence[Any]) -> int: ...

    def number(self, name: str, axis: Range) -> int | float: ...


def _choose_point(axes: Mapping[str, Any], choose: Chooser) -> dict[str, Any]:
    """One value for every axis a space has, in AXIS_FIELDS order (a fixed draw order)."""
    point: dict[str, Any] = {}
    for name in AXIS_FIELDS:
        if name not in axes:
            continue
        axis = axes[name]
        point[name] = choose.number(name, axis) if isinstance(axis, Range) \
            else axis[choose.index(name, axis)]
    return point


@dataclass(frozen=True)
class RandomChooser:
    """Uniform over a list axis's values; uniform (or log-uniform) over a range."""

    rng: np.random.Generator

    def index(self, name: str, values: Sequence[Any]) -> int:
        return int(self.rng.integers(len(values)))

    def number(self, name: str, axis: Range) -> int | float:
        if axis.log:
            value = float(np.exp(self.rng.uniform(np.log(axis.low), np.log(axis.high))))
        else:
            value = float(self.rng.uniform(axis.low, axis.high))
        return round(value) if axis.integer else value


@dataclass(frozen=True)
class OptunaChooser:
    """Each axis as an Optuna parameter named ``SPACE.AXIS`` of one trial; a list axis is
    categorical over its values (a list value as its JSON text, e.g. "[3,4,6,3]", since
    Optuna's choices are scalars), so the study and its dashboard show what was tried."""

    trial: optuna.Trial
    space: str

    def index(self, name: str, values: Sequence[Any]) -> int:
        choices = [_choice_label(v) for v in values]
        return choices.index(self.trial.suggest_categorical(f"{self.space}.{name}", choices))

    def number(self, name: str, axis: Range) -> int | float:
        param = f"{self.space}.{name}"
        if axis.integer:
            return self.trial.suggest_int(param, int(axis.low), int(axis.high), log=axis.log)
        return self.trial.suggest_float(param, axis.low, axis.high, log=axis.log)


def _choice_label(value: Any) -> bool | int | float | str | None:
    """A list axis's value as an Optuna categorical choice: scalars as they are, lists (depths,
    widths) as compact JSON, which is stable and reads like the spec."""
    if isinstance(value, list | tuple):
        return canonical_json(list(value))
    return value


# --- grid and random -----------------------------------------------------------------------


def sample_candidates(
    spec: Spec, n: int, seed: int, spaces: Sequence[str] | None = None
) -> tuple[list[Candidate], list[Dropped]]:
    """n distinct feasible candidates per space, drawn with a seeded generator.

    Infeasible draws (tolerance, constraints) are dropped before anything
    trains; drawing stops after DRAWS_PER_CANDIDATE·n tries so a tiny
    feasible region ends.
    """
    choose = RandomChooser(np.random.default_rng(seed))
    base = base_candidate(spec)
    kept: list[Candidate] = []
    dropped: list[Dropped] = []
    for name in spaces or list(spec.spaces):
        axes = spec.spaces[name].axes.present()
        seen: set[str] = set()
        for _ in range(DRAWS_PER_CANDIDATE * n):
            if len(seen) >= n:
                break
            result = realise(spec, name, _choose_point(axes, choose), base)
            if isinstance(result, Dropped):
                dropped.append(result)
            elif result.key not in seen:
                seen.add(result.key)
                kept.append(result)
    return kept, dropped


def listed_candidates(spec: Spec) -> list[Candidate] | None:
    """The candidates a listed search trains (the grid, or a seeded sample of the spaces);
    None for a search that picks them as it goes (optuna)."""
    listed = listed_with_draws(spec)
    return None if listed is None else listed[0]


def listed_with_draws(spec: Spec) -> tuple[list[Candidate], tuple[SampleReport, ...]] | None:
    """listed_candidates, with how each sampled space (grid search only) was drawn."""
    if spec.search.strategy == "grid":
        enumeration = enumerate_spec(spec)
        return list(enumeration.candidates), enumeration.samples
    if spec.search.strategy == "random":
        assert spec.search.n_trials is not None  # the spec requires it
        return sample_candidates(spec, spec.search.n_trials, spec.search.seed)[0], ()
    return None


def listed_trials(spec: Spec, candidates: Sequence[Candidate]) -> list[Suggestion]:
    """Every candidate × seed as suggestions (each network once, in all its spaces)."""
    by_key = {c.key: c for c in candidates}
    return [Suggestion(plan, by_key[plan.candidate_key]) for plan in plan_trials(spec, candidates)]


# --- optuna --------------------------------------------------------------------------------


@dataclass(frozen=True)
class StudyPlace:
    """Where an Optuna study lives: Optuna's storage URL and the study's name."""

    storage: str
    name: str


class OptunaStrategy(Strategy):
    """Optuna's suggestions, each made a candidate before it may train.

    An infeasible point never trains: its constraint violations are recorded
    with Optuna's `Trial.set_constraint` and it is told as pruned (it stopped
    before its first step; no objective value is made up), so TPE learns to
    avoid the region. A point already trained (in `known`, by trial key) is
    told its known result again and asked again (Optuna's FAQ way with a
    repeat); a point in flight is never handed out twice. Multi-objective
    searches use NSGA-II, single-objective ones TPE with the constant liar
    (parallel trials in flight count as pending), both seeded by the spec.

    With a `place`, the study is Optuna's own, loaded if it exists: a rerun
    continues its history, where each trained trial carries its trial key
    (user attribute ``trial_key``); a trial a gone driver left running is told
    its result if the store has it, else failed and asked again first (Optuna's
    enqueue_trial). Without a place the study lives in memory.
    """

    def __init__(self, spec: Spec, known: Mapping[str, Mapping[str, Any]], n_trials: int,
                 place: StudyPlace | None = None) -> None:
        import optuna

        self.spec = spec
        self.objectives = list(spec.search.objectives)
        self.known = {key: dict(result) for key, result in known.items()}
        self.remaining = n_trials
        self.infeasible = 0
        self._base = base_candidate(spec)
        self._in_flight: dict[str, optuna.trial.Trial] = {}
        self._candidates: dict[str, Candidate] = {}
        seed = spec.search.seed
        sampler: optuna.samplers.BaseSampler = (
            optuna.samplers.NSGAIISampler(seed=seed) if len(self.objectives) > 1
            else optuna.samplers.TPESampler(seed=seed, constant_liar=True))
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.study = optuna.create_study(
            directions=["minimize"] * len(self.objectives), sampler=sampler,
            storage=place.storage if place else None, study_name=place.name if place else None,
            load_if_exists=place is not None)
        self._settle_left_running()

    @property
    def budget(self) -> int:
        return self.remaining

    def ask(self) -> Suggestion | None:
        for _ in range(_INFEASIBLE_IN_A_ROW):
            if self.remaining <= 0:
                return None
            trial = self.study.ask()
            space, candidate = self._candidate(trial)
            if candidate is None:
                self.infeasible += 1
                self.study.tell(trial, state=_optuna_state("PRUNED"))
                continue
            plan = plan_trial(self.spec, candidate, self.spec.train.seeds[0], (space,))
            # Trained before (counted out of n_trials), maybe under its version-1 key.
            known = next((k for k in (plan.trial_key, *plan.aliases) if k in self.known), None)
            if known is not None:
                trial.set_user_attr("repeat_of", known)
                self.study.tell(trial, self._values(self.known[known], candidate))
                continue
            if plan.trial_key in self._in_flight:  # suggested again while it trains
                self._fail(trial)
                continue
            trial.set_user_attr("trial_key", plan.trial_key)
            self._in_flight[plan.trial_key] = trial
            self._candidates[plan.trial_key] = candidate
            self.remaining -= 1
            return Suggestion(plan, candidate)
        if self.known or self._in_flight:  # every feasible point it finds is trained or training
            return None
        raise SearchError(f"optuna suggested {_INFEASIBLE_IN_A_ROW} infeasible candidates in a "
                          "row; widen the axes or loosen the constraints")

    def tell(self, trial_key: str, result: Mapping[str, Any] | None) -> None:
        trial = self._in_flight.pop(trial_key, None)
        if trial is None:
            return
        candidate = self._candidates.pop(trial_key)
        values = self._values(result, candidate) if result else None
        if values is None:
            self._fail(trial)
            return
        self.known[trial_key] = dict(result or {})
        self.study.tell(trial, values)

    def _settle_left_running(self) -> None:
        """Trials a driver that is gone left running: told what the store knows, or failed
        and queued again, so the next asks hand them out first (they resume from their
        checkpoints). Only this driver asks and tells (one driver per experiment), so none
        is live."""
        for frozen in self.study.get_trials(deepcopy=False, states=(_optuna_state("RUNNING"),)):
            key = frozen.user_attrs.get("trial_key")
            values = None
            if key in self.known:
                values = self._known_values(frozen, self.known[key])
            if values is not None:
                self.study.tell(frozen.number, values)
                continue
            self.study.tell(frozen.number, state=_optuna_state("FAIL"))
            if key is not None and key not in self.known:
                self.study.enqueue_trial(frozen.params)

    def _known_values(self, frozen: optuna.trial.FrozenTrial,
                      result: Mapping[str, Any]) -> list[float] | None:
        space = str(frozen.params.get("space", next(iter(self.spec.spaces))))
        if space not in self.spec.spaces:
            return None
        fixed = _FixedChooser(frozen.params, space)
        found = realise(self.spec, space, _choose_point(self.spec.spaces[space].axes.present(),
                                                      fixed), self._base)
        return None if isinstance(found, Dropped) else self._values(result, found)

    def _candidate(self, trial: optuna.Trial) -> tuple[str, Candidate | None]:
        names = list(self.spec.spaces)
        space = str(trial.suggest_categorical("space", names)) if len(names) > 1 else names[0]
        axes = self.spec.spaces[space].axes.present()
        values = _choose_point(axes, OptunaChooser(trial, space))
        result = realise(self.spec, space, values, self._base)
        if isinstance(result, Dropped):
            cost = _count_if_buildable(self.spec, space, result.values)
            margins = _constraint_margins(self.spec, space, cost, self._base.complexity)
        else:
            margins = _constraint_margins(self.spec, space, result.complexity,
                                         self._base.complexity)
        for name, margin in margins.items():
            trial.set_constraint(name, margin)
        return space, None if isinstance(result, Dropped) else result

    def _values(self, result: Mapping[str, Any], candidate: Candidate) -> list[float] | None:
        """The objectives of a result; complexity ones come from the candidate. None when
        the result lacks an error objective (a trial that ended before its first epoch)."""
        complexity = vars(candidate.complexity)
        values = []
        for name in self.objectives:
            value = complexity[name] if name in complexity else result.get(name)
            if value is None:
                return None
            values.append(float(value))
        return values

    def _fail(self, trial: optuna.Trial) -> None:
        self.study.tell(trial, state=_optuna_state("FAIL"))


def _optuna_state(name: str) -> optuna.trial.TrialState:
    import optuna

    return optuna.trial.TrialState[name]


@dataclass(frozen=True)
class _FixedChooser:
    """The values a stored trial was given, read back (list axes by their choice labels)."""

    params: Mapping[str, Any]
    space: str

    def index(self, name: str, values: Sequence[Any]) -> int:
        return [_choice_label(v) for v in values].index(self.params[f"{self.space}.{name}"])

    def number(self, name: str, axis: Range) -> int | float:
        return self.params[f"{self.space}.{name}"]


# Optuna's constraint names: a point is feasible when every value is 0 or less.
_UNBUILDABLE = "buildable"


def _constraint_margins(spec: Spec, space: str, cost: Complexity | None,
                       base: Complexity) -> dict[str, float]:
    """How far a point is inside (< 0) or outside (> 0) each of its bounds, relative to the
    bound: the solve's tolerance and each absolute constraint. A point that cannot be built
    (no solution, a width rounding to 0) has only ``buildable``: 1."""
    if cost is None:
        return {_UNBUILDABLE: 1.0}
    margins: dict[str, float] = {}
    rule = spec.spaces[space].solve
    if rule is not None:
        goal = getattr(base, rule.preserve)
        margins["tolerance"] = abs(getattr(cost, rule.preserve) - goal) / goal - rule.tolerance
    for name, band in spec.constraints:
        if band is None:
            continue
        value, (low, high) = getattr(cost, name), band
        sides = [(low - value) / low if low else None, (value - high) / high if high else None]
        if any(s is not None for s in sides):
            margins[name] = max(s for s in sides if s is not None)
    return margins


def _count_if_buildable(spec: Spec, space: str, values: Mapping[str, Any]) -> Complexity | None:
    rule = spec.spaces[space].solve
    if (rule is not None and rule.field not in values) or not valid_widths(spec, values):
        return None
    return count(build_arch(spec, values), spec.data.resolution, spec.num_classes)
