"""settle_heap: objects alive at the call leave the collector's walks, and come back; full
collections wait longer while settled."""

from __future__ import annotations

import gc

from athena.heap import OLD_THRESHOLD, release_heap, settle_heap


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


def test_full_collections_wait_longer_once_settled_and_as_before_once_released() -> None:
    before = gc.get_threshold()
    try:
        gc.set_threshold(before[0], before[1], 10)
        settle_heap()
        try:
            assert gc.get_threshold() == (before[0], before[1], OLD_THRESHOLD)
        finally:
            release_heap()
        assert gc.get_threshold() == (before[0], before[1], 10)
        gc.set_threshold(before[0], before[1], OLD_THRESHOLD * 5)  # the process's own choice
        settle_heap()
        try:
            assert gc.get_threshold()[2] == OLD_THRESHOLD * 5  # kept, not lowered
        finally:
            release_heap()
        assert gc.get_threshold()[2] == OLD_THRESHOLD * 5
    finally:
        gc.set_threshold(*before)


def test_a_settle_never_released_does_not_leave_a_stale_threshold_behind() -> None:
    before = gc.get_threshold()
    try:
        gc.set_threshold(before[0], before[1], 10)
        settle_heap()  # as a server does: settled for good, never released
        gc.unfreeze()
        gc.set_threshold(before[0], before[1], 50)  # the process's own choice, later
        settle_heap()
        settle_heap()  # nested: one release undoes both, as gc.unfreeze does
        assert gc.get_threshold()[2] == OLD_THRESHOLD
        gc.set_threshold(300, before[1], OLD_THRESHOLD)  # the young threshold moved meanwhile
        release_heap()
        assert gc.get_threshold() == (300, before[1], 50)  # only the raise is undone
        release_heap()  # nothing to undo
        assert gc.get_threshold() == (300, before[1], 50)
    finally:
        release_heap()
        gc.set_threshold(*before)
