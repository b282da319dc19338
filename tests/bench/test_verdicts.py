"""The "never slower" verdict: a bootstrap of the p50 ratio against every fixed arm, at 95%
simultaneous over the arms, whose unit for a burst scenario is the burst."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from athena.bench import verdicts
from athena.bench.verdicts import MIN_CLUSTERS, clustered, compare, never_slower

samples = st.lists(
    st.one_of(st.floats(0.01, 100.0), st.just(float("nan"))), min_size=1, max_size=60
).filter(lambda xs: any(x == x for x in xs))


@given(samples, samples, st.floats(0.1, 10.0))
@settings(max_examples=30, deadline=None)
def test_the_ratio_and_its_bounds_scale_with_the_samples(
    mine: list[float], other: list[float], factor: float
) -> None:
    """Same seed, same draws: scaling one side scales the point and both bounds, and the
    point is the ratio of the medians of what did not fail."""
    point, low, high = compare(mine, other)
    scaled = compare([m * factor for m in mine], other)
    assert point == pytest.approx(
        statistics.median(m for m in mine if m == m) / statistics.median(o for o in other if o == o)
    )
    if min(len(clustered(mine, 1)), len(clustered(other, 1))) < MIN_CLUSTERS:
        assert math.isnan(low) and math.isnan(high)  # too few to say anything
        return
    assert low <= high
    assert scaled == pytest.approx((point * factor, low * factor, high * factor), rel=1e-9)


def test_every_bound_has_its_draws_beyond_it() -> None:
    """At 95% over up to eight arms, 25 resamples lie beyond each bound (a tail of a
    handful would move with every draw)."""
    for arms in range(1, 9):
        rounds, low = verdicts._draws(1.0 - 0.05 / arms)
        assert low >= 25 and rounds - 1 - low > rounds // 2


def _bursts(paces: list[float], size: int = 100) -> list[float]:
    """Bursts of ``size`` recalls answered one after another, each burst at its own pace
    (ms a recall): a queue, so a recall's latency is its place in it times the pace."""
    return [pace * (i + 1) for pace in paces for i in range(size)]


def _independent(mine: list[float], other: list[float]) -> tuple[float, float, float]:
    """Every recall resampled on its own, as the report did before bursts were whole."""
    return compare(mine, other, cluster=1)


def test_a_few_bursts_at_different_paces_are_not_called_slower() -> None:
    """Eight bursts an arm whose paces overlap: counted recall by recall the adaptive arm
    looks slower for sure; counted burst by burst, as they happened, it cannot be told."""
    mine = _bursts([0.9, 1.6, 0.95, 1.55, 0.9, 1.6, 1.0, 1.5])
    best = _bursts([1.0, 0.9, 1.1, 1.0, 1.05, 0.95, 1.0, 1.1])
    _, low, _ = _independent(mine, best)
    assert low > 1.0  # recall by recall it is flagged
    ratio, low, high = compare(mine, best, cluster=100)
    assert ratio > 1.0 and low <= 1.0 < high


def test_bursts_slower_every_time_are_called_slower() -> None:
    mine, best = (
        _bursts([1.5, 1.6, 1.55, 1.45, 1.5, 1.6, 1.5, 1.55]),
        _bursts([1.0, 1.05, 0.95, 1.0, 1.1, 1.0, 1.0, 1.05]),
    )
    _, low, _ = compare(mine, best, cluster=100)
    assert low > 1.0


def test_a_failed_recall_stays_in_its_burst() -> None:
    mine = _bursts([1.0, 2.0], size=4)
    mine[1] = float("nan")  # the first burst's second recall failed
    assert [run.tolist() for run in clustered(mine, 4)] == [[1.0, 3.0, 4.0], [2.0, 4.0, 6.0, 8.0]]


def test_ragged_bursts_take_the_median_of_what_was_drawn() -> None:
    """A burst with failed recalls is shorter; the padding never counts in a median."""
    mine = _bursts([1.0] * 8, size=10)
    for i in range(0, 80, 10):
        mine[i + 9] = float("nan")  # every burst lost its slowest recall
    assert compare(mine, mine, cluster=10) == (1.0, 1.0, 1.0)
    slower = [m * 2 for m in mine]
    assert compare(slower, mine, cluster=10, statistic="mean") == pytest.approx((2.0, 2.0, 2.0))


def test_too_few_bursts_leave_the_interval_open() -> None:
    few = MIN_CLUSTERS - 1
    point, low, high = compare(_bursts([3.0] * few), _bursts([1.0] * few), cluster=100)
    assert point == 3.0 and math.isnan(low) and math.isnan(high)
    _, low, _ = compare(_bursts([3.0] * MIN_CLUSTERS), _bursts([1.0] * MIN_CLUSTERS), cluster=100)
    assert low == 3.0


def _lognormal(rng: np.random.Generator, scale: float, n: int = 300) -> list[float]:
    return (scale * rng.lognormal(0.0, 0.4, n)).tolist()


def test_slower_than_any_arm_is_slower_though_not_than_the_best() -> None:
    """The best arm by p50 is noisy and barely faster; a steady arm ADAPTIVE clearly loses
    to is still named: the goal is no fixed strategy beating it."""
    rng = np.random.default_rng(3)
    steady = [1.0 + 0.01 * x for x in rng.standard_normal(300)]
    noisy = [0.99 * x for x in rng.lognormal(0.0, 1.0, 20)]
    mine = [1.2 + 0.01 * x for x in rng.standard_normal(300)]
    verdict = never_slower(mine, {"parallel": noisy, "sequential": steady})
    assert verdict["slower"] is True
    assert "sequential" in verdict["slower_than"]


def test_the_interval_is_simultaneous_over_the_arms() -> None:
    """More arms compared, each interval wider: 95% for all of them at once."""
    rng = np.random.default_rng(5)
    mine, best = _lognormal(rng, 1.0), _lognormal(rng, 1.0)
    slow = {name: _lognormal(rng, 2.0) for name in ("parallel", "distributed", "cache")}
    alone = never_slower(mine, {"sequential": best})
    among = never_slower(mine, {"sequential": best, **slow})
    assert alone["best_fixed"] == among["best_fixed"] == "sequential"
    assert among["arms_compared"] == 4
    assert among["ci95"][0] < alone["ci95"][0] and among["ci95"][1] > alone["ci95"][1]


def test_no_samples_is_refused() -> None:
    with pytest.raises(ValueError):
        never_slower([float("nan")], {"sequential": [1.0]})
    with pytest.raises(ValueError):
        never_slower([1.0], {"sequential": [float("nan")]})


def _mixed(rng: np.random.Generator, miss_ms: float, n: int = 400) -> list[float]:
    """Half cached hits (about 0.03 ms), half misses: a mixed workload's two modes."""
    hits = 0.03 * rng.lognormal(0.0, 0.2, n // 2)
    misses = miss_ms * rng.lognormal(0.0, 0.3, n - n // 2)
    out = np.concatenate([hits, misses])
    rng.shuffle(out)
    return out.tolist()


def test_a_mixed_workload_is_told_apart_by_its_mean_not_its_median() -> None:
    """Misses 20% dearer: the median sits in the gap between the modes, its interval says
    nothing; the mean's is tight and above 1."""
    rng = np.random.default_rng(9)
    mine, other = _mixed(rng, 1.2), _mixed(rng, 1.0)
    _, low, high = compare(mine, other)
    assert low < 0.5 and high > 2.0
    ratio, low, high = compare(mine, other, statistic="mean")
    assert 1.0 < low < ratio < high < 1.5
    verdict = never_slower(mine, {"hybrid": other}, statistic="mean")
    assert verdict["slower_than"] == {"hybrid": pytest.approx(ratio)}


def test_an_unknown_statistic_is_refused() -> None:
    with pytest.raises(ValueError, match="statistic"):
        compare([1.0], [1.0], statistic="p99")


def _questions(rng: np.random.Generator, n: int = 300) -> np.ndarray:
    """What each of ``n`` questions costs, whichever arm asks it (lognormal, wide)."""
    return rng.lognormal(0.0, 0.6, n)


def test_pairs_take_each_questions_cost_out_of_the_noise() -> None:
    """Both arms answered the same questions, ADAPTIVE 5% dearer on each: unpaired, the
    questions' spread hides it; paired, the interval is narrow and above 1."""
    rng = np.random.default_rng(4)
    cost = _questions(rng)
    mine = (1.05 * cost * rng.lognormal(0.0, 0.05, cost.size)).tolist()
    other = (cost * rng.lognormal(0.0, 0.05, cost.size)).tolist()
    _, low, high = compare(mine, other)
    _, paired_low, paired_high = compare(mine, other, paired=True)
    assert low < 1.0 < paired_low
    assert paired_high - paired_low < (high - low) / 2


def test_a_failed_recall_drops_its_pair_from_both_sides() -> None:
    """A NaN on one side drops that op on the other too, else the pairs would slip."""
    mine = [1.0, float("nan"), 3.0, 4.0] * 3
    other = [2.0, 100.0, 6.0, 8.0] * 3
    assert compare(mine, other, paired=True) == (0.5, 0.5, 0.5)


def test_a_side_stopped_early_is_compared_over_its_prefix() -> None:
    mine = [1.0, 2.0, 3.0] * 3 + [50.0, 60.0]
    other = [2.0, 4.0, 6.0] * 3  # an arm stopped over its budget after nine ops
    assert compare(mine, other, paired=True) == (0.5, 0.5, 0.5)


def test_fewer_than_enough_samples_leave_the_interval_open() -> None:
    """One at a time as in bursts: seven recalls a side say nothing, eight do."""
    few = MIN_CLUSTERS - 1
    for paired in (False, True):
        point, low, high = compare([3.0] * few, [1.0] * few, paired=paired)
        assert point == 3.0 and math.isnan(low) and math.isnan(high)
        assert compare([3.0] * MIN_CLUSTERS, [1.0] * 20, paired=paired)[1] == 3.0


def test_a_few_units_widen_the_interval_many_barely() -> None:
    """The corrected interval holds the plain percentile one: by sqrt(8/7) on each side (on
    a log scale) at eight bursts, by under 0.2% at three hundred recalls."""
    rng = np.random.default_rng(7)
    few = [_bursts([float(p) for p in rng.lognormal(0.0, 0.15, 8)]) for _ in range(2)]
    many = [_lognormal(rng, 1.0) for _ in range(2)]
    cases = ((few, 100, False, 1.069), (many, 1, False, 1.0017), (many, 1, True, 1.0017))
    for (mine, other), cluster, paired, stretch in cases:
        kw = {"cluster": cluster, "level": 0.99, "paired": paired}
        point, low, high = compare(mine, other, **kw)  # type: ignore[arg-type]
        plain = verdicts.expansion
        try:
            verdicts.expansion = lambda n: 1.0  # type: ignore[assignment]
            _, plain_low, plain_high = compare(mine, other, **kw)  # type: ignore[arg-type]
        finally:
            verdicts.expansion = plain  # type: ignore[assignment]
        assert low < plain_low <= point <= plain_high < high
        assert math.log(point / low) == pytest.approx(
            stretch * math.log(point / plain_low), rel=0.001
        )


def test_pairs_are_single_samples() -> None:
    with pytest.raises(ValueError, match="paired"):
        compare([1.0] * 8, [1.0] * 8, cluster=4, paired=True)


def test_a_bound_is_widened_away_from_the_point_never_towards_it() -> None:
    assert verdicts._widened(1.0, 1.01, 1.2, 2.0) == pytest.approx((1.01, 1.44))
    assert verdicts._widened(1.0, 0.5, math.inf, 2.0) == (0.25, math.inf)
    assert verdicts._widened(0.0, 0.0, 0.0, 2.0) == (0.0, 0.0)
