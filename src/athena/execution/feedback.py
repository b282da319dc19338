"""The feedback loop: every recall becomes a telemetry row that teaches the planner.

Rows feed the dependency graph (layer costs, contributions, cache worthiness) and the
selector's cost models; the graph is saved every few hundred recalls (off the recall's
path) and on close, and both are restored at start.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Final

from athena.execution.checkpoint import Checkpoint
from athena.execution.telemetry import Telemetry, TelemetryRow
from athena.planning.dependency_graph import DependencyGraph
from athena.planning.selector import Decision, Situation, Strategy, StrategySelector
from athena.records import RecallQuery
from athena.store.protocol import Store

SETTLE_AT: Final = 256  # noted hits counted at once on a hit's path, at most (about 1 ms)

Noted = tuple[float, str, str, tuple[str, ...], float, int, float]


class NotedHits:
    """Full cache hits noted on the hit's path (one append) and counted later, together.

    >>> counted = []
    >>> hits = NotedHits(counted.append)
    >>> hits.note((0.0, "t", "factual", ("semantic",), 1.0, 3, 0.02)); hits.settle()
    >>> len(counted), len(hits)
    (1, 0)
    """

    def __init__(self, count: Callable[[Noted], None]) -> None:
        self._noted: deque[Noted] = deque()
        self._count = count
        self._lock = threading.RLock()

    def __len__(self) -> int:
        return len(self._noted)

    def note(self, hit: Noted) -> None:
        """Note one hit; past :data:`SETTLE_AT` waiting, count them all now."""
        noted = self._noted
        noted.append(hit)
        if len(noted) >= SETTLE_AT:
            self.settle()

    def settle(self) -> None:
        """Count every hit noted before this call. One thread counts at a time, and a
        caller waits for a count in progress, so none it noted is still in flight when it
        returns; it counts only what waited when it began (more may be noted meanwhile)."""
        with self._lock:
            noted, count = self._noted, self._count
            for _ in range(len(noted)):
                count(noted.popleft())


class Feedback:
    """Records what each recall did and cost, and learns from it."""

    def __init__(self, store: Store, graph: DependencyGraph, selector: StrategySelector) -> None:
        self.store = store
        self.graph = graph
        self.selector = selector
        self.telemetry = Telemetry(store)
        self.telemetry.settle = self.settle
        self._noted = NotedHits(self._count_hit)  # full cache hits not counted yet
        # Restores the graph and saves it every few hundred recalls (counted by recorded()).
        self._checkpoint = Checkpoint(store, graph, selector, self.telemetry, self.settle)

    def restore(self) -> None:
        """Reload the saved graph, and replay saved telemetry into the selector."""
        self._checkpoint.restore()

    def save(self) -> None:
        """Flush telemetry and persist the dependency graph."""
        self._checkpoint.save()

    def served(
        self, query: RecallQuery, query_type: str, confidence: float, hits: int, actual_ms: float
    ) -> None:
        """A full cache hit: noted now (one append), counted by :meth:`settle`.

        Counting a hit (the graph's cache worthiness, a telemetry row, the selector's
        history, the save schedule) took 12 µs of a 42 µs hit measured right after another
        engine's recall, most of it in reaching a dozen cold objects; counted together, the
        hits cost a fraction of that, off the hit's timer. Whatever reports the counts (the
        telemetry's rows and count, stats, save) settles first, and so does every executed
        or failed recall before it records itself; the graph's layer choice may run up to
        :data:`SETTLE_AT` hits behind.
        """
        self._noted.note(
            (time.time(), query.tenant, query_type, query.layers, confidence, hits, actual_ms)
        )

    def settle(self) -> None:
        """Count the noted cache hits (from any thread; see :meth:`NotedHits.settle`).

        >>> # feedback.served(query, "factual", 1.0, 10, 0.02); feedback.settle()
        """
        self._noted.settle()

    def _count_hit(self, hit: Noted) -> None:
        at, tenant, query_type, layers, confidence, hits, actual_ms = hit
        self.graph.observe_hit(query_type, hits, actual_ms)
        self.telemetry.record_hit(tenant, query_type, layers, confidence, actual_ms, at)
        self.selector.served()
        self._checkpoint.recorded()

    def executed(
        self,
        query: RecallQuery,
        query_type: str,
        decision: Decision,
        strategy: Strategy,
        situation: Situation,
        cache: str,
        layers_ms: Mapping[str, float],
        contributed: set[str],
        fallback: str | None,
        hits: int,
        actual_ms: float,
        forced: bool,
        built: bool = False,
    ) -> None:
        """An executed recall: the graph learns layer costs and contributions; the strategy
        that ran learns its cost, unless the cache muddied the measurement or the recall
        ``built`` an index (a one-off that would make its strategy look slow for hundreds of
        recalls: it once kept the adaptive arm on PARALLEL, 1.7x slower). A fallback from
        the pool teaches DISTRIBUTED what choosing it cost (the wait, then the fallback):
        without that, a pool that times out every task would be chosen again and again."""
        self.settle()
        self.graph.observe(
            query_type,
            layers_ms or dict.fromkeys(query.layers, 0.0),
            contributed,
            cache == "hit",
            hits,
            actual_ms,
            timed=strategy is Strategy.SEQUENTIAL and not fallback and not built,
        )
        if built or cache != "miss":
            pass  # a build's one-off cost, or a cache-muddied one, teaches no strategy
        elif not fallback:
            self.selector.learn(strategy, situation, actual_ms)
        elif decision.strategy is Strategy.DISTRIBUTED:
            self.selector.learn(Strategy.DISTRIBUTED, situation, actual_ms)
        # A built recall keeps no features, so a restart does not replay its cost either.
        features = () if built else situation.features()
        row = _row(
            query,
            query_type,
            strategy.value,
            decision,
            decision.confidence,
            actual_ms,
            cache,
            layers_ms,
            tuple(sorted(contributed)),
            fallback,
            True,
            features,
            forced,
        )
        self.telemetry.record(row)
        self._checkpoint.recorded()

    def failed(
        self,
        query: RecallQuery,
        query_type: str,
        strategy: str,
        actual_ms: float,
        error: BaseException,
    ) -> None:
        """A recall that raised: recorded with success false (the error is re-raised)."""
        self.settle()
        decision = Decision(Strategy.SEQUENTIAL, 0.0, type(error).__name__, 0.0, 1.0)
        row = _row(
            query,
            query_type,
            strategy,
            decision,
            0.0,
            actual_ms,
            "miss",
            {},
            (),
            f"{type(error).__name__}: {error}"[:200],
            False,
            (),
            strategy != "adaptive",
        )
        self.telemetry.record(row)
        self._checkpoint.recorded()


def _row(
    query: RecallQuery,
    query_type: str,
    strategy: str,
    decision: Decision,
    confidence: float,
    actual_ms: float,
    cache: str,
    layers_ms: Mapping[str, float],
    contributed: tuple[str, ...],
    fallback: str | None,
    success: bool,
    features: tuple[float, ...],
    forced: bool,
) -> TelemetryRow:
    """One recall's telemetry row, stamped now."""
    sequential = sum(layers_ms.values()) or decision.estimated_ms
    return TelemetryRow(
        at=time.time(),
        tenant=query.tenant,
        query_type=query_type,
        strategy=strategy,
        confidence=confidence,
        estimated_ms=decision.estimated_ms,
        actual_ms=actual_ms,
        cache=cache,
        layers_ms=dict(layers_ms),
        layers=query.layers,
        contributed=contributed,
        speedup_estimated=decision.estimated_speedup,
        speedup_actual=sequential / actual_ms if actual_ms else 1.0,
        fallback=fallback,
        success=success,
        features=features,
        forced=forced,
    )
