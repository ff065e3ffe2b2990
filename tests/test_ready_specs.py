"""The ready-made specs under spaces/ say what they claim in their comments.

Every spec validates and enumerates without dropping anything; the CIFAR-10
studies have the shapes the reproduction relies on: C = 1 ... 32 at preserved
params with d shrinking, equal budgets across cardinality / width / depth, and
a proxy that differs from its full run only in the number of epochs, so their
trial keys name the same candidates.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from explorer.space import Candidate, Enumeration, enumerate_spec
from explorer.spec import load_spec

SPACES = Path(__file__).resolve().parents[1] / "spaces"
ALL_SPECS = sorted(SPACES.rglob("*.yaml"))


def test_the_ready_specs_are_all_found() -> None:
    names = {str(p.relative_to(SPACES)) for p in ALL_SPECS}
    assert {"quickstart.yaml", "cifar10_preserved_small.yaml", "cifar10_fig7_small.yaml",
            "cpu/cifar10_preserved.yaml", "cpu/cifar10_fig7.yaml"} <= names


@pytest.mark.parametrize("path", ALL_SPECS, ids=lambda p: str(p.relative_to(SPACES)))
def test_every_ready_spec_enumerates_without_drops(path: Path) -> None:
    result = enumerate_spec(load_spec(path))
    assert result.candidates
    assert not result.dropped, [d.reason for d in result.dropped]


def _by_c(result: Enumeration) -> dict[int, tuple[int, float]]:
    return {c.arch.stages[0].cardinality: (c.arch.stages[0].bottleneck_width,
                                           c.params_deviation) for c in result.candidates}


@pytest.mark.parametrize("name,tolerance", [("cifar10_preserved_small.yaml", 5.0),
                                            ("cpu/cifar10_preserved.yaml", 8.0)])
def test_preserved_studies_trade_d_for_c(name: str, tolerance: float) -> None:
    found = _by_c(enumerate_spec(load_spec(SPACES / name)))
    assert sorted(found) == [1, 2, 4, 8, 16, 32]
    ds = [found[c][0] for c in sorted(found)]
    assert ds == sorted(ds, reverse=True) and len(set(ds)) == len(ds)  # d shrinks as C grows
    assert all(abs(dev) <= tolerance for _, dev in found.values())


@pytest.mark.parametrize("name,levels", [("cifar10_fig7_small.yaml", 3),
                                         ("cpu/cifar10_fig7.yaml", 2)])
def test_fig7_studies_spend_equal_budgets(name: str, levels: int) -> None:
    result = enumerate_spec(load_spec(SPACES / name))
    spaces = {s: sorted(c.complexity.params for c in result.in_space(s))
              for s in ("cardinality", "width", "depth")}
    assert {len(p) for p in spaces.values()} == {levels}
    base = result.base.complexity.params
    assert all(p[0] == base for p in spaces.values())  # each grows from the same model
    for level in range(1, levels):
        budgets = [p[level] for p in spaces.values()]
        assert max(budgets) / min(budgets) < 1.12, (level, budgets)  # equal within 12%
        assert min(budgets) > 1.5 * base * level  # and really bigger than the base


# docs/REPRODUCTION.md's 2-epoch proxy of the CPU study, as its command line overrides it.
CPU_PROXY = ["name=cifar10-preserved-cpu-proxy", "train.epochs=2", "train.warmup_epochs=0"]


def test_cpu_proxy_is_the_full_run_with_fewer_epochs() -> None:
    full = load_spec(SPACES / "cpu" / "cifar10_preserved.yaml")
    proxy = load_spec(SPACES / "cpu" / "cifar10_preserved.yaml", CPU_PROXY)
    assert proxy.name != full.name
    assert proxy.train.epochs < full.train.epochs
    assert proxy.data == full.data and proxy.model == full.model
    assert proxy.spaces == full.spaces and proxy.train.seeds == full.train.seeds
    assert ({c.key for c in enumerate_spec(proxy).candidates}
            == {c.key for c in enumerate_spec(full).candidates})


def test_nds_study_draws_resnet_and_resnext_in_one_band() -> None:
    spec = load_spec(SPACES / "cpu" / "cifar10_nds.yaml")
    result = enumerate_spec(spec)
    low, high = spec.constraints.flops
    resnet, resnext = result.in_space("resnet"), result.in_space("resnext")
    assert len(resnet) == len(resnext) == 48
    assert {c.arch.cardinalities for c in resnet} == {(1, 1, 1)}
    assert {len(set(c.arch.cardinalities)) for c in resnext} == {1}  # shared by the stages
    drawn = {c.arch.cardinalities[0] for c in resnext}
    assert drawn <= {2, 4, 8, 16, 32} and len(drawn) >= 4  # 32 is rare inside the band
    assert len({c.arch.bottleneck_widths for c in resnext}) > 24  # d drawn per stage
    for space in (resnet, resnext):
        flops = [c.complexity.flops for c in space]
        assert all(low <= f <= high for f in flops)
        counts, _ = np.histogram(flops, bins=np.linspace(low, high, 5))
        assert list(counts) == [12, 12, 12, 12]  # the same complexity strata in both
    assert spec.train.seeds == (0,) and spec.data.resolution == 16


def test_anynet_study_draws_a_and_its_shared_b_and_g_children_in_one_band() -> None:
    spec = load_spec(SPACES / "cpu" / "cifar10_anynet.yaml")
    result = enumerate_spec(spec)
    low, high = spec.constraints.flops
    spaces = {s: result.in_space(s) for s in ("anynet_a", "anynet_b", "anynet_c")}
    assert {len(space) for space in spaces.values()} == {64}

    def ratios(c: Candidate) -> set[float]:  # b per stage: width over inner width (C·d)
        return {s.width / (s.cardinality * s.bottleneck_width) for s in c.arch.stages}

    def groups(c: Candidate) -> set[int]:  # g per stage, leaving out stages of one group
        return {s.bottleneck_width for s in c.arch.stages if s.cardinality > 1}

    assert any(len(ratios(c)) > 1 for c in spaces["anynet_a"])  # b drawn per stage
    assert all(len(ratios(c)) == 1 for c in spaces["anynet_b"])  # b shared
    assert any(len(groups(c)) > 1 for c in spaces["anynet_b"])  # g still per stage
    assert all(len(ratios(c)) == 1 and len(groups(c)) <= 1 for c in spaces["anynet_c"])
    for space in spaces.values():
        flops = [c.complexity.flops for c in space]
        assert all(low <= f <= high for f in flops)
        counts, _ = np.histogram(flops, bins=np.linspace(low, high, 5))
        assert list(counts) == [16, 16, 16, 16]  # the same complexity strata in all three
    assert spec.train.seeds == (0,) and spec.data.resolution == 16


def test_anynet_child_is_the_parent_plus_a_with_shared_b() -> None:
    parent = load_spec(SPACES / "cpu" / "cifar10_anynet.yaml")
    child = load_spec(SPACES / "cpu" / "cifar10_anynet_child.yaml")
    assert list(child.spaces) == [*parent.spaces, "anynet_a.shared-b"]
    assert all(child.spaces[s] == parent.spaces[s] for s in parent.spaces)  # reused as run
    a, new = parent.spaces["anynet_a"].sample, child.spaces["anynet_a.shared-b"].sample
    assert a is not None and new is not None
    assert new.shared == ("bottleneck_ratio",) and not a.shared
    assert new.seed not in {s.sample.seed for s in parent.spaces.values() if s.sample}
    assert (new.n, new.stages, new.stratify) == (a.n, a.stages, a.stratify)
    assert (child.model, child.constraints, child.data, child.train) == (
        parent.model, parent.constraints, parent.data, parent.train)
