"""`explorer import`: a population of networks trained elsewhere, brought into the store.

Four layouts are read (docs/IMPORT.md describes each field): NDS's published
sweep files, pycls's collected sweep (sweep.json), an Optuna study and a CSV
file. Each model becomes an `Arch` (explorer/arch.py), its complexity is
recounted by explorer's own formula (explorer/complexity.py) and compared with
the figures the file gives; the store keeps explorer's figures. The models
land in one read-only experiment: its recorded spec says where it came from
(``imported``), and `explorer run` refuses that name.

Reads files and writes the store through the Writer; knows nothing of the sweep.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import statistics
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from explorer.arch import Arch, Stage, Template, content_key, stage_strides
from explorer.complexity import Complexity, count
from explorer.errors import ExplorerError
from explorer.space import Candidate
from explorer.store import ExperimentRecord, SpecChanged, Writer

__all__ = [
    "BOTTLENECK",
    "Counted",
    "ImportProblem",
    "ImportSummary",
    "Mismatch",
    "Network",
    "Population",
    "Skipped",
    "Source",
    "build_arch",
    "count_all",
    "is_imported",
    "mismatches",
    "read_csv",
    "read_population",
    "trial_key",
    "write_population",
]

_FORMATS = ("nds", "pycls", "optuna", "csv")
# What a model was trained on when the file does not say: CIFAR-10 at 32 px for the
# CIFAR stem, ImageNet at 224 px for the ImageNet stem (NDS's and pycls's defaults).
_TEMPLATE_DATA: dict[str, tuple[int, int]] = {"cifar": (32, 10), "imagenet": (224, 1000)}
# NDS's and pycls's stem names for the two stems explorer builds.
_STEMS: dict[str, Template] = {"res_stem_cifar": "cifar", "res_stem_in": "imagenet"}
BOTTLENECK = "res_bottleneck_block"
_DEFAULT_TOLERANCE_PCT = 1.0
# Rows written per Writer call: a few thousand keep each transaction short for readers.
_WRITE_BATCH = 5000


class ImportProblem(ExplorerError):
    """A file or study that cannot be imported as asked; one line for people (exit 2)."""


@dataclass(frozen=True)
class Network:
    """One model as a file describes it, in explorer's terms (per stage)."""

    source: str                 # the file's id for it: job id, trial number, row number
    space: str
    template: Template
    stem_width: int
    depths: tuple[int, ...]
    widths: tuple[int, ...]
    inner_widths: tuple[int, ...]   # the grouped 3x3's width: C·d
    groups: tuple[int, ...]         # C
    strides: tuple[int, ...] | None
    resolution: int
    num_classes: int
    params: int | None              # the file's own figures, checked against explorer's
    flops: int | None
    test_errors: tuple[float, ...] = ()   # per epoch, top-1 error in percent
    train_errors: tuple[float, ...] = ()
    train_losses: tuple[float, ...] = ()
    final_error: float | None = None      # when no per-epoch errors are given
    seed: int = 0
    origin: str = ""                      # its file's sha256 (what its trial key names)


@dataclass
class Skipped:
    """Models left out, by reason: how many, and the first one's id."""

    reasons: dict[str, tuple[int, str]] = field(default_factory=dict)

    def add(self, reason: str, source: str) -> None:
        n, first = self.reasons.get(reason, (0, source))
        self.reasons[reason] = (n + 1, first)

    @property
    def total(self) -> int:
        return sum(n for n, _ in self.reasons.values())

    def lines(self) -> list[str]:
        return [f"skipped {n} model{'s' * (n != 1)}: {reason} (first: {first})"
                for reason, (n, first) in self.reasons.items()]


@dataclass(frozen=True)
class Source:
    """One file (or study) of an import, as its recorded spec names it."""

    file: str
    sha256: str
    space: str


@dataclass(frozen=True)
class Population:
    format: str
    sources: tuple[Source, ...]
    networks: tuple[Network, ...]
    skipped: Skipped


@dataclass(frozen=True)
class Counted:
    """A network explorer can build, with explorer's complexity."""

    network: Network
    arch: Arch
    complexity: Complexity


@dataclass(frozen=True)
class Mismatch:
    """The file's params or flops against explorer's, over the rows that give them."""

    what: str
    checked: int
    differing: int
    largest_pct: float
    example: str | None

    def line(self) -> str:
        if not self.checked:
            return f"{self.what}: the file gives none to check"
        if not self.differing:
            return f"{self.what}: all {self.checked} agree with explorer's count"
        return (f"{self.what}: {self.differing} of {self.checked} differ from explorer's "
                f"count, by up to {self.largest_pct:.3g}% (at {self.example})")


@dataclass(frozen=True)
class ImportSummary:
    experiment: str
    version: int
    spaces: dict[str, int]
    trials: int
    skipped: Skipped
    mismatches: tuple[Mismatch, ...]


# --- reading ---------------------------------------------------------------------------


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as problem:
        raise ImportProblem(f"{path}: cannot read it as JSON ({problem})") from None


def _nds_jobs(data: Any, path: Path) -> list[Mapping[str, Any]]:
    """NDS's layouts: a list of jobs, or {"top": [...], "mid": [...]} (both kept)."""
    if isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):
        jobs = [job for part in data.values() for job in part]
    elif isinstance(data, list):
        jobs = data
    else:
        raise ImportProblem(f"{path}: an NDS file is a list of jobs or an object of lists "
                            "(e.g. 'top', 'mid')")
    if not all(isinstance(job, dict) for job in jobs):
        raise ImportProblem(f"{path}: every NDS job must be a JSON object")
    return jobs


def _ints(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, list | tuple) or not value:
        raise ValueError(f"{what} must be a non-empty list")
    numbers = [float(v) for v in value]
    if not all(n.is_integer() for n in numbers):
        raise ValueError(f"{what} must be whole numbers")
    return tuple(int(n) for n in numbers)


def _inner(widths: Sequence[int], bot_muls: Sequence[Any]) -> tuple[int, ...]:
    """pycls's inner width: round(w · bot_mul)."""
    return tuple(round(w * float(b)) for w, b in zip(widths, bot_muls, strict=True))


def _errors(values: Any) -> tuple[float, ...]:
    return tuple(float(v) for v in values) if isinstance(values, list) else ()


def _template(stem_type: Any) -> Template:
    template = _STEMS.get(str(stem_type))
    if template is None:
        raise ValueError(f"stem {stem_type!r} (explorer builds {', '.join(_STEMS)})")
    return template


def _read_nds(path: Path, space: str) -> tuple[list[Network], Skipped]:
    """NDS's ResNet / ResNeXt jobs: bottleneck blocks with a CIFAR or ImageNet stem."""
    networks, skipped = [], Skipped()
    for i, job in enumerate(_nds_jobs(_load_json(path), path)):
        source = str(job.get("job_id", f"#{i}"))
        net = job.get("net")
        if not isinstance(net, dict) or "ds" not in net:
            skipped.add("not a ResNet/ResNeXt job (a NAS cell or vanilla network: no "
                        "'net.ds' stage depths)", source)
            continue
        block = net.get("block_type", BOTTLENECK)
        if block != BOTTLENECK:
            skipped.add(f"block {block!r} (explorer builds {BOTTLENECK} only)", source)
            continue
        try:
            template = _template(net.get("stem_type", "res_stem_cifar"))
            resolution, classes = _TEMPLATE_DATA[template]
            depths, widths = _ints(net["ds"], "ds"), _ints(net["ws"], "ws")
            groups = _ints(net.get("num_gs", [1] * len(depths)), "num_gs")
            network = Network(
                source=source, space=space, template=template,
                stem_width=int(net["stem_w"]),
                depths=depths, widths=widths,
                inner_widths=_inner(widths, net.get("bot_muls", [1.0] * len(depths))),
                groups=groups, strides=_ints(net["ss"], "ss") if "ss" in net else None,
                resolution=resolution, num_classes=int(net.get("nc", classes)),
                params=_opt_int(job.get("params")), flops=_opt_int(job.get("flops")),
                test_errors=_errors(job.get("test_ep_top1")),
                train_errors=_errors(job.get("train_ep_top1")),
                train_losses=_errors(job.get("train_ep_loss")),
                final_error=_opt_float(job.get("min_test_top1")),
                seed=int(job.get("rng_seed", 0)),
            )
        except (KeyError, ValueError, TypeError) as problem:
            skipped.add(f"malformed job ({_reason(problem)})", source)
            continue
        networks.append(network)
    return networks, skipped


def _read_pycls(path: Path, space: str) -> tuple[list[Network], Skipped]:
    """pycls's sweep.json (tools/sweep_collect.py): AnyNet jobs with bottleneck blocks."""
    data = _load_json(path)
    if not isinstance(data, list):
        raise ImportProblem(f"{path}: a pycls sweep file is a list of jobs")
    networks, skipped = [], Skipped()
    for i, job in enumerate(data):
        source = str(job.get("log_file", f"#{i}")) if isinstance(job, dict) else f"#{i}"
        cfg = job.get("cfg") if isinstance(job, dict) else None
        if not isinstance(cfg, dict):
            skipped.add("no 'cfg' (the job's config)", source)
            continue
        model = str(cfg.get("MODEL", {}).get("TYPE", "")).lower()
        any_net = cfg.get("ANYNET", {})
        if model != "anynet":
            skipped.add(f"model type {model!r} (explorer reads anynet only)", source)
            continue
        if any_net.get("BLOCK_TYPE") != BOTTLENECK:
            skipped.add(f"block {any_net.get('BLOCK_TYPE')!r} (explorer builds {BOTTLENECK} "
                        "only)", source)
            continue
        if any_net.get("SE_ON") or any_net.get("HEAD_W"):
            skipped.add("squeeze-excitation or a head layer (explorer builds neither)", source)
            continue
        try:
            template = _template(any_net.get("STEM_TYPE"))
            depths, widths = _ints(any_net["DEPTHS"], "DEPTHS"), _ints(any_net["WIDTHS"], "WIDTHS")
            inner = _inner(widths, any_net.get("BOT_MULS") or [1.0] * len(depths))
            group_ws = _ints(any_net.get("GROUP_WS") or list(inner), "GROUP_WS")
            if any(w % g for w, g in zip(inner, group_ws, strict=True)):
                raise ValueError(f"inner widths {list(inner)} not multiples of GROUP_WS "
                                 f"{list(group_ws)}")
            cx = job.get("complexity", {})
            test, train = job.get("test_epoch", {}), job.get("train_epoch", {})
            network = Network(
                source=source, space=space, template=template,
                stem_width=int(any_net["STEM_W"]), depths=depths, widths=widths,
                inner_widths=inner,
                groups=tuple(w // g for w, g in zip(inner, group_ws, strict=True)),
                strides=_ints(any_net["STRIDES"], "STRIDES") if "STRIDES" in any_net else None,
                resolution=int(cfg.get("TRAIN", {}).get("IM_SIZE",
                                                        _TEMPLATE_DATA[template][0])),
                num_classes=int(cfg.get("MODEL", {}).get("NUM_CLASSES",
                                                          _TEMPLATE_DATA[template][1])),
                params=_opt_int(cx.get("params")), flops=_opt_int(cx.get("flops")),
                test_errors=_errors(test.get("top1_err")),
                train_errors=_errors(train.get("top1_err")),
                train_losses=_errors(train.get("loss")),
                seed=int(cfg.get("RNG_SEED", 0)),
            )
        except (KeyError, ValueError, TypeError, AttributeError) as problem:
            skipped.add(f"malformed job ({_reason(problem)})", source)
            continue
        networks.append(network)
    return networks, skipped


# Per-stage fields of the CSV layout and of an Optuna study's parameters (docs/IMPORT.md).
_GROUPS = ("cardinalities", "cardinality", "groups")
_D = ("bottleneck_widths", "bottleneck_width", "d")
_BOT_MULS = ("bot_muls", "bot_mul")


def _network_from_fields(values: Mapping[str, Any], *, source: str, space: str,
                        template: str, stem_width: int) -> Network:
    """The CSV / Optuna layout: per-stage lists (or one value for every stage).

    depths and widths are lists; C is cardinalities / cardinality / groups; the inner
    width comes from d (bottleneck_widths: per stage; bottleneck_width or d: stage 1's,
    scaled with the width as a spec's d is) or from bot_muls / bot_mul (round(w · b)).
    """
    depths = _ints(_as_list(values["depths"]), "depths")
    widths = _ints(_as_list(values["widths"]), "widths")
    n = len(depths)
    groups = _per_stage(values, _GROUPS, n, default=1)
    d_name = next((name for name in _D if _given(values.get(name))), None)
    if d_name is not None:
        raw = _as_list(values[d_name])
        if len(raw) == 1 and n > 1:  # stage 1's d, scaled like explorer.arch.make_arch's
            ds = tuple((int(raw[0]) * w) // widths[0] for w in widths)
        else:
            ds = _ints(raw, d_name)
        inner = tuple(c * d for c, d in zip(groups, ds, strict=True))
    else:
        muls = [float(v) for v in _per_stage_raw(values, _BOT_MULS, n, 1.0)]
        inner = _inner(widths, muls)
    chosen = str(values.get("template") or template)
    if chosen not in _TEMPLATE_DATA:
        raise ValueError(f"template {chosen!r} (use {', '.join(_TEMPLATE_DATA)})")
    resolution, classes = _TEMPLATE_DATA[chosen]
    errors = _as_list(values["test_errors"]) if _given(values.get("test_errors")) else []
    return Network(
        source=source, space=str(values.get("space") or space),
        template=chosen,  # type: ignore[arg-type]
        stem_width=int(values.get("stem_width") or stem_width), depths=depths, widths=widths,
        inner_widths=inner, groups=groups, strides=None,
        resolution=int(values.get("resolution") or resolution),
        num_classes=int(values.get("num_classes") or classes),
        params=_opt_int(values.get("params")), flops=_opt_int(values.get("flops")),
        test_errors=tuple(float(e) for e in errors),
        final_error=_opt_float(values.get("error")), seed=int(values.get("seed") or 0),
    )


def read_csv(path: Path, space: str, template: str, stem_width: int
             ) -> tuple[list[Network], Skipped]:
    """One row per trial (docs/IMPORT.md's columns); lists as JSON or "a|b|c"."""
    networks, skipped = [], Skipped()
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as problem:
        raise ImportProblem(f"{path}: cannot read it as CSV ({problem})") from None
    if rows and not {"depths", "widths", "error"} <= set(rows[0]):
        raise ImportProblem(f"{path}: a CSV to import needs the columns depths, widths and "
                            "error (docs/IMPORT.md)")
    for i, row in enumerate(rows, start=2):  # line numbers: the header is line 1
        source = str(row.get("id") or f"line {i}")
        try:
            networks.append(_network_from_fields(row, source=source, space=space,
                                                template=template, stem_width=stem_width))
        except (KeyError, ValueError, TypeError) as problem:
            skipped.add(f"malformed row ({_reason(problem)})", source)
    return networks, skipped


def _read_optuna(url: str, study_name: str, space: str, template: str, stem_width: int
                ) -> tuple[list[Network], Skipped, str]:
    """An Optuna study's complete trials; returns them, the skips and a digest of the
    study's content (what makes a re-import the same one)."""
    from explorer.errors import require_extra

    require_extra("sweep", "explorer import --format optuna", ("optuna",))
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=study_name, storage=url)
    except KeyError:
        raise ImportProblem(f"no study {study_name!r} in {url}") from None
    except Exception as problem:  # the storage's own errors vary with the backend
        raise ImportProblem(f"cannot open the Optuna storage {url}: {_reason(problem)}") from None
    networks, skipped, content = [], Skipped(), []
    for trial in study.get_trials(deepcopy=False):
        source = f"trial {trial.number}"
        if trial.state != optuna.trial.TrialState.COMPLETE or trial.value is None:
            skipped.add(f"state {trial.state.name} (only complete trials are imported)", source)
            continue
        values: dict[str, Any] = {**trial.user_attrs, **trial.params}
        for name in ("depths", "widths", *_GROUPS, *_D, *_BOT_MULS):
            staged = _indexed(values, name)
            if staged:
                values[name] = staged
        epochs = sorted(trial.intermediate_values.items())
        values["test_errors"] = [v for _, v in epochs]
        values["error"] = trial.value
        try:
            networks.append(_network_from_fields(values, source=source, space=space,
                                                template=template, stem_width=stem_width))
        except (KeyError, ValueError, TypeError) as problem:
            skipped.add(f"parameters that are not an architecture ({_reason(problem)})", source)
        content.append([trial.number, trial.params, trial.value, epochs,
                        {k: v for k, v in trial.user_attrs.items() if _jsonable(v)}])
    digest = hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode())
    return networks, skipped, digest.hexdigest()


def read_population(fmt: str, files: Sequence[str], spaces: Sequence[str], *,
                    studies: Sequence[str] = (), template: str = "cifar",
                    stem_width: int = 64) -> Population:
    """Every model of the files (one space per file; for Optuna, per study), and those
    left out. Studies pair with storage URLs in order; one URL serves every study."""
    if fmt not in _FORMATS:
        raise ImportProblem(f"--format {fmt!r}: use one of {', '.join(_FORMATS)}")
    if template not in _TEMPLATE_DATA:
        raise ImportProblem(f"--template {template!r}: use {', '.join(_TEMPLATE_DATA)}")
    if fmt == "optuna":
        if not studies:
            raise ImportProblem("--format optuna needs --study NAME (the study to import)")
        if len(files) == 1:
            files = list(files) * len(studies)
        if len(files) != len(studies):
            raise ImportProblem(f"{len(studies)} --study for {len(files)} storage URLs: give "
                                "one URL, or one per study")
    elif studies:
        raise ImportProblem(f"--study is for --format optuna, not {fmt}")
    if spaces and len(spaces) != len(files):
        raise ImportProblem(f"--space given {len(spaces)} times for {len(files)} files: "
                            "name one space per file, or none")
    names = list(spaces) or (list(studies) if fmt == "optuna"
                             else [Path(f).stem for f in files])
    if len(set(names)) != len(names):
        raise ImportProblem(f"two files would be the same space {names}: name them with --space")
    networks: list[Network] = []
    skipped = Skipped()
    sources = []
    for i, (file, space) in enumerate(zip(files, names, strict=True)):
        if fmt == "optuna":
            study = studies[i]
            found, skips, digest = _read_optuna(file, study, space, template, stem_width)
            sources.append(Source(f"{file}#{study}", digest, space))
        else:
            path = Path(file)
            if not path.is_file():
                raise ImportProblem(f"{file}: no such file")
            if fmt == "csv":
                found, skips = read_csv(path, space, template, stem_width)
            else:
                found, skips = (_read_nds if fmt == "nds" else _read_pycls)(path, space)
            sources.append(Source(str(path.resolve()), _file_sha256(path), space))
        networks.extend(replace(n, origin=sources[-1].sha256) for n in found)
        for reason, (n, first) in skips.reasons.items():
            for _ in range(n):
                skipped.add(reason, first)
    return Population(fmt, tuple(sources), tuple(networks), skipped)


# --- checking --------------------------------------------------------------------------


def build_arch(network: Network) -> Arch:
    """The network as explorer's record; ValueError naming why explorer cannot build it."""
    n = len(network.depths)
    if not len(network.widths) == len(network.groups) == len(network.inner_widths) == n:
        raise ValueError("per-stage lists of different lengths")
    strides = stage_strides(network.template, n)
    if network.strides is not None and tuple(network.strides) != strides:
        raise ValueError(f"strides {list(network.strides)} (explorer's stages use "
                         f"{list(strides)})")
    stages = []
    for i, (depth, width, inner, c, s) in enumerate(zip(
            network.depths, network.widths, network.inner_widths, network.groups, strides,
            strict=True), start=1):
        if depth < 1 or width < 1 or inner < 1 or c < 1:
            raise ValueError(f"stage {i} has a zero depth, width, inner width or group count")
        if inner % c:
            raise ValueError(f"stage {i}'s inner width {inner} is not divisible by its "
                             f"{c} groups")
        stages.append(Stage(depth=depth, width=width, cardinality=c,
                            bottleneck_width=inner // c, stride=s))
    return Arch(template=network.template, stem_width=network.stem_width,
                stages=tuple(stages))


def count_all(networks: Iterable[Network], skipped: Skipped) -> list[Counted]:
    """Each network explorer can build, recounted; the others added to `skipped`."""
    out = []
    for network in networks:
        try:
            arch = build_arch(network)
        except ValueError as problem:
            skipped.add(f"not expressible in explorer: {_reason(problem)}",
                        f"{network.space}/{network.source}")
            continue
        out.append(Counted(network, arch, count(arch, network.resolution, network.num_classes)))
    return out


def mismatches(counted: Sequence[Counted], tolerance_pct: float = 0.0) -> tuple[Mismatch, ...]:
    """The file's params and flops against explorer's count, row by row.

    pycls (NDS's trainer) counts the classifier's bias as flops too: a file's flops
    equal to explorer's plus the number of classes agree. A row differs by more than
    `tolerance_pct` of explorer's figure only where neither convention matches.
    """
    out = []
    for what in ("params", "flops"):
        checked = differing = 0
        largest, example = 0.0, None
        for item in counted:
            given = getattr(item.network, what)
            if given is None:
                continue
            ours = getattr(item.complexity, what)
            conventions = [ours] + ([ours + item.network.num_classes] if what == "flops" else [])
            pct = min(100.0 * abs(given - c) / c for c in conventions)
            checked += 1
            if pct > tolerance_pct:
                differing += 1
                if pct > largest:
                    largest = pct
                    example = (f"{item.network.space}/{item.network.source}: file {given:,}, "
                               f"explorer {ours:,}")
        out.append(Mismatch(what, checked, differing, largest, example))
    return tuple(out)


# --- writing ---------------------------------------------------------------------------


def _imported_spec(name: str, population: Population, spaces: Mapping[str, int]
                  ) -> dict[str, Any]:
    """What the experiment records as its spec: where the models came from."""
    return {
        "name": name,
        "imported": {"format": population.format,
                     "sources": [{"file": s.file, "sha256": s.sha256, "space": s.space}
                                 for s in population.sources]},
        "spaces": {space: {"imported": n} for space, n in spaces.items()},
    }


def is_imported(record: ExperimentRecord | None) -> bool:
    return record is not None and isinstance(record.spec_json.get("imported"), dict)


def write_population(store: Writer, name: str, population: Population,
                     counted: Sequence[Counted], *, new_version: bool = False) -> ImportSummary:
    """Write the counted networks as a read-only experiment; the same import again
    writes the same rows (trial keys come from the file's content and ids)."""
    spaces: dict[str, int] = {}
    for item in counted:
        spaces[item.network.space] = spaces.get(item.network.space, 0) + 1
    if not spaces:
        raise ImportProblem("no model of the file can be imported: "
                            + ("; ".join(population.skipped.lines()) or "it is empty"))
    existing = store.latest_experiment(name)
    if existing is not None and not is_imported(existing):
        raise ImportProblem(f"experiment {name!r} exists and was run by explorer, not "
                            "imported: import under another --name")
    spec = _imported_spec(name, population, spaces)
    digest = hashlib.sha256(json.dumps(spec["imported"], sort_keys=True).encode()).hexdigest()
    try:
        record = store.create_or_get_experiment(
            name, "# imported by explorer import; not a runnable spec\n"
            + json.dumps(spec, indent=2, sort_keys=True) + "\n", digest, spec,
            new_version=new_version)
    except SpecChanged:
        raise ImportProblem(f"experiment {name!r} was imported from other files (or they "
                            "changed since): pass --new-version to keep both versions, or "
                            "import under another --name") from None
    bases = _bases(counted)
    for chunk in _chunks(counted, _WRITE_BATCH):
        candidates = [Candidate(item.network.space, item.arch, item.complexity,
                                bases[item.network.space]) for item in chunk]
        store.add_candidates(record.id, candidates)
        keyed = [(trial_key(item), item) for item in chunk]
        store.add_trials(record.id, [(key, item.arch.key, item.network.seed)
                                     for key, item in keyed])
        store.finish_many(record.id, [(key, *_results(item.network)) for key, item in keyed])
    return ImportSummary(name, record.version, spaces, len(counted), population.skipped,
                         mismatches(counted))


def trial_key(item: Counted) -> str:
    """A trial per model of a file: its network, seed, file and id within that file."""
    return content_key({"arch": item.arch.key, "seed": item.network.seed,
                        "imported": f"{item.network.origin[:16]}:{item.network.source}"},
                       length=32)


def _results(network: Network) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Final metrics (the last epoch's, as explorer's own trials) and the epoch rows."""
    n = max(len(network.test_errors), len(network.train_errors), len(network.train_losses))
    history = []
    for epoch in range(n):
        row: dict[str, Any] = {"epoch": epoch + 1}
        for column, values in (("test_error", network.test_errors),
                               ("train_error", network.train_errors),
                               ("train_loss", network.train_losses)):
            if epoch < len(values):
                row[column] = values[epoch]
        history.append(row)
    final: dict[str, Any] = {k: v for k, v in (history[-1] if history else {}).items()
                             if k != "epoch"}
    if "test_error" not in final and network.final_error is not None:
        final["test_error"] = network.final_error
    final["epochs_completed"] = n
    return final, history


def _bases(counted: Sequence[Counted]) -> dict[str, Complexity]:
    """Each space's reference for the deviation columns: its median network by flops."""
    by_space: dict[str, list[Counted]] = {}
    for item in counted:
        by_space.setdefault(item.network.space, []).append(item)
    out = {}
    for space, items in by_space.items():
        median = statistics.median_low(item.complexity.flops for item in items)
        out[space] = next(item.complexity for item in items if item.complexity.flops == median)
    return out


# --- helpers ---------------------------------------------------------------------------


def _chunks(items: Sequence[Counted], size: int) -> Iterator[Sequence[Counted]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _given(value: Any) -> bool:
    return value is not None and value != ""


def _as_list(value: Any) -> list[Any]:
    """A per-stage field: a list, JSON text of one, "a|b|c", or one value."""
    if isinstance(value, list | tuple):
        return list(value)
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            parsed = json.loads(text)
            return list(parsed) if isinstance(parsed, list) else [parsed]
        return [part.strip() for part in text.split("|")]
    return [value]


def _number(value: Any) -> Any:
    """A CSV cell or parameter as a number: ints stay ints ("64", 64.0 → 64)."""
    number = float(value)
    return int(number) if number.is_integer() else number


def _per_stage_raw(values: Mapping[str, Any], names: Sequence[str], n: int,
                   default: Any) -> list[Any]:
    name = next((name for name in names if _given(values.get(name))), None)
    raw = [_number(v) for v in _as_list(values[name])] if name else [default]
    if len(raw) == 1:
        raw = raw * n
    if len(raw) != n:
        raise ValueError(f"{name} has {len(raw)} stages, depths {n}")
    return raw


def _per_stage(values: Mapping[str, Any], names: Sequence[str], n: int,
               default: int) -> tuple[int, ...]:
    return _ints(_per_stage_raw(values, names, n, default), names[0])


def _indexed(values: Mapping[str, Any], name: str) -> list[Any]:
    """name_0, name_1, ... (an Optuna study's per-stage parameters) as a list."""
    out: list[Any] = []
    while f"{name}_{len(out)}" in values:
        out.append(values[f"{name}_{len(out)}"])
    return out


def _opt_int(value: Any) -> int | None:
    if not _given(value):
        return None
    number = float(value)
    return round(number) if math.isfinite(number) else None


def _opt_float(value: Any) -> float | None:
    return float(value) if _given(value) else None


def _jsonable(value: Any) -> bool:
    return isinstance(value, str | int | float | bool | list | dict) or value is None


def _reason(problem: BaseException) -> str:
    """One line: a missing field is named as such, anything else by its first line."""
    if isinstance(problem, KeyError):
        return f"no field {problem.args[0]!r}" if problem.args else "a field is missing"
    lines = str(problem).strip().splitlines()
    return lines[0] if lines else type(problem).__name__
