"""Long-running processes: keep what start-up made out of the garbage collector's walks,
and walk what came after less often.

A full collection walks every tracked object in the process and stops every thread while
it does. Most of them are made at start-up and live as long as the process: the imported
libraries' functions, types and modules, the opened store, the model. In a warmed
benchmark process over 100k-tenants (two engines) a full collection took 70-78 ms; after
:func:`settle_heap` it took 0.6-2.5 ms (``docs/bench/analysis.md``, "full garbage
collections"). Objects frozen this way are still freed when nothing refers to them; only
a reference cycle among them is never collected, so call it after start-up, not per
request. ``athena serve`` calls it once the server is built.

What a process under load makes after that is mostly what its bounded caches keep (cached
hits and rankings, kept plans, the selector's recent decisions): it outlives the young
collections, so it piles up where only a full collection walks it, and CPython starts
one after every ten collections of the middle generation once the pile has grown by a
quarter. Three engines' caches over ``100k-tenants`` at 760 cold recalls a second made a
14-31 ms full collection in about half of the caching arms' one-second steps, each
finding little to free (``benchmarks/ramp_stalls.py``). So :func:`settle_heap` also lets
:data:`OLD_THRESHOLD` middle collections pass between two full ones, ten times CPython's
default: the young and middle collections, and their pauses (at most about 4 ms there),
are unchanged, and garbage cycles that reach the old generation wait longer to be freed.
"""

from __future__ import annotations

import gc
import threading
from typing import Final

OLD_THRESHOLD: Final = 100  # middle-generation collections between two full ones (CPython: 10)

_lock = threading.Lock()
_raised_from: int | None = None  # the third threshold settle_heap last replaced


def settle_heap() -> int:
    """Collect once, then move every object alive now out of future collections' walks,
    and start full collections at most once per :data:`OLD_THRESHOLD` middle ones (a
    higher threshold the process already set is kept; on CPython's incremental collector,
    3.14, the third threshold may do nothing).

    Returns how many objects are frozen.

    >>> settle_heap() > 0
    True
    >>> gc.get_threshold()[2] >= OLD_THRESHOLD
    True
    >>> release_heap()
    """
    global _raised_from
    gc.collect()
    gc.freeze()
    with _lock:
        young, middle, old = gc.get_threshold()
        if old < OLD_THRESHOLD:  # not raised now (never, or since released or reset)
            _raised_from = old
            gc.set_threshold(young, middle, OLD_THRESHOLD)
    return gc.get_freeze_count()


def release_heap() -> None:
    """Undo every :func:`settle_heap` (as ``gc.unfreeze`` does): frozen objects are
    collectable again (then collected), and the third threshold goes back to what the last
    settle raised it from, unless the process has set another one since (one it set to
    exactly :data:`OLD_THRESHOLD` cannot be told from the raise, and is undone too). The
    young and middle thresholds are left as they are."""
    global _raised_from
    gc.unfreeze()
    with _lock:
        young, middle, old = gc.get_threshold()
        if _raised_from is not None and old == OLD_THRESHOLD:
            gc.set_threshold(young, middle, _raised_from)
        _raised_from = None
    gc.collect()
