"""The experiment spec: YAML in, a frozen and fully validated `Spec` out.

A bad spec never starts anything. `load_spec` reports every problem it finds,
one per line, as ``FILE:LINE: path.to.key: what is wrong (got VALUE)``, by
raising `SpecError`; the CLI prints those lines and exits with code 2.

Overrides (the CLI's ``--set train.epochs=2``) are applied to the parsed YAML
before validation and checked exactly like the file; a problem they cause is
located at ``--set KEY.PATH`` instead of a line.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import types
import typing
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Any, ClassVar, Literal, Protocol, Union

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    NonNegativeFloat,
    PlainSerializer,
    PositiveFloat,
    SerializerFunctionWrapHandler,
    Strict,
    Tag,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import ErrorDetails

from explorer.arch import BlockForm, Template, content_key, stage_bottleneck_widths
from explorer.errors import ExplorerError

# Integers are strict: YAML's `true` is not the integer 1, and "64" is not 64.
PositiveInt = Annotated[int, Strict(), Field(gt=0)]
NonNegativeInt = Annotated[int, Strict(), Field(ge=0)]

SAFE_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"

# Classes of the datasets whose size is known without reading them, so a space
# can be enumerated (its head's size counted) before any data exists.
KNOWN_NUM_CLASSES = {
    "cifar10": 10,
    "cifar100": 100,
    "imagenet": 1000,
    "digits": 10,
    "synthetic": 10,
}


# The largest train seed: the results store keeps a trial's seed in a SQL INTEGER column,
# 32-bit signed on PostgreSQL (explorer/store/schema.py), so a larger one is refused here,
# at its line in the spec, before anything is stored.
SEED_MAX = 2**31 - 1


def _seed_the_store_holds(seed: int) -> int:
    if seed > SEED_MAX:
        raise ValueError(f"{seed} is too large: a seed must be 0 to {SEED_MAX}, the range the "
                         "results store holds (a 32-bit SQL integer)")
    return seed


StoredSeed = Annotated[NonNegativeInt, AfterValidator(_seed_the_store_holds)]

class FrozenDict(dict[str, Any]):
    """A dict that refuses changes and can be hashed, so a frozen Spec stays frozen."""

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("a validated spec cannot be changed")

    __setitem__ = __delitem__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse  # type: ignore[assignment]

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(self.items()))

    def __reduce__(self) -> tuple[Any, ...]:
        # pickle and deepcopy would refill the dict through __setitem__.
        return (type(self), (dict(self),))


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Range(Frozen):
    """A range to sample an axis from (random and optuna search)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    low: PositiveFloat
    high: PositiveFloat
    log: bool = False
    integer: bool = Field(default=True, alias="int")

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.low > self.high:
            raise ValueError(f"low {self.low:g} is above high {self.high:g}")
        return self


def _axis_kind(value: Any) -> str:
    # A dict when validating YAML, a Range when serialising a parsed spec.
    return "range" if isinstance(value, dict | Range) else "list"


def _axis(item: Any) -> Any:
    """An axis: a non-empty list of values (a grid axis) or a Range to sample."""
    values = Annotated[tuple[item, ...], Field(min_length=1)]
    return Annotated[
        Union[Annotated[values, Tag("list")], Annotated[Range, Tag("range")]],  # noqa: UP007
        Discriminator(_axis_kind),
    ]


def _list_axis(item: Any) -> Any:
    return Annotated[tuple[item, ...], Field(min_length=1)]


Sizes = Annotated[tuple[PositiveInt, ...], Field(min_length=1)]

# The tags pydantic puts into an error's location for the axis union.
_UNION_TAGS = {"list", "range"}

# The fields that give a network's stages in each model family: resnext lists them per
# stage; regnet generates them (RegNet's quantised linear widths). Each family refuses the
# other's.
RESNEXT_FIELDS = ("depths", "widths", "cardinality", "bottleneck_width")
REGNET_FIELDS = ("depth", "w_0", "w_a", "w_m", "group_width", "bottleneck_ratio", "quantum")
# A regnet model needs these; bottleneck_ratio (1: RegNetX) and quantum (8) have defaults.
REGNET_REQUIRED = ("depth", "w_0", "w_a", "w_m", "group_width")
RegNetMultiplier = Annotated[float, Field(gt=1.0)]


def _omit_when_none(data: Any, keys: Iterable[str]) -> Any:
    """A dump without the keys, added after the first release, that hold None: specs that
    do not use them keep their hashes and recorded text."""
    if isinstance(data, dict):
        for key in keys:
            if data.get(key, 0) is None:
                del data[key]
    return data


class Axes(Frozen):
    """Fields of the base model to vary; each present one is an axis."""

    cardinality: _axis(PositiveInt) | None = None  # type: ignore[valid-type]
    bottleneck_width: _axis(PositiveInt) | None = None  # type: ignore[valid-type]
    stem_width: _axis(PositiveInt) | None = None  # type: ignore[valid-type]
    depths: _list_axis(Sizes) | None = None  # type: ignore[valid-type]
    widths: _list_axis(Sizes) | None = None  # type: ignore[valid-type]
    block: _list_axis(Literal["grouped", "concat", "split"]) | None = None  # type: ignore[valid-type]
    # family: regnet
    depth: _axis(PositiveInt) | None = None  # type: ignore[valid-type]
    w_0: _axis(PositiveInt) | None = None  # type: ignore[valid-type]
    w_a: _axis(NonNegativeFloat) | None = None  # type: ignore[valid-type]
    w_m: _axis(RegNetMultiplier) | None = None  # type: ignore[valid-type]
    group_width: _axis(PositiveInt) | None = None  # type: ignore[valid-type]
    bottleneck_ratio: _axis(PositiveInt) | None = None  # type: ignore[valid-type]

    def present(self) -> dict[str, Any]:
        return {k: v for k, v in self if v is not None}

    @model_serializer(mode="wrap")
    def _omit_regnet(self, handler: SerializerFunctionWrapHandler) -> Any:
        return _omit_when_none(handler(self), REGNET_FIELDS)


# regnet's integer fields are solvable too; its continuous w_a and w_m are not (an axis or
# a sampled range varies them).
SolvableField = Literal["bottleneck_width", "cardinality", "stem_width", "depth", "w_0",
                        "group_width", "bottleneck_ratio"]


class Solve(Frozen):
    """Choose `field` per candidate so that `preserve` matches the base model."""

    field: SolvableField = "bottleneck_width"
    preserve: Literal["params", "flops"] = "params"
    tolerance: PositiveFloat = 0.05
    low: PositiveInt = 1
    high: PositiveInt = 4096


StageField = Literal["depths", "widths", "cardinality", "bottleneck_width", "bottleneck_ratio",
                     "group_width"]


class StageRange(Frozen):
    """Integers low, low + step, ... up to high, drawn uniformly; `log`: log-uniformly."""

    low: PositiveInt
    high: PositiveInt
    step: PositiveInt = 1
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> StageRange:
        if self.low > self.high:
            raise ValueError(f"low {self.low} is above high {self.high}")
        if self.log and self.step != 1:
            raise ValueError("step and log: true cannot be combined; drop one")
        return self


def _draw_kind(value: Any) -> str:
    return "range" if isinstance(value, dict | StageRange) else "list"


# A per-stage draw: a non-empty list of values to pick from uniformly, or a StageRange.
StageDraw = Annotated[
    Union[  # noqa: UP007
        Annotated[Annotated[tuple[PositiveInt, ...], Field(min_length=1)], Tag("list")],
        Annotated[StageRange, Tag("range")],
    ],
    Discriminator(_draw_kind),
]


class SampleStages(Frozen):
    """What each stage draws; a field left out keeps the base model's per-stage values.

    `bottleneck_ratio` b and `group_width` g are the AnyNet parametrisation: the block's
    inner width is w/b in groups of g channels (C = (w/b)/g, d = g)."""

    depths: StageDraw | None = None
    widths: StageDraw | None = None
    cardinality: StageDraw | None = None
    bottleneck_width: StageDraw | None = None
    bottleneck_ratio: StageDraw | None = None
    group_width: StageDraw | None = None

    def present(self) -> dict[str, Any]:
        return {k: v for k, v in self if v is not None}

    @model_serializer(mode="wrap")
    def _omit_anynet(self, handler: SerializerFunctionWrapHandler) -> Any:
        return _omit_when_none(handler(self), ("bottleneck_ratio", "group_width"))


class FloatRange(Frozen):
    """Reals drawn uniformly on [low, high] (`log`: log-uniformly), rounded to a multiple of
    `step` when given."""

    low: NonNegativeFloat
    high: PositiveFloat
    log: bool = False
    step: PositiveFloat | None = None

    @model_validator(mode="after")
    def _ordered(self) -> FloatRange:
        if self.low > self.high:
            raise ValueError(f"low {self.low:g} is above high {self.high:g}")
        if self.log and self.low == 0:
            raise ValueError("a log-uniform range needs low above 0")
        return self


def _float_draw_kind(value: Any) -> str:
    return "range" if isinstance(value, dict | FloatRange) else "list"


FloatDraw = Annotated[
    Union[  # noqa: UP007
        Annotated[Annotated[tuple[NonNegativeFloat, ...], Field(min_length=1)], Tag("list")],
        Annotated[FloatRange, Tag("range")],
    ],
    Discriminator(_float_draw_kind),
]


class RegNetDraws(Frozen):
    """A regnet model's fields drawn once per candidate; one left out keeps the base
    model's value. `num_stages: [low, high]` keeps the networks with that many stages."""

    depth: StageDraw | None = None
    w_0: StageDraw | None = None
    w_a: FloatDraw | None = None
    w_m: FloatDraw | None = None
    group_width: StageDraw | None = None
    bottleneck_ratio: StageDraw | None = None
    num_stages: tuple[PositiveInt, PositiveInt] | None = None

    def present(self) -> dict[str, Any]:
        return {k: v for k, v in self if v is not None and k != "num_stages"}


class Stratify(Frozen):
    """Equal counts per equal-width bin of the constraints' band of `by`."""

    by: Literal["flops", "params"]
    bins: PositiveInt


class Sample(Frozen):
    """A sampled space (docs/CONVENTIONS.md, "Sampled design spaces"): n distinct drawn
    candidates."""

    n: PositiveInt
    seed: NonNegativeInt = 0
    stages: SampleStages = SampleStages()
    shared: tuple[StageField, ...] = ()
    non_decreasing: tuple[StageField, ...] = ()
    stratify: Stratify | None = None
    regnet: RegNetDraws | None = None  # family: regnet draws these instead of stages

    @model_serializer(mode="wrap")
    def _omit_no_regnet(self, handler: SerializerFunctionWrapHandler) -> Any:
        return _omit_when_none(handler(self), ("regnet",))


class SpaceSpec(Frozen):
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra={
        "not": {"anyOf": [{"required": ["sample", "axes"]}, {"required": ["sample", "solve"]}]},
    })

    axes: Axes = Axes()
    solve: Solve | None = None
    sample: Sample | None = None

    @model_serializer(mode="wrap")
    def _omit_no_sample(self, handler: SerializerFunctionWrapHandler) -> Any:
        # A space that samples nothing dumps as before sampling existed, so the hashes
        # and recorded specs of existing experiments stay theirs.
        data = handler(self)
        if self.sample is None and isinstance(data, dict):
            data.pop("sample", None)
        return data


Band = tuple[NonNegativeFloat | None, NonNegativeFloat | None]


class Constraints(Frozen):
    """Absolute bands [low, high] (null: unbounded), applied before training."""

    flops: Band | None = None
    params: Band | None = None
    acts: Band | None = None


class ModelSpec(Frozen):
    """The base model. `family: resnext` lists its stages (depths, widths, one C and d);
    `family: regnet` generates them from RegNet's parameters, on the anynet template with
    a 32-channel stem unless told otherwise."""

    family: Literal["resnext", "regnet"] = "resnext"
    template: Template = "cifar"
    depths: Sizes = (3, 3, 3)
    stem_width: PositiveInt = 64
    widths: Sizes = (256, 512, 1024)
    cardinality: PositiveInt = 1
    bottleneck_width: PositiveInt = 64
    block: BlockForm = "grouped"
    # family: regnet (LATER_DEFAULTS: left out of the record while they hold these)
    depth: PositiveInt | None = None
    w_0: PositiveInt | None = None
    w_a: NonNegativeFloat | None = None
    w_m: RegNetMultiplier | None = None
    group_width: PositiveInt | None = None
    bottleneck_ratio: PositiveInt = 1
    quantum: PositiveInt = 8

    @model_validator(mode="before")
    @classmethod
    def _regnet_defaults(cls, data: Any) -> Any:
        # RegNet's own stem and strides, and pycls's 32-channel stem, unless the spec says.
        if isinstance(data, dict) and data.get("family") == "regnet":
            return {"template": "anynet", "stem_width": 32, **data}
        return data


Dataset = Literal["cifar10", "cifar100", "imagenet", "imagefolder", "digits", "synthetic"]


FOLDER_DATASETS = ("imagenet", "imagefolder")


class DataSpec(Frozen):
    """Which data, at what size. `pipeline` is how an image folder reaches the trainer:
    decoded whole into memory (`resident`), decoded by loader workers batch by batch
    (`stream`), or `auto`: resident when the decoded folder fits the data module's
    memory budget. CIFAR, digits and synthetic data are always resident."""

    dataset: Dataset = "digits"
    num_classes: PositiveInt | None = None
    root: str = "~/.cache/explorer"
    download: bool = True
    resolution: PositiveInt = 32
    train_subset: PositiveInt | None = None
    test_subset: PositiveInt | None = None
    pipeline: Literal["auto", "resident", "stream"] = "auto"

    @field_validator("pipeline")
    @classmethod
    def _stream_reads_folders(cls, pipeline: str, info: ValidationInfo) -> str:
        dataset = info.data.get("dataset")  # absent when dataset itself is invalid
        if pipeline == "stream" and dataset is not None and dataset not in FOLDER_DATASETS:
            raise ValueError(f"stream reads image folders (imagenet, imagefolder); {dataset} "
                             "is loaded whole: use auto or resident")
        return pipeline


class TrainSpec(Frozen):
    """The training recipe, the one vocabulary of the spec, the trainer and the cost probe.

    `lr` is for batch `REFERENCE_BATCH` and scales linearly with `batch_size`
    (Goyal et al.). `augment` None means the dataset's default (crop+flip for
    natural images, none for digits). Weight decay applies to every
    parameter, batch-norm affine included, as in the paper's code.
    """

    REFERENCE_BATCH: ClassVar[int] = 128

    epochs: PositiveInt = 30
    batch_size: PositiveInt = 128
    lr: PositiveFloat = 0.1
    momentum: NonNegativeFloat = 0.9
    nesterov: bool = False
    weight_decay: NonNegativeFloat = 5.0e-4
    schedule: Literal["cosine", "step"] = "cosine"
    lr_milestones: tuple[PositiveInt, ...] | None = None
    lr_gamma: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.1
    warmup_epochs: NonNegativeInt = 0
    label_smoothing: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    precision: Literal["fp32", "bf16", "fp16"] = "bf16"
    channels_last: bool = True
    compile: bool = False
    augment: bool | None = None
    seeds: Annotated[tuple[StoredSeed, ...], Field(min_length=1)] = (0,)

    @field_validator("warmup_epochs")
    @classmethod
    def _warmup_within_epochs(cls, warmup: int, info: ValidationInfo) -> int:
        # A field check, not a model one, so the problem is reported at warmup_epochs' line.
        epochs = info.data.get("epochs")  # absent when epochs itself is invalid
        if epochs is not None and warmup > epochs:
            raise ValueError(f"must be at most epochs ({epochs}): the warm-up is part of them")
        return warmup

    @field_validator("lr_milestones")
    @classmethod
    def _milestones_in_epochs(
        cls, milestones: tuple[int, ...] | None, info: ValidationInfo
    ) -> tuple[int, ...] | None:
        if milestones is None:
            return None
        if info.data.get("schedule") == "cosine":
            raise ValueError("apply to schedule: step only; set schedule: step or remove them")
        if list(milestones) != sorted(set(milestones)):
            raise ValueError("must be strictly increasing epochs")
        epochs = info.data.get("epochs")
        if epochs is not None and milestones and milestones[-1] >= epochs:
            raise ValueError(f"must be epochs before the last ({epochs}): a drop at or after "
                             "it never applies")
        return milestones

    @property
    def milestones(self) -> tuple[int, ...]:
        """Epochs at which the step schedule multiplies the rate by `lr_gamma`: the
        spec's, or 50% and 75% of the epochs (the paper's CIFAR 150 and 225 of 300)."""
        if self.lr_milestones is not None:
            return self.lr_milestones
        return tuple(m for m in (self.epochs // 2, (3 * self.epochs) // 4) if m > 0)

    def with_epochs(self, epochs: int) -> TrainSpec:
        """This recipe run for `epochs` epochs instead (`explorer train --epochs`): the
        warm-up cut to fit, and the step schedule's drops a shorter run never reaches left
        out (its default milestones follow the epochs by themselves). Validated again like
        the spec's own block, so every caller gets the same recipe, or the same error."""
        milestones = self.lr_milestones and tuple(m for m in self.lr_milestones if m < epochs)
        return TrainSpec.model_validate({
            **self.model_dump(), "epochs": epochs,
            "warmup_epochs": min(self.warmup_epochs, epochs), "lr_milestones": milestones,
        })

    @property
    def peak_lr(self) -> float:
        """The learning rate at this batch size, reached at the end of the warm-up."""
        return self.lr * self.batch_size / self.REFERENCE_BATCH


class SearchSpec(Frozen):
    strategy: Literal["grid", "random", "optuna"] = "grid"
    n_trials: PositiveInt | None = None
    objectives: Annotated[
        tuple[Literal["test_error", "test_top5_error", "flops", "params", "acts"], ...],
        Field(min_length=1),
    ] = ("test_error",)
    early_stopping: Literal["none", "asha"] = "none"
    seed: NonNegativeInt = 0


class ResourcesSpec(Frozen):
    cpus_per_trial: PositiveFloat = 1
    gpus_per_trial: NonNegativeFloat = 0
    max_concurrent: PositiveInt | None = None
    max_failures: NonNegativeInt = 1
    address: str | None = None


class Spec(Frozen):
    name: Annotated[str, Field(pattern=SAFE_NAME)]
    description: str = ""
    model: ModelSpec = ModelSpec()
    spaces: Annotated[
        dict[Annotated[str, Field(pattern=SAFE_NAME)], SpaceSpec],
        Field(min_length=1),
        AfterValidator(lambda spaces: FrozenDict(spaces)),
        PlainSerializer(dict),
    ]
    constraints: Constraints = Constraints()
    data: DataSpec = DataSpec()
    train: TrainSpec = TrainSpec()
    search: SearchSpec = SearchSpec()
    resources: ResourcesSpec = ResourcesSpec()

    @property
    def num_classes(self) -> int:
        if self.data.num_classes is not None:
            return self.data.num_classes
        return KNOWN_NUM_CLASSES[self.data.dataset]

    @property
    def hash(self) -> str:
        """Content hash of the validated spec: equal hashes, equal experiments."""
        return content_key(self.record(by_alias=True))

    def record(self, *, by_alias: bool = False) -> dict[str, Any]:
        """The spec as JSON values, keys added since the first release left out while they
        hold their defaults (`LATER_DEFAULTS`): what the store compares and hashes."""
        dumped = self.model_dump(mode="json", by_alias=by_alias)
        return {k: without_later_defaults(k, v) if k in LATER_DEFAULTS else v
                for k, v in dumped.items()}


# Keys added to the spec after experiments and trials were first stored. Left out of the
# spec's record and of trial keys while they hold their default, so what a store already
# holds keeps its hash and its keys.
LATER_DEFAULTS: dict[str, dict[str, object]] = {
    "model": {"depth": None, "w_0": None, "w_a": None, "w_m": None, "group_width": None,
              "bottleneck_ratio": 1, "quantum": 8},
    "data": {"pipeline": "auto"},
    "train": {"lr_milestones": None, "lr_gamma": 0.1},
}


def without_later_defaults(section: str, record: dict[str, Any]) -> dict[str, Any]:
    later = LATER_DEFAULTS[section]
    return {k: v for k, v in record.items() if k not in later or later[k] != v}


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    path: str
    message: str
    value: str | None = None
    origin: str | None = None  # where, when not a line of the file: "--set KEY.PATH"

    def __str__(self) -> str:
        got = f" (got {self.value})" if self.value is not None else ""
        where = self.origin or f"{self.file}:{self.line}"
        return f"{where}: {self.path}: {self.message}{got}"


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


@dataclass(frozen=True)
class Parsed:
    """YAML data with the line of every key and item (1-based)."""

    data: Any
    lines: dict[Loc, int]
    duplicates: list[tuple[Loc, int]]
    origins: dict[Loc, str] = dataclasses.field(default_factory=dict)  # keys --set made
    values: int = 0  # the values it expands to (aliases counted in full), at most the budget


# Bounds on what a spec may be, so a hostile file is refused in milliseconds, not after
# gigabytes: a spec is a few kB holding a few hundred values, nested about six levels deep
# (spaces.NAME.axes.depths.I.J). Pure-Python YAML composes ~20,000 nodes a second, so the
# value bound also keeps a written-out file under half a second.
MAX_SPEC_BYTES = 256 * 1024
MAX_VALUES = 10_000
MAX_DEPTH = 32


class _Refused(Exception):
    """A spec refused while it is read (too large, too deep, an alias cycle): one problem."""

    def __init__(self, line: int, message: str, path: str = "(yaml)",
                 value: str | None = None) -> None:
        super().__init__(message)
        self.line, self.message, self.path, self.value = line, message, path, value


def _too_deep(line: int) -> _Refused:
    return _Refused(line, f"the spec nests more than {MAX_DEPTH} levels deep")


class _BoundedLoader(yaml.SafeLoader):
    """A SafeLoader that counts the values its document expands to while composing it.

    An alias is a reference to its anchor's node, so composing stays linear in the text,
    but a walk visits the anchored node once per alias: nine levels of ten aliases are
    10**9 values (the "billion laughs"). Counting each node once and each alias as the
    whole size of its anchor gives the expanded size exactly, before anything expands.
    """

    def __init__(self, stream: str, budget: int = MAX_VALUES) -> None:
        super().__init__(stream)
        self.budget = budget  # what is left of MAX_VALUES (a --set value: after the file's)
        self.values = 0
        self.aliased = False
        self.depth = 0
        self.sizes: dict[int, int] = {}  # id(anchored node) -> its expanded size, once composed

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()
        line = event.start_mark.line + 1
        if isinstance(event, yaml.AliasEvent):
            node = super().compose_node(parent, index)
            size = self.sizes.get(id(node))
            if size is None:  # its anchor is still being composed: the alias is inside it
                raise _Refused(line, f"the alias *{event.anchor} is inside its own anchor, so "
                                     "it never ends; write the value out")
            self.aliased = True
            self._count(size, line)
            return node
        self.depth += 1
        if self.depth > MAX_DEPTH:  # compose recurses; refuse before Python's stack runs out
            raise _too_deep(line)
        start = self._count(1, line)
        node = super().compose_node(parent, index)
        self.depth -= 1
        if event.anchor is not None:
            self.sizes[id(node)] = self.values - start
        return node

    def _count(self, values: int, line: int) -> int:
        """Add `values` to the expanded size; the size before them."""
        before = self.values
        self.values += values
        if self.values > self.budget:
            if self.aliased:
                raise _Refused(line, f"the spec expands to more than {MAX_VALUES:,} values "
                                     "(YAML aliases); write it out or use fewer aliases")
            raise _Refused(line, f"the spec holds more than {MAX_VALUES:,} values; "
                                 "a spec is a few kB")
        return before


def parse_yaml(text: str, budget: int = MAX_VALUES) -> Parsed:
    """Parse YAML keeping lines, and noting duplicate keys (yaml.safe_load keeps the last).

    Raises _Refused for a document too large or deep to be a spec (see _BoundedLoader), so
    the walk below visits at most `budget` nodes.
    """
    loader = _BoundedLoader(text, budget)  # what yaml.compose does, with the budget given
    try:
        root = loader.get_single_node()
    finally:
        loader.dispose()
    lines: dict[Loc, int] = {(): 1}
    duplicates: list[tuple[Loc, int]] = []
    if root is None:
        return Parsed(None, lines, duplicates)
    constructor = yaml.SafeLoader("")

    def scalar(node: yaml.Node, loc: Loc) -> Any:
        try:
            return constructor.construct_object(node, deep=True)
        except ValueError as err:  # a date like 2001-02-30, an int past Python's 4300 digits
            reason = str(err).split(";")[0]
            raise _Refused(node.start_mark.line + 1, f"YAML cannot read this value: {reason}",
                           _dotted(loc), _show(node.value)) from None

    def build(node: yaml.Node, loc: Loc) -> Any:
        line = node.start_mark.line + 1
        if len(loc) > MAX_DEPTH:  # deeper than composed: aliases nested in aliases
            raise _too_deep(line)
        lines.setdefault(loc, line)
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):  # unhashable, and maybe huge
                    raise _Refused(key_node.start_mark.line + 1,
                                   "a key is a name or a number, not a list or mapping",
                                   _dotted(loc))
                key = scalar(key_node, loc)
                child = (*loc, key if isinstance(key, str | int) else str(key))
                if key in out:
                    duplicates.append((child, key_node.start_mark.line + 1))
                    continue
                lines[child] = key_node.start_mark.line + 1
                out[key] = build(value_node, child)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [build(item, (*loc, i)) for i, item in enumerate(node.value)]
        return scalar(node, loc)

    return Parsed(build(root, ()), lines, duplicates, values=loader.values)


def load_spec(path: str | Path, overrides: Sequence[str] = ()) -> Spec:
    """Read and validate a spec file, with `overrides` (``KEY.PATH=VALUE``) applied; raises
    SpecError listing every problem."""
    return load_spec_source(path, overrides)[0]


def load_spec_source(path: str | Path, overrides: Sequence[str] = ()) -> tuple[Spec, str]:
    """The validated spec and the text an experiment records: the file's own, or with
    overrides the YAML they produce (see `spec_source`)."""
    text = read_spec_text(path)
    return parse_spec(text, str(path), overrides), spec_source(text, str(path), overrides)


def read_spec_text(path: str | Path) -> str:
    """A spec file's text, bounded in size; raises SpecError when it cannot be read."""
    path = Path(path)
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_SPEC_BYTES + 1)  # no further: the file may be huge, or endless
        if len(raw) > MAX_SPEC_BYTES:
            raise SpecError([Problem(str(path), 0, "(file)", f"the spec is larger than "
                                     f"{MAX_SPEC_BYTES // 1024} kB; a spec is a few kB")])
        text = raw.decode("utf-8")  # YAML reads \r\n and \r as line breaks, as read_text did
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise SpecError(
            [Problem(str(path), 0, "(file)", f"cannot read the spec: {reason}")]
        ) from None
    return text


def parse_spec(text: str, filename: str = "<spec>", overrides: Sequence[str] = ()) -> Spec:
    """Validate spec text with `overrides` applied; `filename` names it in the problems."""
    parsed, problems = _parse_overridden(text, filename, overrides)
    problems.extend(_check(parsed, filename))
    if problems:
        raise SpecError(problems)
    return Spec.model_validate(parsed.data)


def spec_source(text: str, filename: str, overrides: Sequence[str]) -> str:
    """The spec text an experiment records (its hash follows the validated spec either way).

    Without overrides, the file's text as it is. With them, the YAML they produce, under a
    header naming the file and each ``--set``: a spec that reproduces the run on its own
    (the file's comments are not carried over)."""
    if not overrides:
        return text
    parsed, problems = _parse_overridden(text, filename, overrides)
    if problems:
        raise SpecError(problems)
    data = parsed.data
    header = f"# {filename} with\n" + "".join(f"#   --set {item}\n" for item in overrides)
    return header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True,
                                   default_flow_style=None)


def _parse_overridden(text: str, filename: str,
                      overrides: Sequence[str]) -> tuple[Parsed, list[Problem]]:
    """The parsed file with every override applied that can be, and the problems of those
    that cannot (validation then reports the rest)."""
    parsed = _parse_text(text, filename)
    if not overrides:
        return parsed, []
    if parsed.data is None:
        parsed = Parsed({}, parsed.lines, parsed.duplicates, values=parsed.values)
    if not isinstance(parsed.data, dict):
        return parsed, []  # reported by _check as not a mapping
    problems: list[Problem] = []
    values = parsed.values
    for item in overrides:
        # The file and every --set value share the file's bounds (MAX_VALUES), so an
        # override cannot smuggle in what a file would be refused for.
        outcome = _apply_override(parsed, item, filename, MAX_VALUES - values)
        if isinstance(outcome, Problem):
            problems.append(outcome)
        else:
            values += outcome
    return dataclasses.replace(parsed, values=values), problems


def _apply_override(parsed: Parsed, item: str, filename: str, budget: int) -> Problem | int:
    """Set one ``KEY.PATH=VALUE`` (the value read as YAML: ``2``, ``[0, 1]``, ``null``, within
    `budget` values) in the parsed data, creating missing mappings on the way; the values it
    added, or a problem if it cannot be set."""
    key, sep, text = item.partition("=")
    parts = key.strip().split(".")
    origin = f"--set {key.strip()}"
    if not sep or not all(parts):
        return Problem(filename, 0, key.strip() or "(none)",
                       "expected KEY.PATH=VALUE, e.g. --set train.epochs=2", repr(item), origin)
    if len(text.encode("utf-8", "surrogatepass")) > MAX_SPEC_BYTES:
        return Problem(filename, 0, key, f"the value is larger than {MAX_SPEC_BYTES // 1024} kB; "
                       "a spec is a few kB", None, origin)
    try:
        read = parse_yaml(text, budget)
    except _Refused as err:
        return Problem(filename, 0, key, err.message, err.value, origin)
    except yaml.YAMLError as err:
        reason = getattr(err, "problem", None) or "invalid YAML"
        return Problem(filename, 0, key, f"the value is not YAML: {reason}", _show(text), origin)
    if read.duplicates:
        inside, _ = read.duplicates[0]
        return Problem(filename, 0, _dotted((*parts, *inside)), "duplicate key; each key may "
                       "appear once", None, origin)
    value = read.data
    node: Any = parsed.data
    loc: list[str | int] = []
    for depth, part in enumerate(parts):
        index: str | int = part
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                return Problem(filename, 0, _dotted(loc), f"is a list of {len(node)}; "
                               f"index it with 0 to {len(node) - 1}", part, origin)
            index = int(part)
        elif not isinstance(node, dict):
            return Problem(filename, 0, _dotted(loc), "is not a mapping, so it has no key "
                           f"{part!r}", _show(node), origin)
        loc.append(index)
        if depth == len(parts) - 1:
            node[index] = value
        elif isinstance(node, dict) and node.get(index) is None:
            node[index] = {}  # a section the file leaves out (or null)
            parsed.origins[tuple(loc)] = origin
        node = node[index]
    parsed.origins[tuple(loc)] = origin
    return read.values


def _parse_text(text: str, filename: str) -> Parsed:
    try:
        parsed = parse_yaml(text)
    except _Refused as err:
        raise SpecError([Problem(filename, err.line, err.path, err.message, err.value)]) from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark else 0
        reason = err.problem or "invalid YAML"
        raise SpecError(
            [Problem(filename, line, "(yaml)", f"YAML syntax error: {reason}")]
        ) from None
    except yaml.YAMLError as err:
        raise SpecError([Problem(filename, 0, "(yaml)", f"YAML syntax error: {err}")]) from None
    return parsed


def _check(parsed: Parsed, filename: str) -> Iterator[Problem]:
    def at(
        loc: Loc, message: str, value: Any = None, show_value: bool = True, line_loc: Loc = ()
    ) -> Problem:
        return Problem(
            filename,
            _line_of(parsed.lines, line_loc or loc),
            _dotted(loc),
            message,
            _show(value) if show_value else None,
            _origin_of(parsed.origins, line_loc or loc),
        )

    for loc, line in parsed.duplicates:
        yield Problem(filename, line, _dotted(loc), "duplicate key; each key may appear once")
    data = parsed.data
    if not isinstance(data, dict):
        yield at((), "a spec is a YAML mapping of keys (name, model, spaces, ...)", data)
        return
    try:
        Spec.model_validate(data)
    except ValidationError as err:
        errors = [(_clean_loc(e["loc"]), e) for e in err.errors()]
        for loc, e in errors:
            if e["type"] == "too_short" and any(
                other[: len(loc)] == loc and len(other) > len(loc) for other, _ in errors
            ):
                continue  # a list whose only item is invalid is not also "empty"
            key_loc = tuple(x for x in e["loc"] if x not in _UNION_TAGS and x != "[key]")
            yield at(loc, _message(e, loc), e.get("input"), e["type"] != "missing", key_loc)
    yield from _check_semantics(data, at)


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
            yield from _check_space(str(name), axes, solve if raw.get("solve") else None, model, at)
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


def _origin_of(origins: dict[Loc, str], loc: Loc) -> str | None:
    """The override that set the key at `loc` or one of its parents, if one did."""
    for end in range(len(loc), 0, -1):
        if loc[:end] in origins:
            return origins[loc[:end]]
    return None


def _line_of(lines: dict[Loc, int], loc: Loc) -> int:
    """The line of the key at `loc`, or of its nearest parent that exists."""
    while loc not in lines:
        loc = loc[:-1]
    return lines[loc]


def _dotted(loc: Iterable[str | int]) -> str:
    parts = [str(p) for p in loc]
    return ".".join(parts) if parts else "(top)"


def _show(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def json_schema() -> dict[str, Any]:
    """JSON Schema of the spec, for editor completion and validation."""
    schema = Spec.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "explorer spec"
    return schema


def with_overrides(spec: Spec, **sections: dict[str, Any]) -> Spec:
    """A copy of `spec` with some fields of its sections replaced, revalidated."""
    data = spec.model_dump(by_alias=True)
    for section, values in sections.items():
        data[section] = {**data[section], **values}
    return Spec.model_validate(data)
