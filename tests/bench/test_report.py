"""The report's "never slower" test: a bootstrap of the p50 ratio, whose unit for a burst
scenario is the burst (its recalls queue behind one another), not the recall."""

from __future__ import annotations

import random
import statistics

from hypothesis import given, settings
from hypothesis import strategies as st

from athena.bench.arms import Samples
from athena.bench.report import Session, _clustered, compare, comparisons


def _independent(mine: list[float], other: list[float]) -> tuple[float, float, float]:
    """The test as it was before bursts were resampled whole: every sample on its own."""
    a, b = [m for m in mine if m == m], [m for m in other if m == m]
    rng = random.Random(0)
    ratios = sorted(
        statistics.median(rng.choices(a, k=len(a))) / statistics.median(rng.choices(b, k=len(b)))
        for _ in range(1000)
    )
    point = statistics.median(a) / statistics.median(b)
    return point, ratios[25], ratios[974]


samples = st.lists(
    st.one_of(st.floats(0.01, 100.0), st.just(float("nan"))), min_size=1, max_size=40
).filter(lambda xs: any(x == x for x in xs))


@given(samples, samples)
@settings(max_examples=40)
def test_one_sample_a_cluster_is_the_test_as_it_was(mine: list[float], other: list[float]) -> None:
    assert compare(mine, other) == _independent(mine, other)


def _bursts(paces: list[float], size: int = 100) -> list[float]:
    """Bursts of ``size`` recalls answered one after another, each burst at its own pace
    (ms a recall): a queue, so a recall's latency is its place in it times the pace."""
    return [pace * (i + 1) for pace in paces for i in range(size)]


def test_a_few_bursts_at_different_paces_are_not_called_slower() -> None:
    """Four bursts an arm whose paces overlap: counted recall by recall the adaptive arm
    looks slower for sure; counted burst by burst, as they happened, it cannot be told."""
    mine, best = _bursts([1.0, 1.4, 0.95, 1.35]), _bursts([1.0, 0.9, 1.1, 1.0])
    _, low, _ = _independent(mine, best)
    assert low > 1.0  # the old test flags it
    ratio, low, high = compare(mine, best, cluster=100)
    assert ratio > 1.0 and low <= 1.0 < high


def test_bursts_slower_every_time_are_called_slower() -> None:
    mine, best = (
        _bursts([1.5, 1.6, 1.55, 1.45, 1.5, 1.6]),
        _bursts([1.0, 1.05, 0.95, 1.0, 1.1, 1.0]),
    )
    _, low, _ = compare(mine, best, cluster=100)
    assert low > 1.0


def test_a_failed_recall_stays_in_its_burst() -> None:
    mine = _bursts([1.0, 2.0], size=4)
    mine[1] = float("nan")  # the first burst's second recall failed
    assert _clustered(mine, 4) == [[1.0, 3.0, 4.0], [2.0, 4.0, 6.0, 8.0]]


def test_too_few_bursts_leave_the_verdict_open() -> None:
    """A quick run sends one burst an arm: no interval, and the goal is not called met."""
    arms = {
        "adaptive": Samples(ms=_bursts([3.0])),
        "sequential": Samples(ms=_bursts([1.0])),
    }
    one = Session("locomo", "static", 1, 1, scenarios={"100 concurrent": arms})
    one.details["scenarios"] = {"100 concurrent": {"concurrency": 100}}
    verdict = comparisons(one)["100 concurrent"]
    assert verdict["slower"] is None and verdict["adaptive_over_best"] == 3.0


def test_the_report_resamples_a_burst_scenarios_bursts_whole() -> None:
    arms = {
        "adaptive": Samples(ms=_bursts([1.0, 1.4, 0.95, 1.35])),
        "sequential": Samples(ms=_bursts([1.0, 0.9, 1.1, 1.0])),
    }
    bursts = Session("100k-tenants", "static", 1, 1, scenarios={"100 concurrent": arms})
    bursts.details["scenarios"] = {"100 concurrent": {"concurrency": 100}}
    assert comparisons(bursts)["100 concurrent"]["slower"] is False
    one_by_one = Session("100k-tenants", "static", 1, 1, scenarios={"cold recall": arms})
    assert comparisons(one_by_one)["cold recall"]["slower"] is True
