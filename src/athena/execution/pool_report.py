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

    >>> # load(pool._core).busy
    """
    with core.cond:  # one pass over the workers: the planner asks on every recall
        fleet, depth = core.fleet, len(core.queue)
        live, ready, busy = fleet.tally()
        saturated = depth >= max(1, core.queue.size // 2) or (
            depth > 0 and live >= core.limits.max_workers and fleet.pick() is None
        )
        available = core.state == "running" and ready > 0
        return PoolLoad(live, busy, depth, available, saturated)


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
