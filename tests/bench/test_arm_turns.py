"""The arms' turns: a Williams design, every arm in every place and after every other arm
equally often, labelled in the order the arms were opened."""

from __future__ import annotations

import importlib.util
import itertools
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from athena.bench.turns import TURNS, shuffled_turn, turn_order, williams


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


def _follows(turns: list[list[str]], gap: int = 1) -> Counter[tuple[str, str]]:
    """How often each arm ran ``gap`` places after each other within a turn."""
    return Counter((turn[i], turn[i + gap]) for turn in turns for i in range(len(turn) - gap))


ARMS = ["baseline", "sequential", "parallel", "distributed", "cache", "hybrid", "adaptive"]
CACHING = ("cache", "hybrid", "adaptive")


def _warm(follows: Counter[tuple[str, str]]) -> list[int]:
    """How often each caching arm ran right after another caching arm."""
    return [sum(follows[a, b] for a in CACHING) for b in CACHING]


def test_the_bench_s_turns_give_every_caching_arm_the_same_neighbours() -> None:
    """The 300 turns of a latency scenario, seven arms: within turns each ordered pair meets
    42-44 times (21 whole blocks of 14 and a part), so each caching arm runs right after
    another about equally often; the shuffles seeded by the turn alone, the same in every
    session, had CACHE there 91 times, HYBRID 89 and ADAPTIVE 81 (107, 112 and 95 across
    turns' ends too, an arm right after itself included)."""
    turns = [turn_order(ARMS, index) for index in range(300)]
    assert turns[5] == turn_order(ARMS, 5)  # repeatable
    follows = _follows(turns)
    for a in ARMS:
        for b in ARMS:
            if a != b:
                assert 42 <= follows[a, b] <= 44, (a, b, follows[a, b])
    warm = _warm(follows)
    assert max(warm) - min(warm) <= 4
    old = _warm(_follows([shuffled_turn(ARMS, index) for index in range(300)]))
    assert old == [91, 89, 81]  # cache, hybrid, adaptive


def test_who_sits_two_places_on_is_drawn_block_by_block() -> None:
    """One design all session long kept the arm two places after each arm to one of two
    others (0 or about 108 of 300 turns a pair); relabelled each block, every pair meets
    there."""
    gap2 = _follows([turn_order(ARMS, index) for index in range(300)], gap=2)
    pairs = [(a, b) for a in ARMS for b in ARMS if a != b]
    assert min(gap2[p] for p in pairs) >= 15 and max(gap2[p] for p in pairs) <= 60


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


def test_run_ops_counts_turns_by_recall_over_the_arms_still_asking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writes take no turn, and an arm stopped over its budget leaves the design to the
    others: the arms recall in the order turn_order gives the live arms at each recall
    turn, which is what benchmarks/neighbours.py rebuilds from the samples."""
    from athena.bench.arms import Arm, open_arms, run_ops
    from athena.bench.workloads import Ask, Op
    from athena.memory import Memory

    db = tmp_path / "turns.db"
    with Memory(db) as memory:
        memory.remember("Ann plays the cello.", tenant="t")
    asked: list[str] = []
    recall = Arm.recall

    def logged(self: Arm, ask: Ask, **kw: Any) -> float:
        asked.append(self.name)
        return recall(self, ask, **kw)

    monkeypatch.setattr(Arm, "recall", logged)
    names = ["baseline", "sequential", "cache", "adaptive"]
    q = Op("recall", Ask("t", "Who plays the cello?"))
    w = Op("write", Ask("t", "Bob plays the drums."))
    ops = [q, w, q, q, w, q, q, q]
    with open_arms(db, "static", names, pools="off", shuffle="s") as arms:
        out = run_ops(arms, ops, cap_s={"cache": 0.0})  # cache stops after its first recall
        expected: list[str] = []
        live = list(arms)
        for turn in range(6):
            for arm in turn_order(live, turn):
                expected.append(arm.name)
                if arm.name == "cache":
                    live.remove(arm)
        assert asked == expected
        assert out.arms["cache"].extra["stopped_after"] == 1
        opened = [a.name for a in sorted(arms, key=lambda a: a.opened)]
    spec = importlib.util.spec_from_file_location(
        "neighbours", Path(__file__).parents[2] / "benchmarks" / "neighbours.py"
    )
    assert spec is not None and spec.loader is not None
    neighbours = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(neighbours)
    rebuilt = neighbours.turns({"turns": TURNS, "opened": opened}, names, {"cache": 1}, 6)
    assert [name for turn in rebuilt for name in turn] == asked
