"""The adaptive engine: analyse → choose layers and strategy → execute → aggregate → learn.

Every recall goes through here (the facade's default). Forcing a strategy is for
benchmarks and checks: the same stored state gives the same hits whatever runs them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, Final

from athena.errors import InvalidInput
from athena.execution.admission import AdmissionGate, default_slots
from athena.execution.aggregate import ResultAggregator
from athena.execution.backend import WorkerBackend
from athena.execution.cache import ResultCache
from athena.execution.cache_keys import CachedHits
from athena.execution.feedback import Feedback
from athena.execution.parallel import ParallelExecutor
from athena.execution.pipeline import Pipeline, Recall
from athena.execution.plans import RecallPlans
from athena.execution.pool_keeper import PoolKeeper
from athena.execution.pool_warmth import BUILD_ROWS
from athena.execution.recall_run import RecallRun, served_explain
from athena.execution.situations import Situations
from athena.planning.dependency_graph import DependencyGraph
from athena.planning.selector import StrategySelector
from athena.records import Hit, RecallQuery
from athena.store.protocol import Store

STRATEGIES: Final = ("adaptive", "sequential", "parallel", "distributed", "cache", "hybrid")


class AdaptiveEngine:
    """Plans and runs recalls; see the module docstring."""

    def __init__(
        self,
        pipeline: Pipeline,
        store: Store,
        *,
        cache: ResultCache | None = None,
        backend: Callable[[], WorkerBackend] | None = None,
        eager_pool: bool = False,
        selector: StrategySelector | None = None,
        graph: DependencyGraph | None = None,
        threads: int = 4,
        admission: AdmissionGate | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.store = store
        self.model = pipeline.embedder.name
        self.cache = cache if cache is not None else ResultCache()
        self.graph = graph or DependencyGraph(cores=os.cpu_count() or 1)
        self.selector = selector or StrategySelector()
        self.feedback = Feedback(store, self.graph, self.selector)
        self.telemetry = self.feedback.telemetry
        # The same cores the graph's parallel benefit assumes: one share of layers per core.
        self.parallel = ParallelExecutor(
            pipeline, threads, known=self.graph.learned_ms, cores=self.graph.cores
        )
        self.admission = admission or AdmissionGate(default_slots())
        self.aggregator = ResultAggregator()
        self.plans = RecallPlans(self.graph, self.cache, self.model)
        self.feedback.restore()
        self.pools = PoolKeeper(backend, eager=eager_pool)
        self.situations = Situations(self.graph, self.pools)  # and the recalls in flight

    def save(self) -> None:
        """Flush telemetry and persist the dependency graph."""
        self.feedback.save()

    # -- recall -----------------------------------------------------------------------------

    def recall(
        self,
        query: RecallQuery,
        generations: dict[str, int],
        *,
        strategy: str = "adaptive",
        explain: bool = False,
        timeout: float | None = None,
    ) -> Recall:
        check_strategy(strategy)
        start = time.perf_counter()
        query_type, asked, query, key = self.plans.plan(query, strategy)
        if strategy in ("adaptive", "cache", "hybrid"):
            full = self.cache.get_full(query, self.model, generations, key)
            if full is not None:
                return self._served(query, query_type, asked, full, start, explain)
        self.situations.enter()
        loaded = self.pipeline.ctx.loaded()
        try:
            run = RecallRun(self, query, generations, strategy, timeout, query_type, key)
            hits = run.execute()
        except BaseException as exc:
            actual = (time.perf_counter() - start) * 1000.0
            self.feedback.failed(query, query_type, strategy, actual, exc)
            raise
        finally:
            self.situations.leave()
        actual = (time.perf_counter() - start) * 1000.0
        # The wait for an execution slot is load, not the strategy's cost: it is not learnt.
        cost = actual - run.queued_ms
        # A recall that built an index (a tenant's first, or a catch-up after a bulk import)
        # is recorded, but its cost teaches neither the selector nor the layer timings. Pool
        # workers build their own: a worker new to a tenant took 21-54 ms for a DISTRIBUTED
        # recall that took 4 ms once it had the tenant's indexes (100k-tenants, static).
        remote = sum(r.loaded for r in run.fresh.values() if r.source == "distributed")
        built = self.pipeline.ctx.loaded() - loaded + remote > BUILD_ROWS
        _learn(self.feedback, run, hits, cost, built)
        details = run.explain(actual, asked) if explain else None
        return Recall(hits=hits, explain=details)

    def cached(
        self,
        query: RecallQuery,
        generations: dict[str, int],
        *,
        strategy: str = "adaptive",
        explain: bool = False,
    ) -> Recall | None:
        """The recall if a valid full cache hit answers it (microseconds), else None.

        For callers on an event loop: a hit is served inline, only a miss pays for a thread.
        It answers as the first step of :meth:`recall` would, so both return the same hits.
        A question with nothing kept under its text is not planned here but by the recall
        that follows on a thread: a first-sight miss took the loop 21.6 µs p50, 7.4 without
        the plan (its type read by regular expressions, its layers, its key; stop 43).
        """
        if strategy not in ("adaptive", "cache", "hybrid"):
            check_strategy(strategy)  # refused here as recall refuses it
            return None
        if not self.cache.may_hold(query):
            return None
        start = time.perf_counter()
        query_type, asked, query, key = self.plans.plan(query, strategy)
        full = self.cache.get_full(query, self.model, generations, key)
        if full is None:
            return None
        return self._served(query, query_type, asked, full, start, explain)

    def _served(
        self,
        query: RecallQuery,
        query_type: str,
        asked: tuple[str, ...],
        full: CachedHits,
        start: float,
        explain: bool,
    ) -> Recall:
        """A valid full cache hit: the short-circuit path, kept to a few dozen µs.

        Nothing is planned for a hit: the selector's CACHE decision (its reasoning and a
        sequential estimate) is built only when ``explain`` asks for it.
        """
        actual = (time.perf_counter() - start) * 1000.0
        self.feedback.served(query, query_type, full.confidence, len(full.value), actual)
        details = None
        if explain:
            sequential = self.graph.estimate_ms(query.layers)
            decision = self.selector.for_cache(True, sequential, 1.0, 0.0, record=False)
            details = served_explain(query, query_type, asked, full, decision, actual)
        return Recall(hits=full.value, explain=details)

    def pool_ready(self) -> bool:
        """See :meth:`~athena.execution.protocol.RecallEngine.pool_ready`."""
        return self.pools.ready()

    def gauges(self) -> dict[str, Any]:
        return {"pool": self.pools.health(), "admission": self.admission.stats()}

    def stats(self) -> dict[str, Any]:
        self.feedback.settle()  # the graph and the selector count the hits noted so far
        return {
            "cache": self.cache.stats(),
            **self.gauges(),
            "telemetry": self.telemetry.summary(),
            "selector": self.selector.snapshot(),
            "graph": self.graph.snapshot(),
        }

    def close(self) -> None:
        try:
            self.save()
        finally:
            self.parallel.close()
            self.pools.close()


def _learn(
    feedback: Feedback, run: RecallRun, hits: tuple[Hit, ...], actual_ms: float, built: bool
) -> None:
    """Teach the graph and the selector what ``run`` did and cost (see Feedback.executed)."""
    ids = {hit.id for hit in hits}
    contributed = {name for name, r in run.results.items() if ids.intersection(r.ids)}
    decision = run.decision
    assert decision is not None
    feedback.executed(
        run.query,
        run.query_type,
        decision,
        run.executed or decision.strategy,
        run.situation,
        run.cache_state,
        {n: r.elapsed_ms for n, r in run.fresh.items()},
        contributed,
        run.fallback,
        len(hits),
        actual_ms,
        run.strategy != "adaptive",
        built,
    )


def check_strategy(strategy: str) -> None:
    """InvalidInput unless ``strategy`` is one a recall may ask for.

    >>> check_strategy("parallel")
    """
    if strategy not in STRATEGIES:
        raise InvalidInput(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
