"""explorer.complexity's formulas equal fvcore's count of the built model, exactly.

The two are written independently (arithmetic per layer vs a trace of the
torch graph), so agreement on a few hundred random records, both templates
and all three block forms, odd resolutions and single-channel widths
included, is strong evidence that both follow the written convention.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from explorer.arch import (
    BLOCK_FORMS,
    TEMPLATES,
    Arch,
    Stage,
    resnet50,
    resnext29,
    resnext50_32x4d,
    resnext101_32x8d,
)
from explorer.complexity import count
from explorer.models import build_model
from explorer.models.measure import measure

N_RANDOM = 240


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Tiny convolutions run fastest on one thread, and a busy machine hurts them
    most when intra-op threads have to wait for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_case(index: int) -> tuple[Arch, int, int]:
    """A small random record, resolution and class count; one seeded stream per index."""
    rng = np.random.default_rng([20170411, index])
    n_stages = int(rng.integers(1, 5))
    stages = tuple(
        Stage(
            depth=int(rng.integers(1, 3)),
            width=int(rng.integers(1, 25)),
            cardinality=int(rng.integers(1, 5)),
            bottleneck_width=int(rng.integers(1, 7)),
            stride=int(rng.choice([1, 2])),
        )
        for _ in range(n_stages)
    )
    arch = Arch(
        template=TEMPLATES[index % len(TEMPLATES)],
        stem_width=int(rng.integers(1, 17)),
        stages=stages,
        block=BLOCK_FORMS[(index // len(TEMPLATES)) % len(BLOCK_FORMS)],
    )
    return arch, int(rng.integers(1, 41)), int(rng.integers(1, 21))


@pytest.mark.parametrize("index", range(N_RANDOM))
def test_formula_equals_fvcore_on_random_records(index: int) -> None:
    arch, resolution, classes = random_case(index)
    measured = measure(build_model(arch, classes), resolution)
    formula = count(arch, resolution, classes)
    assert (formula.params, formula.flops, formula.acts) == (
        measured.params, measured.flops, measured.acts
    ), (arch, resolution, classes)


def test_random_records_cover_the_space() -> None:
    cases = [random_case(i) for i in range(N_RANDOM)]
    assert {(a.template, a.block) for a, _, _ in cases} == {
        (t, b) for t in TEMPLATES for b in BLOCK_FORMS
    }
    assert {len(a.stages) for a, _, _ in cases} == {1, 2, 3, 4}
    assert any(r % 2 for _, r, _ in cases) and any(r < 8 for _, r, _ in cases)
    assert any(s.cardinality > 1 and s.stride == 2 for a, _, _ in cases for s in a.stages)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("arch", "resolution"),
    [
        (resnet50(), 224),
        (resnext50_32x4d(), 224),
        (resnext101_32x8d(), 224),
        (resnext29(8, 64), 32),
        (resnext50_32x4d("split"), 64),
    ],
    ids=["resnet50", "resnext50_32x4d", "resnext101_32x8d", "resnext29_8x64d", "x50-split"],
)
def test_formula_equals_fvcore_on_reference_models(arch: Arch, resolution: int) -> None:
    torch.manual_seed(0)
    measured = measure(build_model(arch, 1000), resolution)
    formula = count(arch, resolution, 1000)
    assert (formula.params, formula.flops, formula.acts) == (
        measured.params, measured.flops, measured.acts
    )


def _regnets_and_anynets() -> list[tuple[Arch, int]]:
    """RegNets (their generated stages, b > 1 and g cut to the inner width included) and
    networks drawn in the AnyNet parametrisation (b, g per stage), at small sizes."""
    from explorer.arch import regnet_arch
    from explorer.sampling import sample_space
    from explorer.spec import parse_spec

    regnets = [regnet_arch(template=t, stem_width=s, depth=d, w_0=w0, w_a=wa, w_m=wm,
                           group_width=g, bottleneck_ratio=b, quantum=8, block=block)
               for t, s, d, w0, wa, wm, g, b, block in [
                   ("anynet", 32, 13, 24, 36.44, 2.49, 8, 1, "grouped"),
                   ("anynet", 16, 6, 16, 8.5, 1.8, 24, 2, "concat"),
                   ("cifar", 8, 5, 8, 3.0, 2.2, 2, 4, "split"),
                   ("imagenet", 16, 4, 8, 0.0, 2.0, 16, 1, "grouped")]]
    drawn = sample_space(parse_spec("""\
name: t
model: {template: anynet, stem_width: 8, depths: [1, 1, 1], widths: [8, 16, 32],
        bottleneck_width: 2}
data: {dataset: cifar10, resolution: 24}
spaces:
  s:
    sample:
      n: 6
      stages:
        depths: {low: 1, high: 2}
        widths: {low: 8, high: 96, step: 8}
        bottleneck_ratio: [1, 2, 4]
        group_width: [1, 2, 4, 8, 16]
"""), "s").archs
    return [(a, 32) for a in regnets] + [(a, 24) for a in drawn]


@pytest.mark.parametrize("index", range(10))
def test_formula_equals_fvcore_on_regnets_and_anynet_draws(index: int) -> None:
    arch, resolution = _regnets_and_anynets()[index]
    measured = measure(build_model(arch, 10), resolution)
    formula = count(arch, resolution, 10)
    assert (formula.params, formula.flops, formula.acts) == (
        measured.params, measured.flops, measured.acts), arch
