"""The equivalence rule of `explorer compare --equivalence D` (and of `explorer refine`'s
reading of a constraint) checked by simulation.

Two spaces' errors are drawn, seeded, from uniform distributions shifted by
`delta` (the KS distance between U(0, 1) and U(delta, 1 + delta) is exactly
delta), and the library's rule (stats.bootstrap_ks + stats.ks_upper_bound < D)
is applied to each pair of samples:

- at the margin (delta = D), calling the spaces equivalent is the error the rule
  must keep at or below α = 5%;
- at delta = 0 the rate is the rule's power, which the planner's
  `equivalence_samples_needed` (4·c(α)²/D² models per space) promises to be
  about a half or more at that n.

Run with -s to see the rates.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from explorer import stats

MARGIN = 0.3
REPLICATES = 200
DRAWS = 200


def equivalence_rate(n: int, delta: float, seed: int) -> float:
    """The share of REPLICATES pairs of n-model samples the rule calls equivalent."""
    rng = np.random.default_rng(seed)
    weights = np.full(n, 1.0 / n)
    calls = 0
    for _ in range(REPLICATES):
        a = rng.uniform(0.0, 1.0, n)
        b = rng.uniform(delta, 1.0 + delta, n)
        bound = stats.ks_upper_bound(stats.bootstrap_ks(a, weights, b, weights, draws=DRAWS,
                                                        rng=rng))
        calls += bound < MARGIN
    return calls / REPLICATES


@pytest.mark.slow  # about 4 s of CPU
def test_false_equivalence_at_the_margin_and_power_at_zero() -> None:
    needed = stats.equivalence_samples_needed(MARGIN)
    assert needed == math.ceil(4 * (-math.log(0.025) / 2) / MARGIN ** 2)  # 82 at D = 0.3
    sizes = (needed // 2, needed, 2 * needed)
    # The binomial noise of REPLICATES calls at 5%: 2 standard errors of slack.
    slack = 2 * math.sqrt(0.05 * 0.95 / REPLICATES)
    power = []
    for i, n in enumerate(sizes):
        false_rate = equivalence_rate(n, MARGIN, seed=10 + i)
        power.append(equivalence_rate(n, 0.0, seed=20 + i))
        print(f"D = {MARGIN}, n = m = {n}: false equivalence at the margin {false_rate:.3f}, "
              f"power at distance 0 {power[-1]:.3f} ({REPLICATES} replicates, "
              f"{DRAWS} bootstrap draws)")
        assert false_rate <= 0.05 + slack
    assert power[0] <= power[1] <= power[2]
    assert power[1] >= 0.5  # what the planner's n promises
    assert power[2] >= 0.9


def test_upper_bound_is_the_percentile_of_seeded_resamples() -> None:
    """The bound against a longhand bootstrap on the same seeded draws."""
    rng = np.random.default_rng(5)
    a, b = rng.normal(0, 1, 30), rng.normal(0.3, 1, 45)
    wa, wb = rng.uniform(0.5, 1.5, 30), rng.uniform(0.5, 1.5, 45)
    wa, wb = wa / wa.sum(), wb / wb.sum()
    got = stats.bootstrap_ks(a, wa, b, wb, draws=50, rng=np.random.default_rng(9), chunk=7)
    # Longhand: the same generator calls, in the same order, chunk by chunk.
    replay = np.random.default_rng(9)
    expected = []
    for start in range(0, 50, 7):
        rows = min(7, 50 - start)
        pa = replay.integers(0, 30, (rows, 30))
        pb = replay.integers(0, 45, (rows, 45))
        for ia, ib in zip(pa, pb, strict=True):
            xa, xb = a[ia], b[ib]
            va, vb = wa[ia] / wa[ia].sum(), wb[ib] / wb[ib].sum()
            expected.append(max(abs(va[xa <= x].sum() - vb[xb <= x].sum())
                                for x in np.concatenate([xa, xb])))
    assert got == pytest.approx(np.array(expected))
    assert stats.ks_upper_bound(got) == pytest.approx(np.quantile(expected, 0.95))


def refine_equivalence_rate(n: int, share: float, distance: float, seed: int) -> float:
    """The share of REPLICATES parent populations in which `explorer refine` calls a
    constraint's child equivalent to its parent. A share `share` of the parent's n models
    satisfies the constraint, drawn from U(s, 1 + s), the rest from U(0, 1): the parent's EDF
    is the mixture, so the child's true KS distance to it is (1 - share)·s = `distance`."""
    from explorer import refine

    rng = np.random.default_rng(seed)
    shift = distance / (1 - share)
    flat = np.zeros((n, 1))
    calls = 0
    for _ in range(REPLICATES):
        mask = rng.random(n) < share
        errors = np.where(mask, rng.uniform(shift, 1 + shift, n), rng.uniform(0, 1, n))
        pop = refine.Population(np.arange(n).astype(str), errors, np.ones(n), np.ones(n),
                                dict.fromkeys(refine.PARAMETERS, flat))
        constraint = refine.Constraint("c", "c", mask, ("shared", "widths", None), None)
        read = refine.read_constraint(pop, constraint, normalize=None, bins=10, margin=MARGIN,
                                      draws=DRAWS, rng=rng)
        calls += read.equivalence.finding == "equivalent"
    return calls / REPLICATES


@pytest.mark.slow  # about 8 s of CPU
def test_refine_child_against_parent_error_rates() -> None:
    """The same check for refine's reading of a constraint (the child a subset of the parent,
    the bound from resampling the parent)."""
    slack = 2 * math.sqrt(0.05 * 0.95 / REPLICATES)
    for i, n in enumerate((100, 400)):
        false_rate = refine_equivalence_rate(n, 0.4, MARGIN, seed=30 + i)
        power = refine_equivalence_rate(n, 0.4, 0.0, seed=40 + i)
        print(f"refine, D = {MARGIN}, parent of n = {n}, 40% satisfying: false equivalence at "
              f"the margin {false_rate:.3f}, power at distance 0 {power:.3f}")
        assert false_rate <= 0.05 + slack
        if n == 400:
            assert power >= 0.8  # at most 1 - α: a significant KS test says "better"/"worse"
