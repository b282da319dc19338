"""The order the arms take their turns in: a Williams design, so within turns every arm
runs in every place, and right after every other arm, equally often.

What ran just before a recall moves its cost. Run 12 (locomo/static, cold recalls, every
arm running SEQUENTIAL's code) measured the episodic layer at 0.475 ms in the SEQUENTIAL
arm and 0.60, 0.54 and 0.51 ms in the arms one, two and three places after DISTRIBUTED.
On a cached hit it is most of the cost: in runs 66-68 (18 sessions), a hit right after
another arm's hit took 0.65 of the session's median hit, one right after the baseline's
recall (which embeds afresh) 1.31, after SEQUENTIAL's 1.08 (`docs/bench/analysis.md`,
stop 45).

Until stop 45 each turn was a shuffle seeded by its index alone, the same 300 shuffles in
every session: in them HYBRID followed a caching arm 112 times, CACHE 107 and ADAPTIVE 95,
and HYBRID had the lowest cached-hit p50 of the three in 17 sessions of 18; the tenth of a
session in which an arm had more such neighbours was the tenth its hits were cheaper,
session after session. A rotation is no better (one fixed neighbour each). A Williams
design (Williams 1949, the crossover trials' design balanced for first-order carry-over)
gives every arm each neighbour and each place the same number of times in every block of
turns (n turns for an even number of arms, 2n for an odd one); each block relabels the
arms afresh, so the neighbour across the end of a turn, and who sits two places on, are
drawn too; the arms start from the order they were opened in, which every session shuffles
afresh. The balance is exact within turns, over whole blocks; across turns' ends it is
drawn.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from functools import cache
from typing import Final, TypeVar

T = TypeVar("T")

TURNS: Final = "williams, relabelled each block"  # kept in a session's details (see
# benchmarks/neighbours.py for the designs of earlier runs)


@cache
def williams(n: int) -> tuple[tuple[int, ...], ...]:
    """The rows of a Williams design for ``n`` arms: every arm in every place equally often
    and right after every other arm equally often (``n`` rows for even ``n``, else the
    rows and their mirror images, ``2n``).

    >>> williams(4)
    ((0, 1, 3, 2), (1, 2, 0, 3), (2, 3, 1, 0), (3, 0, 2, 1))
    >>> len(williams(7))
    14
    """
    base, low, high = [0], 1, n - 1
    while len(base) < n:  # 0, 1, n-1, 2, n-2, ...: each step a different distance
        base.append(low)
        low += 1
        if len(base) < n:
            base.append(high)
            high -= 1
    rows = [tuple((b + r) % n for b in base) for r in range(n)]
    if n % 2:
        rows += [row[::-1] for row in rows]
    return tuple(rows)


def turn_order(arms: Sequence[T], index: int) -> list[T]:
    """The arms in the order of turn ``index``: a row of :func:`williams`, each block under
    a relabelling of the arms drawn by the block's number. Arms with an ``opened`` place
    (see :func:`athena.bench.arms.open_arms`) are labelled in that order, else as given,
    before the block's relabelling.

    Relabelling a whole block keeps its balance (every arm in every place, right after every
    other arm, equally often) and changes who sits two or three places after whom: one
    design all session long kept the arm two places after each arm to one of two, for 108
    of 300 turns (a review's count; run 12 measured a neighbour's cost three places on).

    >>> sorted(turn_order(["a", "b", "c", "d"], 0))
    ['a', 'b', 'c', 'd']
    """
    n = len(arms)
    if n < 2:
        return list(arms)
    labels = sorted(arms, key=lambda arm: int(getattr(arm, "opened", 0)))
    rows = williams(n)
    block, place = divmod(index, len(rows))
    names = list(range(n))
    random.Random(f"labels/{block}").shuffle(names)
    return [labels[names[i]] for i in rows[place]]


def shuffled_turn(arms: Sequence[T], index: int) -> list[T]:
    """Turn ``index`` as the bench ordered it until stop 45 (a shuffle seeded by the index
    alone, the arms as given): to read the saved sessions of earlier runs.

    >>> shuffled_turn(["a", "b", "c"], 0)
    ['a', 'c', 'b']
    """
    order = list(arms)
    random.Random(index).shuffle(order)
    return order
