"""The arms' turns: a Williams design, every arm in every place and after every other arm
equally often, labelled in the order the arms were opened."""

from __future__ import annotations

import itertools
import random
from collections import Counter
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from athena.bench.turns import turn_order, williams


@given(st.integers(2, 12))
@settings(max_examples=11, deadline=None)
def test_a_block_balances_places_and_neighbours(n: int) -> None:
    rows = williams(n)
    assert len(rows) == (n if n % 2 == 0 else 2 * n)
    times = len(rows) // n
    for row in rows:
        assert sorted(row) == list(range(n))
    for place in range(n):
        assert Counter(row[place] for row in rows) == dict.fromkeys(range(n), times)
    after = Counter(pair for row in rows for pair in itertools.pairwise(row))
    assert after == {(a, b): times for a in range(n) for b in range(n) if a != b}


def _follows(turns: list[list[str]]) -> Counter[tuple[str, str]]:
    return Counter(pair for turn in turns for pair in itertools.pairwise(turn))


def test_the_bench_s_turns_give_every_caching_arm_the_same_neighbours() -> None:
    """The 300 turns of a latency scenario, seven arms: within turns, each ordered pair
    within two of its share, so each caching arm runs right after another caching arm
    equally often (the shuffles seeded by the turn alone had HYBRID there 112 times,
    ADAPTIVE 95, the same in every session)."""
    arms = ["baseline", "sequential", "parallel", "distributed", "cache", "hybrid", "adaptive"]
    turns = [turn_order(arms, index) for index in range(300)]
    assert turns[5] == turn_order(arms, 5)  # repeatable
    follows = _follows(turns)
    blocks = 300 // 14
    for a in arms:
        for b in arms:
            if a != b:
                assert 2 * blocks <= follows[a, b] <= 2 * blocks + 2, (a, b, follows[a, b])
    caching = {"cache", "hybrid", "adaptive"}
    warm = Counter(b for (a, b), count in follows.items() if a in caching for _ in range(count))
    assert max(warm[c] for c in caching) - min(warm[c] for c in caching) <= 2
    old = []  # the design before: one shuffle seeded by each turn's index
    for index in range(300):
        order = list(arms)
        random.Random(index).shuffle(order)
        old.append(order)
    stream = [arm for turn in old for arm in turn]  # across the turns' ends too
    old_warm = Counter(b for a, b in itertools.pairwise(stream) if a in caching)
    assert (old_warm["hybrid"], old_warm["cache"], old_warm["adaptive"]) == (112, 107, 95)


@dataclass
class _Arm:
    name: str
    opened: int


def test_arms_are_labelled_in_the_order_they_were_opened() -> None:
    """Open the arms in another order and each turn is the same design over new labels: a
    session's shuffled opening order draws which arm sits where in the design."""
    first = [_Arm(name, i) for i, name in enumerate("abcde")]
    again = [_Arm(name, "cadbe".index(name)) for name in "abcde"]
    relabel = dict(zip("abcde", "cadbe", strict=True))
    for index in range(20):
        assert [relabel[a.name] for a in turn_order(first, index)] == [
            a.name for a in turn_order(again, index)
        ]


@pytest.mark.parametrize("n", [0, 1])
def test_one_arm_or_none_takes_its_turn_alone(n: int) -> None:
    assert turn_order(["a"][:n], 3) == ["a"][:n]
