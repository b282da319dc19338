"""settle_heap: objects alive at the call leave the collector's walks, and come back."""

from __future__ import annotations

import gc

from athena.heap import release_heap, settle_heap


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def test_settled_objects_are_frozen_and_released_ones_collected() -> None:
    kept = [Node() for _ in range(100)]
    try:
        frozen = settle_heap()
        assert frozen >= 100 and gc.get_freeze_count() == frozen
        made_after = len(gc.get_objects())
        assert made_after < frozen  # the walk now covers only what came after
    finally:
        release_heap()
    assert gc.get_freeze_count() == 0
    del kept
    assert gc.collect() >= 100  # the cycles are collectable again once released
