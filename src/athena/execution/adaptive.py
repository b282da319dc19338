"""The adaptive engine: analyse → choose layers and strategy → execute → aggregate → learn.

Every recall goes through here (the facade's default). Forcing a strategy is for
benchmarks and checks: the same stored state gives the same hits whatever runs them.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import replace
from typing import Any, Final

from athena.errors import InvalidInput, WorkerPoolUnavailable
from athena.execution.admission import AdmissionGate, default_slots
from athena.execution.aggregate import ResultAggregator
from athena.execution.backend import WorkerBackend
from athena.execution.cache import CachedHits, ResultCache
from athena.execution.feedback import Feedback
from athena.execution.parallel import ParallelExecutor
from athena.execution.pipeline import Pipeline, Recall
from athena.execution.recall_run import RecallRun, served_explain
from athena.planning.analysis import classify
from athena.planning.dependency_graph import DependencyGraph
from athena.planning.selector import Situation, StrategySelector
from athena.records import LAYERS, Hit, RecallQuery
from athena.store.protocol import Store

POOL_REBUILD_S: Final = 5.0  # the shortest gap between two rebuilds of a broken pool
# Index rows a recall may apply (a catch-up after a few writes) and still teach its cost.
BUILD_ROWS: Final = 256
NARROWED_KEPT: Final = 4096  # queries kept narrowed to the layers the graph selects
PLANS_KEPT: Final = 4096  # plans of recent query objects, per kind (adaptive or not)

# A query object's plan: (the query, the graph's version, its type, the layers asked, the
# query to run, its full cache key).
Plan = tuple[RecallQuery, int, str, tuple[str, ...], RecallQuery, Hashable]
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
        self.parallel = ParallelExecutor(pipeline, threads)
        self.admission = admission or AdmissionGate(default_slots())
        self.aggregator = ResultAggregator()
        self._backend_factory = backend
        self._backend: WorkerBackend | None = None
        self._backend_error: str | None = None
        self._lock = threading.Lock()
        self._pool_lock = threading.Lock()  # held while the pool starts (seconds)
        self._inflight = 0
        self._rebuilding, self._rebuilt_at, self._closed = False, float("-inf"), False
        self.pool_rebuilds = 0
        self._narrow: dict[tuple[RecallQuery, tuple[str, ...]], RecallQuery] = {}
        self._plans: tuple[dict[int, Plan], dict[int, Plan]] = ({}, {})  # other, adaptive
        self.feedback.restore()
        if eager_pool and backend is not None:
            threading.Thread(target=self._pool, name="athena-pool-start", daemon=True).start()

    def save(self) -> None:
        """Flush telemetry and persist the dependency graph."""
        self.feedback.save()

    # -- the pool ---------------------------------------------------------------------------

    def _pool(self) -> WorkerBackend | None:
        """The worker pool, started on first use (never per recall); None if it cannot run.

        A pool that broke after it ran is rebuilt on a background thread, at most once per
        ``POOL_REBUILD_S``; until the new one is up, recalls fall back without waiting.
        """
        backend = self._backend
        if backend is not None and backend.broken:
            self._rebuild(backend)
        if self._backend is not None or self._backend_factory is None:
            return self._backend
        with self._pool_lock:
            if self._backend is None and self._backend_error is None:
                backend = self._backend_factory()
                try:
                    backend.start()
                    self._backend = backend
                except WorkerPoolUnavailable as exc:
                    self._backend_error = str(exc)
                    backend.close()
        return self._backend

    def _rebuild(self, broken: WorkerBackend) -> None:
        now = time.monotonic()
        with self._lock:
            if self._rebuilding or now - self._rebuilt_at < POOL_REBUILD_S:
                return
            self._rebuilding, self._rebuilt_at = True, now
        threading.Thread(
            target=self._replace_pool, args=(broken,), name="athena-pool-rebuild", daemon=True
        ).start()

    def _replace_pool(self, broken: WorkerBackend) -> None:
        assert self._backend_factory is not None
        try:
            fresh = self._backend_factory()
            try:
                fresh.start()
            except WorkerPoolUnavailable:
                fresh.close()  # the broken one stays; the next rebuild may succeed
                return
            with self._pool_lock:
                swapped = self._backend is broken and not self._closed
                if swapped:
                    self._backend, self.pool_rebuilds = fresh, self.pool_rebuilds + 1
            (broken if swapped else fresh).close()  # whichever pool is not in use
        finally:
            with self._lock:
                self._rebuilding = False

    def _situation(
        self, layers: tuple[str, ...], cached_fraction: float, *, light: bool = False
    ) -> Situation:
        backend = None if light else self._backend
        load = backend.load() if backend is not None else None
        return Situation(
            layers=len(layers),
            sequential_ms=self.graph.estimate_ms(layers),
            parallel_benefit=self.graph.parallel_benefit(layers),
            cached_fraction=cached_fraction,
            queue_depth=load.queue_depth if load else 0,
            pool_busy=load.busy / max(load.workers, 1) if load else 0.0,
            pool_available=load.available if load else False,
            pool_saturated=load.saturated if load else False,
            inflight=self._inflight,
        )

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
        if strategy not in STRATEGIES:
            raise InvalidInput(
                f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}"
            )
        start = time.perf_counter()
        query_type, asked, query, key = self._plan_layers(query, strategy)
        if strategy in ("adaptive", "cache", "hybrid"):
            full = self.cache.get_full(query, self.model, generations, key)
            if full is not None:
                return self._served(query, query_type, asked, full, start, explain)
        with self._lock:
            self._inflight += 1
        loaded = self.pipeline.ctx.loaded()
        try:
            run = RecallRun(self, query, generations, strategy, timeout, query_type)
            hits = run.execute()
        except BaseException as exc:
            actual = (time.perf_counter() - start) * 1000.0
            self.feedback.failed(query, query_type, strategy, actual, exc)
            raise
        finally:
            with self._lock:
                self._inflight -= 1
        actual = (time.perf_counter() - start) * 1000.0
        # The wait for an execution slot is load, not the strategy's cost: it is not learnt.
        cost = actual - run.queued_ms
        # A recall that built an index (a tenant's first, or a catch-up after a bulk import)
        # is recorded, but its cost teaches neither the selector nor the layer timings. Pool
        # workers build their own: a worker new to a tenant took 21-54 ms for a DISTRIBUTED
        # recall that took 4 ms once it had the tenant's indexes (100k-tenants, static).
        remote = sum(r.loaded for r in run.fresh.values() if r.source == "distributed")
        built = self.pipeline.ctx.loaded() - loaded + remote > BUILD_ROWS
        self._learn(run, hits, cost, built)
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
        It is exactly the first step of :meth:`recall`, so both return the same hits.
        """
        if strategy not in ("adaptive", "cache", "hybrid"):
            return None
        start = time.perf_counter()
        query_type, asked, query, key = self._plan_layers(query, strategy)
        full = self.cache.get_full(query, self.model, generations, key)
        if full is None:
            return None
        return self._served(query, query_type, asked, full, start, explain)

    def _plan_layers(
        self, query: RecallQuery, strategy: str
    ) -> tuple[str, tuple[str, ...], RecallQuery, Hashable]:
        """The query type, the layers asked for, the query over the layers to run, and its
        full cache key.

        Kept per query object (``Memory`` hands out one object per repeated plain request)
        while the dependency graph's layer choices stand: the adaptive arm's hit paid for
        the choice and the key on every repeat, 5-20% over the other caching arms' hit in
        run 16. The kept plan holds its query, so an id is never mistaken for another's.
        """
        adaptive = strategy == "adaptive"
        plans = self._plans[adaptive]
        plan = plans.get(id(query))
        version = self.graph.version
        if plan is not None and plan[0] is query and plan[1] == version:
            return plan[2], plan[3], plan[4], plan[5]
        query_type, asked, run = classify(query.text), query.layers, query
        if adaptive and asked == LAYERS:
            chosen = self.graph.select_layers(query_type, asked)
            if chosen != asked:
                run = self._narrowed(query, chosen)
        key = self.cache.full_key(run, self.model)
        if len(plans) >= PLANS_KEPT:
            plans.clear()
        plans[id(query)] = (query, version, query_type, asked, run, key)
        return query_type, asked, run, key

    def _narrowed(self, query: RecallQuery, layers: tuple[str, ...]) -> RecallQuery:
        """``query`` over ``layers`` only, the same object each time it is asked again:
        ``dataclasses.replace`` cost 3 µs on every adaptive cache hit once the graph had
        learned to skip a layer (run 12: the adaptive arm's hit 1.4x HYBRID's there)."""
        key = (query, layers)
        narrowed = self._narrow.get(key)
        if narrowed is None:
            narrowed = replace(query, layers=layers)
            if len(self._narrow) >= NARROWED_KEPT:
                self._narrow.clear()
            self._narrow[key] = narrowed
        return narrowed

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

    def _learn(self, run: RecallRun, hits: tuple[Hit, ...], actual_ms: float, built: bool) -> None:
        ids = {hit.id for hit in hits}
        contributed = {name for name, r in run.results.items() if ids.intersection(r.ids)}
        decision = run.decision
        assert decision is not None
        self.feedback.executed(
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

    def gauges(self) -> dict[str, Any]:
        backend = self._backend
        pool: dict[str, Any] = backend.health() if backend is not None else {"started": False}
        if self._backend_error:
            pool["error"] = self._backend_error
        pool["rebuilds"] = self.pool_rebuilds
        return {"pool": pool, "admission": self.admission.stats()}

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
            with self._pool_lock:
                self._closed = True
            if self._backend is not None:
                self._backend.close()
