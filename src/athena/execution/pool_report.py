"""What a worker pool reports about itself (see :mod:`athena.execution.pool`).

:func:`load` is read by the planner on every recall, so it holds no stats; :func:`health`
is for people and adds latencies, restarts, task counters and scaling events. Both read the
:class:`~athena.execution.pool_core.PoolCore` under its one lock, so their numbers agree.
"""

from __future__ import annotations

from typing import Any

from athena.execution.backend import PoolLoad
from athena.execution.pool_core import PoolCore


def load(core: PoolCore) -> PoolLoad:
    """Workers, busy, queue depth, available and saturated, under one lock (no stats).

    The planner asks on every recall, so the answer is kept with the version of the core's
    condition it was read at, and given again while no block under the condition has ended
    (nor waited) since: the core changes only under it. Read afresh each time, an adaptive
    recall's situation took 23.2 µs with an eager pool of two and 9.7-11.8 without; kept,
    14.9-16.9 (100k-one-tenant, transformer; ``benchmarks/engine_overhead.py --pools full
    --parts``, which times the situation whole). Taken with ``acquire``, not ``with``, so
    the read itself moves no version. A thread that changes the core and reads its load
    in the same block would be given the load from before its change: none does (the
    pool's own decisions read the fleet and the queue directly).

    >>> # load(pool._core).busy
    """
    cond = core.cond
    # The version is read before the state: a change after this read ends a block, which
    # moves the version past the one stored with what is read below.
    version, seen = cond.version, core.seen
    if seen is not None and seen[0] == version:
        return seen[1]
    cond.acquire()
    try:  # one pass over the workers
        fleet, depth = core.fleet, len(core.queue)
        live, ready, busy = fleet.tally()
        saturated = depth >= max(1, core.queue.size // 2) or (
            depth > 0 and live >= core.limits.max_workers and fleet.pick() is None
        )
        available = core.state == "running" and ready > 0
        found = PoolLoad(live, busy, depth, available, saturated)
        core.seen = (version, found)
    finally:
        cond.release()
    return found


def health(core: PoolCore, start_method: str) -> dict[str, Any]:
    """Workers, busy, queue depth, latencies, restarts, task counters and scaling events.

    >>> # health(pool._core, "spawn")["p95_latency_ms"]
    """
    with core.cond:
        fleet, limits, seen = core.fleet, core.limits, load(core)
        busy = [w for w in fleet.of("ready") if w.inflight]
        return {
            "backend": "process",
            "start_method": start_method,
            "started": core.startup_ms is not None,
            "startup_ms": core.startup_ms,
            "available": seen.available,
            "saturated": seen.saturated,
            "state": core.state,
            "error": core.error,
            "workers": fleet.live(),
            "ready": len(fleet.of("ready")),
            "starting": len(fleet.of("starting")),
            "busy": len(busy),
            "min_workers": limits.min_workers,
            "max_workers": limits.max_workers,
            "queue_depth": len(core.queue),
            "queue_size": core.queue.size,
            "pids": [w.process.pid for w in fleet.of("ready", "starting")],
            "busy_pids": [w.process.pid for w in busy],
            **core.stats.snapshot(),
        }
