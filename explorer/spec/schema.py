"""What a spec is: the frozen pydantic models of its sections and of the whole `Spec`.

Integers are strict and every model refuses unknown keys, so a value either means what it
says or is refused. A model holds its own fields' rules; the rules across fields and
sections (a space's stages against the model's, a family's fields, a band to stratify) are
in `problems.py`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Union

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
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from explorer.arch import BlockForm, Template, content_key

if TYPE_CHECKING:
    from typing_extensions import Self  # typing's own from Python 3.11

__all__ = [
    "FOLDER_DATASETS",
    "KNOWN_NUM_CLASSES",
    "LATER_DEFAULTS",
    "REGNET_FIELDS",
    "REGNET_REQUIRED",
    "RESNEXT_FIELDS",
    "Axes",
    "Constraints",
    "DataSpec",
    "FloatRange",
    "ModelSpec",
    "Range",
    "RegNetDraws",
    "ResourcesSpec",
    "Sample",
    "SampleStages",
    "SearchSpec",
    "Solve",
    "SpaceSpec",
    "Spec",
    "StageRange",
    "Stratify",
    "TrainSpec",
    "json_schema",
    "with_overrides",
    "without_later_defaults",
]

# Integers are strict: YAML's `true` is not the integer 1, and "64" is not 64.
_PositiveInt = Annotated[int, Strict(), Field(gt=0)]
_NonNegativeInt = Annotated[int, Strict(), Field(ge=0)]

_SAFE_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"

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
_SEED_MAX = 2**31 - 1


def _seed_the_store_holds(seed: int) -> int:
    if seed > _SEED_MAX:
        raise ValueError(f"{seed} is too large: a seed must be 0 to {_SEED_MAX}, the range the "
                         "results store holds (a 32-bit SQL integer)")
    return seed


_StoredSeed = Annotated[_NonNegativeInt, AfterValidator(_seed_the_store_holds)]

class _FrozenDict(dict[str, Any]):
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


class _Frozen(BaseModel):
    """A spec model: unknown keys refused, never changed once built, and built only by
    validation, so every one obeys its rules."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy, with `update`'s fields (by name) replaced and validated again like the
        original: pydantic's own copy takes an update unchecked, which would let a copy
        break the rules its original was refused for."""
        copy = super().model_copy(deep=deep)
        if not update:
            return copy
        return self.model_validate({**dict(copy), **update})


class Range(_Frozen):
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


_Sizes = Annotated[tuple[_PositiveInt, ...], Field(min_length=1)]


# The fields that give a network's stages in each model family: resnext lists them per
# stage; regnet generates them (RegNet's quantised linear widths). Each family refuses the
# other's.
RESNEXT_FIELDS = ("depths", "widths", "cardinality", "bottleneck_width")
REGNET_FIELDS = ("depth", "w_0", "w_a", "w_m", "group_width", "bottleneck_ratio", "quantum")
# A regnet model needs these; bottleneck_ratio (1: RegNetX) and quantum (8) have defaults.
REGNET_REQUIRED = ("depth", "w_0", "w_a", "w_m", "group_width")
_RegNetMultiplier = Annotated[float, Field(gt=1.0)]


def _omit_when_none(data: Any, keys: Iterable[str]) -> Any:
    """A dump without the keys, added after the first release, that hold None: specs that
    do not use them keep their hashes and recorded text."""
    if isinstance(data, dict):
        for key in keys:
            if data.get(key, 0) is None:
                del data[key]
    return data


class Axes(_Frozen):
    """Fields of the base model to vary; each present one is an axis."""

    cardinality: _axis(_PositiveInt) | None = None  # type: ignore[valid-type]
    bottleneck_width: _axis(_PositiveInt) | None = None  # type: ignore[valid-type]
    stem_width: _axis(_PositiveInt) | None = None  # type: ignore[valid-type]
    depths: _list_axis(_Sizes) | None = None  # type: ignore[valid-type]
    widths: _list_axis(_Sizes) | None = None  # type: ignore[valid-type]
    block: _list_axis(Literal["grouped", "concat", "split"]) | None = None  # type: ignore[valid-type]
    # family: regnet
    depth: _axis(_PositiveInt) | None = None  # type: ignore[valid-type]
    w_0: _axis(_PositiveInt) | None = None  # type: ignore[valid-type]
    w_a: _axis(NonNegativeFloat) | None = None  # type: ignore[valid-type]
    w_m: _axis(_RegNetMultiplier) | None = None  # type: ignore[valid-type]
    group_width: _axis(_PositiveInt) | None = None  # type: ignore[valid-type]
    bottleneck_ratio: _axis(_PositiveInt) | None = None  # type: ignore[valid-type]

    def present(self) -> dict[str, Any]:
        return {k: v for k, v in self if v is not None}

    @model_serializer(mode="wrap")
    def _omit_regnet(self, handler: SerializerFunctionWrapHandler) -> Any:
        return _omit_when_none(handler(self), REGNET_FIELDS)


# regnet's integer fields are solvable too; its continuous w_a and w_m are not (an axis or
# a sampled range varies them).
_SolvableField = Literal["bottleneck_width", "cardinality", "stem_width", "depth", "w_0",
                        "group_width", "bottleneck_ratio"]


class Solve(_Frozen):
    """Choose `field` per candidate so that `preserve` matches the base model."""

    field: _SolvableField = "bottleneck_width"
    preserve: Literal["params", "flops"] = "params"
    tolerance: PositiveFloat = 0.05
    low: _PositiveInt = 1
    high: _PositiveInt = 4096


_StageField = Literal["depths", "widths", "cardinality", "bottleneck_width", "bottleneck_ratio",
                     "group_width"]


class StageRange(_Frozen):
    """Integers low, low + step, ... up to high, drawn uniformly; `log`: log-uniformly."""

    low: _PositiveInt
    high: _PositiveInt
    step: _PositiveInt = 1
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
_StageDraw = Annotated[
    Union[  # noqa: UP007
        Annotated[Annotated[tuple[_PositiveInt, ...], Field(min_length=1)], Tag("list")],
        Annotated[StageRange, Tag("range")],
    ],
    Discriminator(_draw_kind),
]


class SampleStages(_Frozen):
    """What each stage draws; a field left out keeps the base model's per-stage values.

    `bottleneck_ratio` b and `group_width` g are the AnyNet parametrisation: the block's
    inner width is w/b in groups of g channels (C = (w/b)/g, d = g)."""

    depths: _StageDraw | None = None
    widths: _StageDraw | None = None
    cardinality: _StageDraw | None = None
    bottleneck_width: _StageDraw | None = None
    bottleneck_ratio: _StageDraw | None = None
    group_width: _StageDraw | None = None

    def present(self) -> dict[str, Any]:
        return {k: v for k, v in self if v is not None}

    @model_serializer(mode="wrap")
    def _omit_anynet(self, handler: SerializerFunctionWrapHandler) -> Any:
        return _omit_when_none(handler(self), ("bottleneck_ratio", "group_width"))


class FloatRange(_Frozen):
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


_FloatDraw = Annotated[
    Union[  # noqa: UP007
        Annotated[Annotated[tuple[NonNegativeFloat, ...], Field(min_length=1)], Tag("list")],
        Annotated[FloatRange, Tag("range")],
    ],
    Discriminator(_float_draw_kind),
]


class RegNetDraws(_Frozen):
    """A regnet model's fields drawn once per candidate; one left out keeps the base
    model's value. `num_stages: [low, high]` keeps the networks with that many stages."""

    depth: _StageDraw | None = None
    w_0: _StageDraw | None = None
    w_a: _FloatDraw | None = None
    w_m: _FloatDraw | None = None
    group_width: _StageDraw | None = None
    bottleneck_ratio: _StageDraw | None = None
    num_stages: tuple[_PositiveInt, _PositiveInt] | None = None

    def present(self) -> dict[str, Any]:
        return {k: v for k, v in self if v is not None and k != "num_stages"}


class Stratify(_Frozen):
    """Equal counts per equal-width bin of the constraints' band of `by`."""

    by: Literal["flops", "params"]
    bins: _PositiveInt


class Sample(_Frozen):
    """A sampled space (docs/CONVENTIONS.md, "Sampled design spaces"): n distinct drawn
    candidates."""

    n: _PositiveInt
    seed: _NonNegativeInt = 0
    stages: SampleStages = SampleStages()
    shared: tuple[_StageField, ...] = ()
    non_decreasing: tuple[_StageField, ...] = ()
    stratify: Stratify | None = None
    regnet: RegNetDraws | None = None  # family: regnet draws these instead of stages

    @model_serializer(mode="wrap")
    def _omit_no_regnet(self, handler: SerializerFunctionWrapHandler) -> Any:
        return _omit_when_none(handler(self), ("regnet",))


class SpaceSpec(_Frozen):
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


_Band = tuple[NonNegativeFloat | None, NonNegativeFloat | None]


class Constraints(_Frozen):
    """Absolute bands [low, high] (null: unbounded), applied before training."""

    flops: _Band | None = None
    params: _Band | None = None
    acts: _Band | None = None


class ModelSpec(_Frozen):
    """The base model. `family: resnext` lists its stages (depths, widths, one C and d);
    `family: regnet` generates them from RegNet's parameters, on the anynet template with
    a 32-channel stem unless told otherwise."""

    family: Literal["resnext", "regnet"] = "resnext"
    template: Template = "cifar"
    depths: _Sizes = (3, 3, 3)
    stem_width: _PositiveInt = 64
    widths: _Sizes = (256, 512, 1024)
    cardinality: _PositiveInt = 1
    bottleneck_width: _PositiveInt = 64
    block: BlockForm = "grouped"
    # family: regnet (LATER_DEFAULTS: left out of the record while they hold these)
    depth: _PositiveInt | None = None
    w_0: _PositiveInt | None = None
    w_a: NonNegativeFloat | None = None
    w_m: _RegNetMultiplier | None = None
    group_width: _PositiveInt | None = None
    bottleneck_ratio: _PositiveInt = 1
    quantum: _PositiveInt = 8

    @model_validator(mode="before")
    @classmethod
    def _regnet_defaults(cls, data: Any) -> Any:
        # RegNet's own stem and strides, and pycls's 32-channel stem, unless the spec says.
        if isinstance(data, dict) and data.get("family") == "regnet":
            return {"template": "anynet", "stem_width": 32, **data}
        return data


_Dataset = Literal["cifar10", "cifar100", "imagenet", "imagefolder", "digits", "synthetic"]


FOLDER_DATASETS = ("imagenet", "imagefolder")


class DataSpec(_Frozen):
    """Which data, at what size. `pipeline` is how an image folder reaches the trainer:
    decoded whole into memory (`resident`), decoded by loader workers batch by batch
    (`stream`), or `auto`: resident when the decoded folder fits the data module's
    memory budget. CIFAR, digits and synthetic data are always resident."""

    dataset: _Dataset = "digits"
    num_classes: _PositiveInt | None = None
    root: str = "~/.cache/explorer"
    download: bool = True
    resolution: _PositiveInt = 32
    train_subset: _PositiveInt | None = None
    test_subset: _PositiveInt | None = None
    pipeline: Literal["auto", "resident", "stream"] = "auto"

    @field_validator("pipeline")
    @classmethod
    def _stream_reads_folders(cls, pipeline: str, info: ValidationInfo) -> str:
        dataset = info.data.get("dataset")  # absent when dataset itself is invalid
        if pipeline == "stream" and dataset is not None and dataset not in FOLDER_DATASETS:
            raise ValueError(f"stream reads image folders (imagenet, imagefolder); {dataset} "
                             "is loaded whole: use auto or resident")
        return pipeline


class TrainSpec(_Frozen):
    """The training recipe, the one vocabulary of the spec, the trainer and the cost probe.

    `lr` is for batch `REFERENCE_BATCH` and scales linearly with `batch_size`
    (Goyal et al.). `augment` None means the dataset's default (crop+flip for
    natural images, none for digits). Weight decay applies to every
    parameter, batch-norm affine included, as in the paper's code.
    """

    REFERENCE_BATCH: ClassVar[int] = 128

    epochs: _PositiveInt = 30
    batch_size: _PositiveInt = 128
    lr: PositiveFloat = 0.1
    momentum: NonNegativeFloat = 0.9
    nesterov: bool = False
    weight_decay: NonNegativeFloat = 5.0e-4
    schedule: Literal["cosine", "step"] = "cosine"
    lr_milestones: tuple[_PositiveInt, ...] | None = None
    lr_gamma: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.1
    warmup_epochs: _NonNegativeInt = 0
    label_smoothing: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    precision: Literal["fp32", "bf16", "fp16"] = "bf16"
    channels_last: bool = True
    compile: bool = False
    augment: bool | None = None
    seeds: Annotated[tuple[_StoredSeed, ...], Field(min_length=1)] = (0,)

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
        return self.model_copy(update={
            "epochs": epochs, "warmup_epochs": min(self.warmup_epochs, epochs),
            "lr_milestones": milestones,
        })

    @property
    def peak_lr(self) -> float:
        """The learning rate at this batch size, reached at the end of the warm-up."""
        return self.lr * self.batch_size / self.REFERENCE_BATCH


class SearchSpec(_Frozen):
    strategy: Literal["grid", "random", "optuna"] = "grid"
    n_trials: _PositiveInt | None = None
    objectives: Annotated[
        tuple[Literal["test_error", "test_top5_error", "flops", "params", "acts"], ...],
        Field(min_length=1),
    ] = ("test_error",)
    early_stopping: Literal["none", "asha"] = "none"
    seed: _NonNegativeInt = 0


class ResourcesSpec(_Frozen):
    cpus_per_trial: PositiveFloat = 1
    gpus_per_trial: NonNegativeFloat = 0
    max_concurrent: _PositiveInt | None = None
    max_failures: _NonNegativeInt = 1
    address: str | None = None


class Spec(_Frozen):
    name: Annotated[str, Field(pattern=_SAFE_NAME)]
    description: str = ""
    model: ModelSpec = ModelSpec()
    spaces: Annotated[
        dict[Annotated[str, Field(pattern=_SAFE_NAME)], SpaceSpec],
        Field(min_length=1),
        AfterValidator(lambda spaces: _FrozenDict(spaces)),
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

    @model_validator(mode="after")
    def _obeys_the_rules(self) -> Spec:
        # The rules across fields and sections hold for every Spec, not only a loaded one.
        # Imported here: problems.py reads this module's models, so it loads after it.
        from explorer.spec.problems import check_rules

        check_rules(self)
        return self

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
