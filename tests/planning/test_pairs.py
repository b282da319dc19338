"""Paired runs: how often an undecided context asks for one, and when their ratio decides."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from athena.planning.pairs import CLIP, PAIR_CAP, PAIR_EVERY, PAIR_MIN, PairedRatio, PairedRuns

KEY = ("parallel", 3, 0)


def test_an_undecided_context_asks_one_recall_in_every_few_until_the_cap() -> None:
    pairs = PairedRuns()
    asked = [pairs.wanted(KEY, 2.0) for _ in range(PAIR_EVERY * 3)]
    assert asked.count(True) == 3 and asked[PAIR_EVERY - 1]
    for _ in range(PAIR_CAP):
        pairs.record(KEY, 1.0)  # as cheap as SEQUENTIAL: never decided
    assert not any(pairs.wanted(KEY, 2.0) for _ in range(PAIR_EVERY * 3))
    assert pairs.wanted(("parallel", 5, 0), 2.0) is False  # counted per key: its first ask
    assert [pairs.flip() for _ in range(4)] == [True, False, True, False]
    dearer = PairedRuns()
    for _ in range(PAIR_MIN):
        dearer.record(KEY, 1.25)  # surely dearer: decided against, no more pairs
    assert not any(dearer.wanted(KEY, 2.0) for _ in range(PAIR_EVERY * 3))


def test_a_verdict_needs_enough_pairs_all_below_one() -> None:
    pairs = PairedRuns()
    for _ in range(PAIR_MIN - 1):
        pairs.record(KEY, 0.8)
    assert pairs.verdict(KEY, 2.0) is None  # too few
    pairs.record(KEY, 0.8)
    assert pairs.verdict(KEY, 2.0) == pytest.approx(0.8)
    wide = PairedRuns()
    for value in [0.5, 1.4] * PAIR_MIN:  # a mean below 1, but not surely
        wide.record(KEY, value)
    assert wide.verdict(KEY, 2.0) is None
    assert pairs.snapshot() == {"parallel/3/0": {"pairs": PAIR_MIN, "ratio": 0.8}}


@given(st.lists(st.floats(min_value=1e-6, max_value=1e6), min_size=1, max_size=200))
def test_the_ratio_stays_finite_and_within_the_clip(values: list[float]) -> None:
    ratio = PairedRatio()
    for value in values:
        ratio.add(value)
    low, high = ratio.bounds(2.0)
    assert -CLIP <= ratio.mean <= CLIP and ratio.var >= 0.0
    assert 0.0 < low <= math.exp(ratio.mean) <= high < math.inf
    for bad in (0.0, -1.0, math.nan, math.inf):
        ratio.add(bad)  # ignored
    assert ratio.n == len(values)
