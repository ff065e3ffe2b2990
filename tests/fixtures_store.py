"""A realistic results database for tests of the store and of its readers (the dashboard).

`make_fixture_store` writes through the store's own writer API, as the sweep
driver does: real specs, real candidates with exact complexity and solved
bottleneck widths, real trial keys, and seeded synthetic training curves whose
errors follow the paper's trend (more cardinality, lower error). A network in
two spaces trains once; a later experiment with the same recipe reuses the
finished trials of an earlier one.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from explorer.plan import plan_trials
from explorer.space import Candidate, enumerate_spec
from explorer.spec import Spec, parse_spec
from explorer.store import Writer

# Spaces per experiment, alternating: every variant has the base network
# (1x64d [3,3,3]) in two spaces, and "preserved" in both, so the second
# experiment reuses the first one's trials there.
_SPACES = (
    """
  preserved:
    axes: {cardinality: [1, 2, 4, 8, 16, 32]}
    solve: {field: bottleneck_width, preserve: params, tolerance: 0.05}
  deeper:
    axes: {depths: [[3, 3, 3], [2, 2, 2], [4, 4, 4]]}
""",
    """
  preserved:
    axes: {cardinality: [1, 2, 4, 8, 16, 32]}
    solve: {field: bottleneck_width, preserve: params, tolerance: 0.05}
  wider:
    axes: {widths: [[256, 512, 1024], [128, 256, 512], [384, 768, 1536]]}
""",
)

_SPEC = """\
name: {name}
description: fixture experiment {name}
model:
  template: cifar
  depths: [3, 3, 3]
  stem_width: 64
  widths: [256, 512, 1024]
  cardinality: 1
  bottleneck_width: 64
spaces:{spaces}
data:
  dataset: cifar10
  resolution: 32
train:
  epochs: {epochs}
  batch_size: 128
  schedule: cosine
  seeds: {seeds}
"""

ENVIRONMENT = {
    "git_revision": "0123456789abcdef0123456789abcdef01234567",
    "package_versions": {"python": "3.11.7", "explorer": "0.1.0", "torch": "2.4.0",
                         "ray": "2.30.0", "optuna": "3.6.1"},
}
DEVICE = "NVIDIA H100 80GB HBM3"
OOM = "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"


@dataclass
class FixtureSummary:
    """What was written, for tests to compare the readers' frames with."""

    experiments: list[str] = field(default_factory=list)
    versions: dict[str, int] = field(default_factory=dict)
    trials: int = 0  # trial rows, over every experiment version
    # (trial, space) pairs: the rows of trials_frame(latest_version_only=False)
    trial_spaces: int = 0
    epochs: int = 0  # epoch rows
    status: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("pending", "running", "finished", "failed"), 0))
    reused: int = 0


def fixture_spec(name: str, *, variant: int = 0, epochs: int = 5,
                 seeds: int = 1) -> tuple[Spec, str]:
    """A small CIFAR spec and its text."""
    text = _SPEC.format(name=name, spaces=_SPACES[variant % len(_SPACES)], epochs=epochs,
                        seeds=list(range(seeds)))
    return parse_spec(text, f"{name}.yaml"), text


def curve(final: float, epochs: int, start: float = 62.0) -> list[float]:
    """Test error per epoch, decaying from `start` to exactly `final`."""
    if epochs == 1:
        return [final]
    rate = 4.0 / (epochs - 1)
    tail = math.exp(-rate * (epochs - 1))
    return [final + (start - final) * (math.exp(-rate * e) - tail) / (1 - tail)
            for e in range(epochs)]


def final_error(candidate: Candidate, rng: random.Random) -> float:
    """CIFAR-10-like error (%): lower with more cardinality, depth and width."""
    arch = candidate.arch
    return (5.6 - 0.3 * math.log2(arch.stages[0].cardinality)
            - 0.25 * (sum(arch.depths) - 9) / 3 - 0.4 * math.log2(arch.widths[0] / 256)
            + rng.gauss(0.0, 0.12))


def make_fixture_store(
    url: str | Path,
    *,
    experiments: Sequence[str] = ("cifar10-cardinality", "cifar10-width"),
    trials_per_space: int = 3,
    epochs: int = 5,
    failed: int = 1,
    running: int = 0,
    seeds: int = 1,
    versions: int = 1,
    seed: int = 0,
) -> FixtureSummary:
    """Write a results database at `url` (a path, runs directory or SQLAlchemy URL).

    Per experiment: the first `trials_per_space` candidates of each space,
    times `seeds` seeds; of the trials it trains itself, the last `failed`
    fail after a couple of epochs and the `running` before them are left half
    trained; trials finished by an earlier experiment are copied, not
    retrained. The first experiment gets `versions` versions (later ones with
    one more epoch), each trained. Deterministic for a given `seed`.
    """
    rng = random.Random(seed)
    summary = FixtureSummary()
    with Writer.open(url) as store:
        for index, name in enumerate(experiments):
            count = versions if index == 0 else 1
            for version in range(count):
                spec, text = fixture_spec(name, variant=index, epochs=epochs + version,
                                          seeds=seeds)
                record = store.create_or_get_experiment(
                    name, text, spec.hash, spec.model_dump(mode="json"),
                    new_version=version > 0, environment=ENVIRONMENT)
                _train(store, record.id, spec, trials_per_space, failed, running, rng, summary)
            summary.experiments.append(name)
            summary.versions[name] = count
    return summary


def _train(store: Writer, experiment_id: int, spec: Spec, per_space: int, failed: int,
           running: int, rng: random.Random, summary: FixtureSummary) -> None:
    enumeration = enumerate_spec(spec)
    chosen = [c for space in spec.spaces for c in enumeration.in_space(space)[:per_space]]
    store.add_candidates(experiment_id, chosen)
    by_key = {c.key: c for c in chosen}
    for candidate in by_key.values():
        store.set_cost(experiment_id, candidate.key, _cost(candidate, rng))
    plans = plan_trials(spec, chosen)
    store.add_trials(experiment_id, [(p.trial_key, p.candidate_key, p.seed) for p in plans])
    summary.trials += len(plans)
    summary.trial_spaces += sum(len(p.spaces) for p in plans)
    fresh = []
    for plan in plans:
        source = store.find_finished(plan.trial_key)
        if source is None:
            fresh.append(plan)
            continue
        store.copy_finished(experiment_id, plan.trial_key, source)
        summary.reused += 1
        summary.status["finished"] += 1
        summary.epochs += source.epochs_completed or 0
    n_failed = min(failed, len(fresh))
    n_running = min(running, len(fresh) - n_failed)
    outcomes = (["finished"] * (len(fresh) - n_failed - n_running)
                + ["running"] * n_running + ["failed"] * n_failed)
    for plan, outcome in zip(fresh, outcomes, strict=True):
        candidate = by_key[plan.candidate_key]
        n_epochs = spec.train.epochs if outcome == "finished" else max(spec.train.epochs // 2, 1)
        store.mark_running(experiment_id, plan.trial_key, f"cuda:{rng.randrange(4)}")
        errors = curve(final_error(candidate, rng), spec.train.epochs)[:n_epochs]
        throughput = 2.6e12 / candidate.complexity.flops * rng.uniform(0.9, 1.1)
        for epoch, error in enumerate(errors):
            store.record_epoch(experiment_id, plan.trial_key, {
                "epoch": epoch, "test_error": error, "test_top5_error": error / 9.0,
                "train_error": max(error - 2.0 - 0.3 * epoch, 0.05),
                "train_loss": 0.04 * error + 0.01, "lr": _lr(spec, epoch),
                "seconds": 50000 / throughput, "train_images_per_sec": throughput,
                "peak_memory_bytes": int(candidate.complexity.acts * 128 * 4 * 3),
            })
        summary.epochs += len(errors)
        summary.status[outcome] += 1
        if outcome == "finished":
            store.finish_trial(experiment_id, plan.trial_key, "finished", {
                "test_error": errors[-1], "test_top5_error": errors[-1] / 9.0,
                "train_error": max(errors[-1] - 2.0, 0.05), "train_loss": 0.04 * errors[-1],
                "train_images_per_sec": throughput, "seconds": len(errors) * 50000 / throughput,
            })
        elif outcome == "failed":
            store.finish_trial(experiment_id, plan.trial_key, "failed", {}, OOM)


def _lr(spec: Spec, epoch: int) -> float:
    return 0.5 * spec.train.lr * (1 + math.cos(math.pi * epoch / spec.train.epochs))


def _cost(candidate: Candidate, rng: random.Random) -> dict[str, object]:
    """Latency grows with flops, and with cardinality (grouped convolutions are slower)."""
    arch = candidate.arch
    latency = (candidate.complexity.flops / 1e9 * 0.9 + 0.05 * sum(arch.depths)
               + 0.02 * arch.stages[0].cardinality) * rng.uniform(0.95, 1.05)
    return {"latency_ms": latency, "train_images_per_sec": 1000.0 * 128 / (3 * latency),
            "peak_memory_bytes": int(candidate.complexity.acts * 128 * 4 * 3),
            "cost_device": DEVICE}


def write_population(url: str | Path, spec_text: str,
                     error: Callable[[Candidate, int], float]) -> Spec:
    """Every candidate of the spec (`spec_text`, its spaces sampled or listed) trained once
    per seed and finished with the final test error `error(candidate, seed)`: a synthetic
    population for the readers of design spaces (compare, refine), written through the
    Writer as the sweep writes, with no training."""
    spec = parse_spec(spec_text, "population.yaml")
    candidates = enumerate_spec(spec).candidates
    with Writer.open(url) as store:
        record = store.create_or_get_experiment(spec.name, spec_text, spec.hash,
                                                spec.model_dump(mode="json"),
                                                environment=ENVIRONMENT)
        store.add_candidates(record.id, candidates)
        plans = plan_trials(spec, candidates)
        store.add_trials(record.id, [(p.trial_key, p.candidate_key, p.seed) for p in plans])
        by_key = {c.key: c for c in candidates}
        for plan in plans:
            value = error(by_key[plan.candidate_key], plan.seed)
            store.mark_running(record.id, plan.trial_key, "cpu")
            store.record_epoch(record.id, plan.trial_key, {"epoch": 0, "test_error": value})
            store.finish_trial(record.id, plan.trial_key, "finished",
                               {"test_error": value, "test_top5_error": value / 5})
    return spec
