"""Long-running processes: keep what start-up made out of the garbage collector's walks.

A full collection walks every tracked object in the process and stops every thread while
it does. Most of them are made at start-up and live as long as the process: the imported
libraries' functions, types and modules, the opened store, the model. In a warmed
benchmark process over 100k-tenants (two engines) a full collection took 70-78 ms; after
:func:`settle_heap` it took 0.6-2.5 ms (``docs/benchmarks.md``, "full garbage
collections"). Objects frozen this way are still freed when nothing refers to them; only
a reference cycle among them is never collected, so call it after start-up, not per
request. ``athena serve`` calls it once the server is built.
"""

from __future__ import annotations

import gc


def settle_heap() -> int:
    """Collect once, then move every object alive now out of future collections' walks.

    Returns how many objects are frozen.

    >>> settle_heap() > 0
    True
    >>> release_heap()
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def release_heap() -> None:
    """Undo :func:`settle_heap`: frozen objects are collectable again (then collected)."""
    gc.unfreeze()
    gc.collect()
