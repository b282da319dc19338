"""settle_heap: objects alive at the call leave the collector's walks, and come back."""

from __future__ import annotations

import gc

from athena.heap import release_heap, settle_heap


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def walked() -> set[int]:
    return {id(o) for o in gc.get_objects()}


def test_settled_objects_leave_the_walks_and_released_ones_are_collected() -> None:
    kept = [Node() for _ in range(100)]
    try:
        assert settle_heap() >= 100  # frozen now (the count drops as frozen objects die)
        assert not walked().intersection(map(id, kept))
    finally:
        release_heap()
    assert walked().issuperset(map(id, kept))
    del kept
    assert gc.collect() >= 100  # the cycles are collectable again once released
