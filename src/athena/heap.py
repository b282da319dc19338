"""Long-running processes: keep what start-up made out of the garbage collector's walks,
and walk what came after less often.

A full collection walks every tracked object in the process and stops every thread while
it does. Most of them are made at start-up and live as long as the process: the imported
libraries' functions, types and modules, the opened store, the model. In a warmed
benchmark process over 100k-tenants (two engines) a full collection took 70-78 ms; after
:func:`settle_heap` it took 0.6-2.5 ms (``docs/benchmarks.md``, "full garbage
collections"). Objects frozen this way are still freed when nothing refers to them; only
a reference cycle among them is never collected, so call it after start-up, not per
request. ``athena serve`` calls it once the server is built.

What a process under load makes after that is mostly what its bounded caches keep (cached
hits and rankings, kept plans, the selector's recent decisions): it outlives the young
collections, so it piles up where only a full collection walks it, and CPython starts
one after every ten collections of the middle generation once the pile has grown by a
quarter. Three engines' caches over ``100k-tenants`` at 760 cold recalls a second made a
14-28 ms full collection in about half of the one-second steps, and found little to free
(``benchmarks/ramp_stalls.py``). So :func:`settle_heap` also lets :data:`OLD_THRESHOLD`
middle collections pass between two full ones, ten times CPython's default: the young
and middle collections, and their pauses (at most about 4 ms there), are unchanged, and
garbage cycles that reach the old generation wait longer to be freed.
"""

from __future__ import annotations

import gc
from typing import Final

OLD_THRESHOLD: Final = 100  # middle-generation collections between two full ones (CPython: 10)

_before: list[tuple[int, int, int]] = []  # the thresholds settle_heap replaced


def settle_heap() -> int:
    """Collect once, then move every object alive now out of future collections' walks,
    and start full collections at most once per :data:`OLD_THRESHOLD` middle ones (a
    higher threshold the process already set is kept).

    Returns how many objects are frozen.

    >>> settle_heap() > 0
    True
    >>> gc.get_threshold()[2] >= OLD_THRESHOLD
    True
    >>> release_heap()
    """
    gc.collect()
    gc.freeze()
    young, middle, old = gc.get_threshold()
    if old < OLD_THRESHOLD:
        _before.append((young, middle, old))
        gc.set_threshold(young, middle, OLD_THRESHOLD)
    return gc.get_freeze_count()


def release_heap() -> None:
    """Undo :func:`settle_heap`: frozen objects are collectable again (then collected), and
    the thresholds it raised are as they were."""
    gc.unfreeze()
    if _before:
        gc.set_threshold(*_before.pop())
    gc.collect()
