"""The experiment spec: YAML in, a frozen and fully validated `Spec` out.

A bad spec never starts anything. `load_spec` reports every problem it finds, one per
line, as ``FILE:LINE: path.to.key: what is wrong (got VALUE)``, by raising `SpecError`;
the CLI prints those lines and exits with code 2.

The package by concept: `schema` (the frozen models: what a spec is), `problems` (what
is wrong with one, in a person's words: Problem, SpecError, the rules across fields),
`load` (how a file becomes one: bounded YAML, ``--set`` overrides, problems at their
lines). What callers use is re-exported here.
"""

from explorer.spec.load import (
    MAX_DEPTH,
    MAX_SPEC_BYTES,
    MAX_VALUES,
    Parsed,
    load_spec,
    load_spec_source,
    parse_spec,
    parse_yaml,
    read_spec_text,
    spec_source,
)
from explorer.spec.problems import Problem, SpecError
from explorer.spec.schema import (
    FOLDER_DATASETS,
    KNOWN_NUM_CLASSES,
    LATER_DEFAULTS,
    Axes,
    Constraints,
    DataSpec,
    FloatRange,
    ModelSpec,
    Range,
    RegNetDraws,
    ResourcesSpec,
    Sample,
    SampleStages,
    SearchSpec,
    Solve,
    SpaceSpec,
    Spec,
    StageRange,
    Stratify,
    TrainSpec,
    json_schema,
    with_overrides,
    without_later_defaults,
)

__all__ = [
    "FOLDER_DATASETS",
    "KNOWN_NUM_CLASSES",
    "LATER_DEFAULTS",
    "MAX_DEPTH",
    "MAX_SPEC_BYTES",
    "MAX_VALUES",
    "Axes",
    "Constraints",
    "DataSpec",
    "FloatRange",
    "ModelSpec",
    "Parsed",
    "Problem",
    "Range",
    "RegNetDraws",
    "ResourcesSpec",
    "Sample",
    "SampleStages",
    "SearchSpec",
    "Solve",
    "SpaceSpec",
    "Spec",
    "SpecError",
    "StageRange",
    "Stratify",
    "TrainSpec",
    "json_schema",
    "load_spec",
    "load_spec_source",
    "parse_spec",
    "parse_yaml",
    "read_spec_text",
    "spec_source",
    "with_overrides",
    "without_later_defaults",
]
