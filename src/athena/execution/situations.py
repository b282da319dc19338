"""What the strategy selector sees of a recall: the dependency graph's estimates for its
layers, how much of it is cached, the worker pool's load and the recalls executing.

The engine counts a recall in flight while it executes (not while a cache hit is served).
"""

from __future__ import annotations

import threading

from athena.execution.pool_keeper import PoolKeeper
from athena.planning.dependency_graph import DependencyGraph
from athena.planning.selector import Situation


class Situations:
    """Builds the :class:`Situation` of one engine's recalls, and counts those in flight.

    >>> situations = Situations(DependencyGraph(cores=2), PoolKeeper(None))
    >>> situations.enter()
    >>> s = situations.of(("episodic", "semantic"), 0.5, tenant="t")
    >>> s.layers, s.cached_fraction, s.inflight, s.pool_available
    (2, 0.5, 1, False)
    """

    def __init__(self, graph: DependencyGraph, pools: PoolKeeper) -> None:
        self.graph, self.pools = graph, pools
        self.inflight = 0  # recalls executing now
        self._lock = threading.Lock()

    def enter(self) -> None:
        """Count one more recall executing."""
        with self._lock:
            self.inflight += 1

    def leave(self) -> None:
        """Count a recall done (it answered or raised)."""
        with self._lock:
            self.inflight -= 1

    def of(
        self,
        layers: tuple[str, ...],
        cached_fraction: float,
        *,
        light: bool = False,
        tenant: str | None = None,
    ) -> Situation:
        """The situation of a recall of ``layers``; ``light`` leaves the pool's load out
        (idle, unavailable), and a ``tenant`` the pool has not served reads as not warm."""
        load = None if light else self.pools.load()
        sequential_ms, parallel_benefit = self.graph.estimates(layers)
        return Situation(
            layers=len(layers),
            sequential_ms=sequential_ms,
            parallel_benefit=parallel_benefit,
            cached_fraction=cached_fraction,
            queue_depth=load.queue_depth if load else 0,
            pool_busy=load.busy / max(load.workers, 1) if load else 0.0,
            pool_available=load.available if load else False,
            pool_saturated=load.saturated if load else False,
            inflight=self.inflight,
            pool_warm=tenant is None or self.pools.is_warm(tenant),
        )
