"""The report's comparisons: ADAPTIVE against every fixed arm, bursts resampled whole
(the statistics themselves: ``test_verdicts.py``)."""

from __future__ import annotations

from athena.bench.arms import Samples
from athena.bench.goals import evaluate
from athena.bench.report import Session, comparisons


def _bursts(paces: list[float], size: int = 100) -> list[float]:
    """Bursts of ``size`` recalls answered one after another, each at its own pace."""
    return [pace * (i + 1) for pace in paces for i in range(size)]


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
    assert verdict["ci95"] == [None, None]


def test_the_report_resamples_a_burst_scenarios_bursts_whole() -> None:
    arms = {
        "adaptive": Samples(ms=_bursts([0.9, 1.6, 0.95, 1.55, 0.9, 1.6, 1.0, 1.5])),
        "sequential": Samples(ms=_bursts([1.0, 0.9, 1.1, 1.0, 1.05, 0.95, 1.0, 1.1])),
    }
    bursts = Session("100k-tenants", "static", 1, 1, scenarios={"100 concurrent": arms})
    bursts.details["scenarios"] = {"100 concurrent": {"concurrency": 100}}
    assert comparisons(bursts)["100 concurrent"]["slower"] is False
    one_by_one = Session("100k-tenants", "static", 1, 1, scenarios={"cold recall": arms})
    assert comparisons(one_by_one)["cold recall"]["slower"] is True


def test_the_goal_names_every_arm_adaptive_lost_to() -> None:
    """Slower than two arms, the best by p50 and another: both named, in the JSON and in
    the goal's text; an arm it beats is not."""
    steady = [1.0 + 0.001 * (i % 7) for i in range(300)]
    arms = {
        "adaptive": Samples(ms=[1.3 * m for m in steady]),
        "sequential": Samples(ms=steady),
        "cache": Samples(ms=[1.1 * m for m in steady]),
        "parallel": Samples(ms=[2.0 * m for m in steady]),
    }
    session = Session("locomo", "static", 1, 1, scenarios={"cold recall": arms})
    verdict = comparisons(session)["cold recall"]
    assert verdict["best_fixed"] == "sequential" and verdict["arms_compared"] == 3
    assert set(verdict["slower_than"]) == {"sequential", "cache"}
    goals = evaluate([], {"locomo/static": comparisons(session)}, {}, [session])
    (never,) = [g for g in goals if g.name.startswith("adaptive never slower")]
    assert never.met is False
    assert never.measured == "slower in: cold recall (sequential ×1.3, cache ×1.1818)"


def test_the_mixed_workloads_are_judged_by_their_mean() -> None:
    """Half hits, half misses whose costs differ: the p50 falls between them, the mean
    weighs every miss."""
    mine, other = [0.03, 0.03, 1.0, 3.0] * 25, [0.03, 0.03, 1.0, 2.0] * 25
    arms = {"adaptive": Samples(ms=mine), "hybrid": Samples(ms=other)}
    session = Session("locomo", "static", 1, 1, scenarios={"mixed + writes": arms})
    verdict = comparisons(session)["mixed + writes"]
    assert verdict["statistic"] == "mean" and verdict["paired"] is True
    assert verdict["adaptive_over_best"] == round(1.015 / 0.765, 4)  # the p50s: both 0.515
    assert verdict["slower"] is True
