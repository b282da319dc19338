"""Settled contexts (:class:`athena.planning.costs.Settled`): where SEQUENTIAL won a full
decision by far, the next few predict SEQUENTIAL alone, and the choices are the ones full
decisions would have made."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from athena.planning.costs import MAX_CELLS, SETTLED_USES, Others, Settled
from athena.planning.selector import SETTLED_WHY, Situation, Strategy, StrategySelector


def situation(seq_ms: float = 3.0, pool: bool = True, inflight: int = 1) -> Situation:
    return Situation(3, seq_ms, 2.0, 0.0, 0, 0.0, pool, False, inflight)


def taught(parallel_ms: float, rng_seed: int = 0, explore_rate: float = 0.0) -> StrategySelector:
    """A selector that has measured SEQUENTIAL at 3 ms and the others at ``parallel_ms``."""
    sel = StrategySelector(rng=random.Random(rng_seed), explore_rate=explore_rate)
    s = situation()
    for _ in range(30):
        sel.learn(Strategy.SEQUENTIAL, s, 3.0)
        sel.learn(Strategy.PARALLEL, s, parallel_ms)
        sel.learn(Strategy.DISTRIBUTED, s, parallel_ms * 1.5)
    return sel


class NeverSettled(Settled):
    """Decides in full every time: the selector before settling."""

    def keep(
        self, key: tuple[int, int, int, int], options: int, generation: int, others: Others
    ) -> None:
        return None


@contextmanager
def predictions(sel: StrategySelector) -> Iterator[dict[Strategy, int]]:
    """Count each strategy's cost predictions while the block runs."""
    counts = dict.fromkeys(Strategy, 0)
    originals = {}
    for strategy, model in sel._models.items():
        originals[strategy] = model.predict

        def counted(*args: object, _s: Strategy = strategy, _f: object = model.predict) -> object:
            counts[_s] += 1
            return _f(*args)  # type: ignore[operator]

        model.predict = counted  # type: ignore[method-assign]
    try:
        yield counts
    finally:
        for strategy, model in sel._models.items():
            model.predict = originals[strategy]  # type: ignore[method-assign]


def test_a_context_won_by_far_predicts_only_sequential_for_a_few_decisions() -> None:
    sel, s = taught(parallel_ms=4.5), situation()
    with predictions(sel) as counts:
        first = sel.decide(s)  # a full decision: every option predicted
        assert first.why != SETTLED_WHY and counts[Strategy.PARALLEL] == 1
        settled = [sel.decide(s) for _ in range(SETTLED_USES)]
        assert counts[Strategy.PARALLEL] == 1 and counts[Strategy.DISTRIBUTED] == 1
        assert counts[Strategy.SEQUENTIAL] == 1 + SETTLED_USES
        assert sel.decide(s).why != SETTLED_WHY  # then a full one again
    assert all(d.strategy is Strategy.SEQUENTIAL and d.why == SETTLED_WHY for d in settled)
    assert settled[0].estimated_ms == pytest.approx(first.estimated_ms)
    assert [name for name, _ in settled[0].predicted] == ["sequential", "parallel", "distributed"]
    assert settled[0].predicted[1:] == first.predicted[1:]


@pytest.mark.parametrize("parallel_ms", [2.5, 2.9, 3.0])
def test_a_close_or_cheaper_option_is_decided_in_full_every_time(parallel_ms: float) -> None:
    sel, s = taught(parallel_ms), situation()
    assert all(sel.decide(s).why != SETTLED_WHY for _ in range(3 * SETTLED_USES))


def test_another_strategys_cost_anywhere_unsettles_the_context() -> None:
    sel, s = taught(parallel_ms=4.5), situation()
    sel.decide(s)
    assert sel.decide(s).why == SETTLED_WHY
    sel.learn(Strategy.PARALLEL, situation(seq_ms=24.0), 30.0)  # another context: shared ratios
    assert sel.decide(s).why != SETTLED_WHY


def test_sequential_growing_dearer_ends_the_settling_at_once() -> None:
    sel, s = taught(parallel_ms=4.0), situation()
    sel.decide(s)
    assert sel.decide(s).why == SETTLED_WHY
    for _ in range(12):  # SEQUENTIAL's median climbs to PARALLEL's kept cost
        sel.learn(Strategy.SEQUENTIAL, s, 4.2)
    assert sel.decide(s).why != SETTLED_WHY


def test_a_young_sequential_median_never_settles() -> None:
    sel, s = StrategySelector(rng=random.Random(0), explore_rate=0.0), situation(pool=False)
    for _ in range(5):
        sel.learn(Strategy.SEQUENTIAL, s, 3.0)
    sel.learn(Strategy.PARALLEL, s, 20.0)
    assert all(sel.decide(s).why != SETTLED_WHY for _ in range(20))


def test_one_option_settles_nothing() -> None:
    sel = taught(parallel_ms=9.0)
    one = Situation(1, 3.0, 1.0, 0.0, 0, 0.0, True, False, 1)
    for _ in range(30):
        sel.learn(Strategy.SEQUENTIAL, one, 3.0)
    for _ in range(5):
        assert sel.decide(one).strategy is Strategy.SEQUENTIAL
    assert not sel._settled.states


def test_settling_is_kept_per_context_and_per_set_of_options() -> None:
    sel = taught(parallel_ms=4.5)
    sel.decide(situation())
    assert sel.decide(situation(pool=False)).why != SETTLED_WHY  # no DISTRIBUTED: full
    assert sel.decide(situation(seq_ms=24.0)).why != SETTLED_WHY  # another scale: full
    assert sel.decide(situation(pool=False)).why == SETTLED_WHY  # settled for two options
    assert sel.decide(situation()).why != SETTLED_WHY  # three again: full


def test_exploring_draws_as_often_in_a_settled_context() -> None:
    full, quick = taught(4.5, 3, 0.3), taught(4.5, 3, 0.3)
    full._settled = NeverSettled()
    s = situation()
    decisions = [(full.decide(s), quick.decide(s)) for _ in range(400)]
    assert all(a.strategy is b.strategy for a, b in decisions)
    assert sum(b.why == SETTLED_WHY for _, b in decisions) > 100
    assert not any(a.why == SETTLED_WHY for a, _ in decisions)
    assert full._rng.getstate() == quick._rng.getstate()  # one draw a decision, both ways


@settings(max_examples=60, deadline=None)
@given(
    parallel_ratio=st.floats(0.5, 3.0),
    noise=st.floats(0.0, 0.3),
    seed=st.integers(0, 10_000),
    explore_rate=st.sampled_from([0.0, 0.05, 0.3]),
)
def test_the_choices_are_those_of_full_decisions(
    parallel_ratio: float, noise: float, seed: int, explore_rate: float
) -> None:
    """Two selectors fed the same costs and the same draws, one never settling: the same
    strategy every time, over random cost ratios, noise and exploration rates in one
    context (settling skips predictions; it is not meant to change a choice)."""
    full, quick = taught(3.0 * parallel_ratio, seed), taught(3.0 * parallel_ratio, seed)
    for sel in (full, quick):
        sel.explore_rate = explore_rate
    full._settled = NeverSettled()
    costs = random.Random(seed)
    s = situation()
    for _ in range(150):
        picks = full.decide(s).strategy, quick.decide(s).strategy
        assert picks[0] is picks[1]
        base = {Strategy.SEQUENTIAL: 3.0, Strategy.PARALLEL: 3.0 * parallel_ratio}
        cost = base.get(picks[0], 4.5 * parallel_ratio) * (1 + costs.uniform(-noise, noise))
        full.learn(picks[0], s, cost)
        quick.learn(picks[0], s, cost)


def test_the_settled_contexts_are_bounded() -> None:
    settled = Settled()
    for i in range(MAX_CELLS + 100):
        settled.keep((i, 0, 0, 0), 2, 0, (("parallel", 9.0),))
    assert len(settled.states) == MAX_CELLS
    settled.keep((0, 0, 0, 0), 3, 0, (("parallel", 9.0),))  # a kept context may change
    assert settled.states[(0, 0, 0, 0)][1] == 3
