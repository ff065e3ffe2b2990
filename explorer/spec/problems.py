"""What is wrong with a spec, said for a person: `Problem` (one per line, ``FILE:LINE:
path.to.key: what (got VALUE)``), `SpecError` (every problem found, exit 2), pydantic's
errors in those words, and the rules across fields and sections that pydantic's per-field
checks cannot see.
"""

from __future__ import annotations

import difflib
import functools
import json
import types
import typing
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Annotated, Any, Protocol, Union

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails, PydanticCustomError

from explorer.arch import stage_bottleneck_widths
from explorer.errors import ExplorerError
from explorer.spec.schema import (
    KNOWN_NUM_CLASSES,
    REGNET_FIELDS,
    REGNET_REQUIRED,
    RESNEXT_FIELDS,
    Axes,
    Constraints,
    DataSpec,
    ModelSpec,
    Range,
    Sample,
    SearchSpec,
    Solve,
    Spec,
)

__all__ = [
    "At",
    "Loc",
    "Problem",
    "SpecError",
    "check_rules",
    "problems_in",
]

# The tags pydantic puts into an error's location for the schema's unions of a list and a
# range (an axis, a per-stage draw).
_UNION_TAGS = {"list", "range"}
# The type of the error a Spec's validator raises for the rules across fields.
_RULES_BROKEN = "spec_rules"


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    path: str
    message: str
    value: str | None = None
    origin: str | None = None  # where, when not a line of the file: "--set KEY.PATH"

    def __str__(self) -> str:
        where = self.origin or f"{self.file}:{self.line}"
        return f"{where}: {self.what()}"

    def what(self) -> str:
        """The problem without where it is: ``path.to.key: what is wrong (got VALUE)``."""
        got = f" (got {self.value})" if self.value is not None else ""
        return f"{self.path}: {self.message}{got}"


class At(Protocol):
    """Makes the Problem at a key path (the line found from the path, or from `line_loc`)."""

    def __call__(self, loc: Loc, message: str, value: Any = None, show_value: bool = True,
                 line_loc: Loc = ()) -> Problem: ...


class SpecError(ExplorerError):
    """A spec that cannot run; `problems` holds one entry per problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.line, p.path))
        super().__init__("\n".join(str(p) for p in self.problems))

    def report(self) -> str:
        """Each problem on a line of its own, then how many there are in which file."""
        n = len(self.problems)
        where = self.problems[0].file if self.problems else "the spec"
        return f"{self}\n{where}: {n} problem{'s' if n != 1 else ''}; nothing was run"


Loc = tuple[str | int, ...]


def problems_in(data: dict[str, Any], at: At) -> Iterator[Problem]:
    """Every problem of a spec's parsed data, each made by `at`: pydantic's, field by field,
    then the rules across fields (checked on whichever fields are valid on their own)."""
    broken: list[str] = []  # the rules the Spec's own validator found, not located
    try:
        Spec.model_validate(data)
    except ValidationError as err:
        errors = [(_clean_loc(e["loc"]), e) for e in err.errors()]
        for loc, e in errors:
            if e["type"] == _RULES_BROKEN:
                broken.append(str(e["msg"]))
                continue  # the same rules, located at their lines, follow
            if e["type"] == "too_short" and any(
                other[: len(loc)] == loc and len(other) > len(loc) for other, _ in errors
            ):
                continue  # a list whose only item is invalid is not also "empty"
            key_loc = tuple(x for x in e["loc"] if x not in _UNION_TAGS and x != "[key]")
            yield at(loc, _message(e, loc), e.get("input"), e["type"] != "missing", key_loc)
    located = list(_check_semantics(data, at))
    yield from located
    if broken and not located:  # the two readings of the rules disagree: never let it pass
        yield at((), "; ".join(broken), None, False)


def check_rules(spec: Spec) -> None:
    """Refuse a Spec that breaks a rule across fields, however it was built (Spec(...),
    model_validate, model_copy): Spec's own validator calls this, so every Spec obeys them.

    The rules read a spec's data as a file gives it; a built Spec's is what differs from
    the defaults (a regnet model's unused resnext defaults are no fields it was given), so
    a spec's full dump validates again to itself."""
    data = spec.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    broken = [problem.what() for problem in _check_semantics(data, _unlocated)]
    if broken:
        raise PydanticCustomError(_RULES_BROKEN, "{rules}", {"rules": "; ".join(broken)})


def _unlocated(loc: Loc, message: str, value: Any = None, show_value: bool = True,
               line_loc: Loc = ()) -> Problem:
    """The problem at a key path of a spec that has no file (an At)."""
    return Problem("", 0, _dotted(loc), message, _show(value) if show_value else None)


def _clean_loc(loc: tuple[Any, ...]) -> Loc:
    """Pydantic's location without its markers (union tags).

    A bad mapping key (pydantic marks it '[key]') is reported at its mapping,
    the key itself shown as the value, so the path stays a clean dotted name.
    """
    if "[key]" in loc:
        loc = loc[: loc.index("[key]") - 1]
    return tuple(x for x in loc if x not in _UNION_TAGS)


def _check_semantics(data: dict[str, Any], at: At) -> Iterator[Problem]:
    """Rules across fields, checked on whichever fields are valid on their own."""
    model = _valid(ModelSpec, data.get("model"))
    if model is not None:
        yield from _check_model(model, at)
    yield from _check_family(data, at)
    search = _valid(SearchSpec, data.get("search"))
    if search is not None and search.strategy in ("random", "optuna") and search.n_trials is None:
        yield at(("search", "n_trials"), f"{search.strategy} search needs n_trials", None, False)
    spaces = data.get("spaces")
    for name, raw in spaces.items() if isinstance(spaces, dict) else ():
        raw = raw if isinstance(raw, dict) else {}
        axes, solve = _valid(Axes, raw.get("axes")), _valid(Solve, raw.get("solve"))
        if axes is not None and model is not None:
            # `solve: {}` is a solve with every default, not none.
            solved = solve if raw.get("solve") is not None else None
            yield from _check_space(str(name), axes, solved, model, at)
        if isinstance(raw.get("sample"), dict):
            yield from _check_sample(str(name), raw, data, search, at)
        if axes is not None and search is not None and search.strategy == "grid":
            for axis, values in vars(axes).items():
                if isinstance(values, Range):
                    yield at(
                        ("spaces", name, "axes", axis),
                        "grid search needs a list of values, "
                        "not a range; use search.strategy random or optuna",
                        None,
                        False,
                    )
    constraints = _valid(Constraints, data.get("constraints"))
    for field, band in vars(constraints).items() if constraints is not None else ():
        if band and band[0] is not None and band[1] is not None and band[0] > band[1]:
            yield at(("constraints", field), "low bound is above high bound", list(band))
    dataset = _valid(DataSpec, data.get("data"))
    if (
        dataset is not None
        and dataset.num_classes is None
        and dataset.dataset is not None
        and dataset.dataset not in KNOWN_NUM_CLASSES
    ):
        yield at(
            ("data", "num_classes"),
            f"{dataset.dataset} needs num_classes "
            "(the space is enumerated before any data is read)",
            None,
            False,
        )


def _check_sample(name: str, raw: dict[str, Any], data: dict[str, Any],
                  search: SimpleNamespace | None, at: At) -> Iterator[Problem]:
    """A sampled space draws its own candidates: no grid, no solver, a band to stratify."""
    base = ("spaces", name)
    for other in ("axes", "solve"):
        if other in raw:
            yield at((*base, other), "a sampled space draws its candidates, so it cannot also "
                     f"have {other}; put them in a space of their own", None, False)
    if search is not None and search.strategy not in (None, "grid"):
        yield at((*base, "sample"), "a sampled space trains every candidate it draws: it needs "
                 "search.strategy grid", search.strategy)
    sample = _valid(Sample, raw["sample"])
    assert sample is not None  # raw["sample"] is a mapping
    drawn = set(sample.stages.present()) if sample.stages is not None else None
    if drawn is not None:
        yield from _check_anynet_draws((*base, "sample", "stages"), drawn, at)
    for key in ("shared", "non_decreasing"):
        for i, field in enumerate(getattr(sample, key) or ()):
            if drawn is not None and field not in drawn:
                yield at((*base, "sample", key, i), "is not drawn: give it a range or a list "
                         "in sample.stages, or leave it out here", field)
    stratify = sample.stratify
    if stratify is None:
        return
    if sample.n is not None and stratify.bins > sample.n:
        yield at((*base, "sample", "stratify", "bins"), f"is more than sample.n ({sample.n}), "
                 "so some bins could hold no candidate", stratify.bins)
    given = data.get("constraints")
    raw_band = given.get(stratify.by) if isinstance(given, dict) else None
    constraints = _valid(Constraints, given)
    band = getattr(constraints, stratify.by) if constraints is not None else None
    if band is None and raw_band is not None:
        return  # the band itself is invalid, and reported where it is
    if band is None or band[0] is None or band[1] is None or band[0] == band[1]:
        yield at((*base, "sample", "stratify", "by"), f"stratifying by {stratify.by} needs a "
                 f"band of two different bounds, constraints.{stratify.by}: [low, high], to "
                 "divide into bins", list(band) if band is not None else None, band is not None)


def _check_anynet_draws(loc: Loc, drawn: set[str], at: At) -> Iterator[Problem]:
    """A stage is C groups of d channels, or an inner width w/b in groups of g (C = (w/b)/g,
    d = g): draws that fix the same quantity twice are refused."""
    if {"group_width", "bottleneck_width"} <= drawn:
        yield at((*loc, "group_width"), "g is the stage's d (channels per group), which "
                 "bottleneck_width also draws: keep one of the two", None, False)
    if "bottleneck_ratio" in drawn and "cardinality" in drawn and (
            drawn & {"group_width", "bottleneck_width"}):
        yield at((*loc, "cardinality"), "with bottleneck_ratio b and the group width, "
                 "C = (w/b)/g follows: drop cardinality or the group width", None, False)


def _check_family(data: dict[str, Any], at: At) -> Iterator[Problem]:
    """Each model family takes its own fields, in the model and in every space."""
    raw = data.get("model")
    raw = raw if isinstance(raw, dict) else {}
    family = raw.get("family", "resnext")
    if family not in ("resnext", "regnet"):
        return  # reported by the field's own check
    regnet = family == "regnet"
    own, other = (REGNET_FIELDS, RESNEXT_FIELDS) if regnet else (RESNEXT_FIELDS, REGNET_FIELDS)
    for key in other:
        if key in raw:
            yield at(("model", key), f"is a {'resnext' if regnet else 'regnet'} field; a "
                     f"{family} model's stages come from {', '.join(own)}"
                     + ("" if regnet else " (or set family: regnet)"), None, False)
    if regnet:
        for key in REGNET_REQUIRED:
            if key not in raw:
                yield at(("model", key), "is required for family regnet", None, False)
    quanta = _ints(raw.get("quantum", 8))
    spaces = data.get("spaces")
    w_0s: list[tuple[Loc, Any]] = [(("model", "w_0"), raw.get("w_0"))] if regnet else []
    for name, space in spaces.items() if isinstance(spaces, dict) else ():
        space = space if isinstance(space, dict) else {}
        axes = space.get("axes")
        for key in axes if isinstance(axes, dict) else ():
            if key in other:
                axes_of = [k for k in own if k != "quantum"]
                yield at(("spaces", name, "axes", key), f"is a {'resnext' if regnet else 'regnet'}"
                         f" field: a {family} space varies {', '.join(axes_of)}, stem_width "
                         "and block", None, False)
        values = axes.get("w_0") if isinstance(axes, dict) else None
        if isinstance(values, list):
            w_0s.extend((("spaces", name, "axes", "w_0", i), v) for i, v in enumerate(values))
        solve = space.get("solve")
        field = solve.get("field") if isinstance(solve, dict) else None
        if field in other:
            yield at(("spaces", name, "solve", "field"), f"is not a field of a {family} model",
                     field)
        if regnet and isinstance(solve, dict) and "field" not in solve:
            yield at(("spaces", name, "solve"), "a regnet space names its solve.field (depth, "
                     "w_0, group_width, bottleneck_ratio or stem_width)", None, False)
        sample = space.get("sample")
        sample = sample if isinstance(sample, dict) else {}
        if regnet and "stages" in sample:
            yield at(("spaces", name, "sample", "stages"), "a regnet space draws the model's "
                     "fields under sample.regnet, not per stage", None, False)
        if not regnet and "regnet" in sample:
            yield at(("spaces", name, "sample", "regnet"), "draws regnet fields: it needs "
                     "model.family regnet", None, False)
        draws = sample.get("regnet")
        draws = draws if isinstance(draws, dict) else {}
        w_0 = draws.get("w_0")
        drawn_at: Loc = ("spaces", name, "sample", "regnet", "w_0")
        if isinstance(w_0, list):
            w_0s.extend(((*drawn_at, i), v) for i, v in enumerate(w_0))
        elif isinstance(w_0, dict) and w_0.get("log") is True:
            yield at(drawn_at, "a log-uniform draw gives every integer, not multiples of "
                     "quantum: use {low, high, step} or a list", None, False)
        elif isinstance(w_0, dict):
            w_0s.extend(((*drawn_at, key), w_0.get(key, 1)) for key in ("low", "step"))
        lowest = _lowest(draws.get("w_m"))
        if lowest is not None and lowest <= 1:
            yield at(("spaces", name, "sample", "regnet", "w_m"), "RegNet's w_m must be above "
                     "1 (each stage w_m times the last)", lowest)
    for where, w_0 in w_0s:
        for q in quanta:
            if isinstance(w_0, int) and not isinstance(w_0, bool) and w_0 % q:
                yield at(where, f"must be a multiple of quantum ({q}), as RegNet's widths are",
                         w_0)


def _lowest(draw: Any) -> float | None:
    """The lowest value a draw (a range or a list) can give, where it says."""
    if isinstance(draw, dict):
        draw = [draw.get("low")]
    numbers = [v for v in draw if isinstance(v, int | float)] if isinstance(draw, list) else []
    return min(numbers, default=None)


def _ints(value: Any) -> list[int]:
    return [value] if isinstance(value, int) and not isinstance(value, bool) and value > 0 else []


def _check_model(model: SimpleNamespace, at: At) -> Iterator[Problem]:
    if model.depths is None or model.widths is None:
        return
    if len(model.depths) != len(model.widths):
        yield at(
            ("model", "widths"),
            f"needs one width per stage: depths has "
            f"{len(model.depths)} stages, widths {len(model.widths)}",
            list(model.widths),
        )
    elif model.bottleneck_width is not None:
        yield from _check_d(model.bottleneck_width, model.widths, ("model", "bottleneck_width"), at)


def _check_space(name: str, axes: SimpleNamespace, solve: SimpleNamespace | None,
                 model: SimpleNamespace, at: At) -> Iterator[Problem]:
    present = {k: v for k, v in vars(axes).items() if v is not None}
    base = ("spaces", name)
    if solve is not None and solve.field is not None:
        if solve.field in present:
            yield at(
                (*base, "solve", "field"),
                "is solved for, so it cannot also be an axis",
                solve.field,
            )
        if solve.low is not None and solve.high is not None and solve.low > solve.high:
            yield at((*base, "solve", "low"), "is above solve.high", solve.low)
    if model.depths is None or model.widths is None or model.family == "regnet":
        return  # a regnet model generates its stages: its resnext axes are refused as such
    for key, other in (("depths", "widths"), ("widths", "depths")):
        if other in present:
            continue
        n_stages = len(getattr(model, other))
        for i, sizes in enumerate(present.get(key, ())):
            if len(sizes) != n_stages:
                yield at(
                    (*base, "axes", key, i),
                    f"needs {n_stages} stages like the model's {other}, has {len(sizes)}",
                    list(sizes),
                )
    d_axis = present.get("bottleneck_width")
    if isinstance(d_axis, tuple):
        for widths in present.get("widths", (model.widths,)):
            for i, d in enumerate(d_axis):
                yield from _check_d(d, widths, (*base, "axes", "bottleneck_width", i), at)


def _check_d(d: int, widths: tuple[int, ...], loc: Loc, at: At) -> Iterator[Problem]:
    ds = stage_bottleneck_widths(d, widths)
    if 0 in ds:
        stage = ds.index(0)
        yield at(
            loc,
            f"stage {stage + 1}'s bottleneck width d·{widths[stage]}/{widths[0]} "
            "rounds to 0; use a larger d or wider later stages",
            d,
        )


def _valid(model: type[BaseModel], data: Any) -> SimpleNamespace | None:
    """The section's fields, each validated on its own (None where invalid).

    Checking fields one by one lets the rules across fields run even when an
    unrelated key of the same section is wrong, so every problem is reported.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        return None
    values: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        key = info.alias or name
        if key not in data:
            values[name] = info.get_default(call_default_factory=True)
            continue
        try:
            values[name] = _adapter(model, name).validate_python(data[key])
        except ValidationError:
            values[name] = None
    return SimpleNamespace(**values)


@functools.cache
def _adapter(model: type[BaseModel], name: str) -> TypeAdapter[Any]:
    info = model.model_fields[name]
    # A field's type is only known at run time; typing it as Any keeps mypy
    # agreeing across pydantic versions whose stubs type TypeAdapter differently.
    annotation: Any = info.annotation
    if info.metadata:
        annotation = Annotated.__class_getitem__((annotation, *info.metadata))  # type: ignore[attr-defined]
    return TypeAdapter(annotation)


def _message(error: ErrorDetails, loc: Loc) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        guess = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"; did you mean '{guess[0]}'?" if guess else f"; known keys: {', '.join(allowed)}"
        return f"unknown key{hint}"
    if kind == "missing":
        return "is required"
    if kind == "string_pattern_mismatch":
        return (
            "must be a safe folder name: letters, digits, '.', '_' or '-', "
            "starting with a letter or digit, at most 64 characters"
        )
    if kind == "too_short":
        return "must not be empty"
    return str(error["msg"]).replace("Input should be", "should be").replace("Value error, ", "")


def _allowed_keys(loc: Loc) -> list[str]:
    """The keys a mapping at `loc` may have, following the Spec's field types."""
    hint: Any = Spec
    for part in loc:
        hint = _field_type(hint, part)
        if hint is None:
            return []
    model = _model_in(hint)
    if model is None:
        return []
    return [f.alias or name for name, f in model.model_fields.items()]


def _field_type(hint: Any, part: str | int) -> Any:
    model = _model_in(hint)
    if model is not None and isinstance(part, str) and part in model.model_fields:
        return model.model_fields[part].annotation
    origin = typing.get_origin(_strip(hint))
    if origin is dict:
        return typing.get_args(_strip(hint))[1]
    return None


def _model_in(hint: Any) -> type[BaseModel] | None:
    hint = _strip(hint)
    if isinstance(hint, type) and issubclass(hint, BaseModel):
        return hint
    if typing.get_origin(hint) in (Union, types.UnionType):
        for arg in typing.get_args(hint):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def _strip(hint: Any) -> Any:
    while typing.get_origin(hint) is Annotated:
        hint = typing.get_args(hint)[0]
    return hint


def _dotted(loc: Iterable[str | int]) -> str:
    parts = [str(p) for p in loc]
    return ".".join(parts) if parts else "(top)"


def _show(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."

