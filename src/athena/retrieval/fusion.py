"""Reciprocal rank fusion, keyed by memory id."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

RRF_K: Final = 60


def rrf(rankings: Iterable[tuple[Sequence[int], float]], k: int = RRF_K) -> list[tuple[int, float]]:
    """Fuse ranked id lists, each with a weight, into one list of (id, score), best first.

    Ties break on the smaller id, so the order is a pure function of the inputs: every
    execution strategy that produces the same rankings produces the same fused order.

    >>> rrf([([1, 2, 3], 1.0), ([3, 1], 1.0)])[0][0]
    1
    """
    scores: dict[int, float] = {}
    for ids, weight in rankings:
        for rank, memory_id in enumerate(ids):
            scores[memory_id] = scores.get(memory_id, 0.0) + weight / (k + rank + 1)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))
