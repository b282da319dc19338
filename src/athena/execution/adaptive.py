"""The adaptive engine: analyse → choose layers and strategy → execute → aggregate → learn.

Every recall goes through here (the facade's default). Forcing a strategy is for
benchmarks and checks: the same stored state gives the same hits whatever runs them.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, Final

from athena.errors import AthenaError, InvalidInput, RecallTimeout, WorkerPoolUnavailable
from athena.execution.aggregate import ResultAggregator
from athena.execution.backend import WorkerBackend
from athena.execution.cache import CachedHits, ResultCache
from athena.execution.parallel import ParallelExecutor
from athena.execution.pipeline import Pipeline, Recall
from athena.execution.telemetry import Telemetry, TelemetryRow
from athena.layers.protocol import LayerResult, SearchRequest
from athena.planning.analysis import QueryAnalysis, classify
from athena.planning.dependency_graph import DependencyGraph
from athena.planning.selector import Decision, Situation, Strategy, StrategySelector
from athena.records import LAYERS, Hit, RecallQuery
from athena.store.protocol import Store

STRATEGIES: Final = ("adaptive", "sequential", "parallel", "distributed", "cache", "hybrid")
GRAPH_STATE: Final = "dependency_graph"
SAVE_EVERY: Final = 500
DISTRIBUTED_TIMEOUT: Final = 10.0


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
    ) -> None:
        self.pipeline = pipeline
        self.store = store
        self.model = pipeline.embedder.name
        self.cache = cache if cache is not None else ResultCache()
        self.graph = graph or DependencyGraph(cores=os.cpu_count() or 1)
        self.selector = selector or StrategySelector()
        self.telemetry = Telemetry(store)
        self.parallel = ParallelExecutor(pipeline, threads)
        self.aggregator = ResultAggregator()
        self._backend_factory = backend
        self._backend: WorkerBackend | None = None
        self._backend_error: str | None = None
        self._lock = threading.Lock()
        self._inflight = 0
        self._since_save = 0
        self._restore()
        if eager_pool and backend is not None:
            threading.Thread(target=self._pool, name="athena-pool-start", daemon=True).start()

    # -- learning state ---------------------------------------------------------------------

    def _restore(self) -> None:
        saved = self.store.load_state(GRAPH_STATE)
        if saved:
            self.graph.load_json(saved)
        for row in self.telemetry.load():
            if row.features and row.cache == "miss" and not row.fallback:
                self.selector.learn(Strategy(row.strategy), _situation_from(row), row.actual_ms)

    def save(self) -> None:
        """Flush telemetry and persist the dependency graph."""
        self.telemetry.flush()
        self.store.save_state(GRAPH_STATE, self.graph.to_json())

    # -- the pool ---------------------------------------------------------------------------

    def _pool(self) -> WorkerBackend | None:
        """The worker pool, started on first use (never per recall); None if it cannot run."""
        if self._backend is not None or self._backend_factory is None:
            return self._backend
        with self._lock:
            if self._backend is None and self._backend_error is None:
                backend = self._backend_factory()
                try:
                    backend.start()
                    self._backend = backend
                except WorkerPoolUnavailable as exc:
                    self._backend_error = str(exc)
                    backend.close()
        return self._backend

    def _situation(
        self, layers: tuple[str, ...], cached_fraction: float, *, light: bool = False
    ) -> Situation:
        backend = None if light else self._backend
        health = backend.health() if backend is not None else {}
        workers = max(int(health.get("workers", 0)), 1)
        return Situation(
            layers=len(layers),
            sequential_ms=self.graph.estimate_ms(layers),
            parallel_benefit=self.graph.parallel_benefit(layers),
            cached_fraction=cached_fraction,
            queue_depth=int(health.get("queue_depth", 0)),
            pool_busy=float(health.get("busy", 0)) / workers,
            pool_available=backend is not None and backend.available,
            pool_saturated=backend is not None and backend.saturated,
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
        query_type = classify(query.text)
        asked = query.layers
        if strategy == "adaptive" and asked == LAYERS:
            chosen = self.graph.select_layers(query_type, asked)
            if chosen != asked:
                query = replace(query, layers=chosen)
        if strategy in ("adaptive", "cache", "hybrid"):
            full = self.cache.get_full(query, self.model, generations)
            if full is not None:
                return self._served(query, query_type, asked, full, start, explain)
        with self._lock:
            self._inflight += 1
        try:
            run = _Run(self, query, generations, strategy, timeout, query_type)
            hits = run.execute()
        finally:
            with self._lock:
                self._inflight -= 1
        actual = (time.perf_counter() - start) * 1000.0
        self._learn(run, hits, actual)
        details = run.explain(actual, asked) if explain else None
        return Recall(hits=hits, explain=details)

    def _served(
        self,
        query: RecallQuery,
        query_type: str,
        asked: tuple[str, ...],
        full: CachedHits,
        start: float,
        explain: bool,
    ) -> Recall:
        """A valid full cache hit: the short-circuit path, kept to a few dozen µs."""
        sequential = self.graph.estimate_ms(query.layers)
        decision = self.selector.for_cache(True, sequential, 1.0, 0.0)
        actual = (time.perf_counter() - start) * 1000.0
        self.graph.observe(query_type, {}, set(), True, len(full.value), actual)
        self.telemetry.record(
            TelemetryRow(
                at=time.time(),
                tenant=query.tenant,
                query_type=query_type,
                strategy="cache",
                confidence=full.confidence,
                estimated_ms=0.0,
                actual_ms=actual,
                cache="hit",
                layers_ms={},
                layers=query.layers,
                contributed=(),
                speedup_estimated=decision.estimated_speedup,
                speedup_actual=sequential / actual if actual else 1.0,
                fallback=None,
                success=True,
            )
        )
        self._count_for_save()
        details = None
        if explain:
            details = {
                "strategy": "cache",
                "executed": "cache",
                "reasoning": decision.reasoning,
                "confidence": 1.0,
                "estimated_ms": 0.0,
                "estimated_speedup": round(decision.estimated_speedup, 3),
                "actual_ms": round(actual, 3),
                "cache": "hit",
                "result_confidence": round(full.confidence, 4),
                "cache_age_s": round(full.age_s, 3),
                "layers": dict.fromkeys(query.layers, 0.0),
                "cached_layers": list(query.layers),
                "skipped_layers": sorted(set(asked) - set(query.layers)),
                "query_type": query_type,
                "fallback": None,
            }
        return Recall(hits=full.value, explain=details)

    def _count_for_save(self) -> None:
        with self._lock:
            self._since_save += 1
            due = self._since_save >= SAVE_EVERY
            if due:
                self._since_save = 0
        if due:  # off the recall's path: a save is a write transaction
            threading.Thread(target=self._save_quietly, name="athena-save", daemon=True).start()

    def _save_quietly(self) -> None:
        with contextlib.suppress(AthenaError):  # the store is closing; close() saves again
            self.save()

    def _learn(self, run: _Run, hits: tuple[Hit, ...], actual_ms: float) -> None:
        ids = {hit.id for hit in hits}
        contributed = {name for name, r in run.results.items() if ids.intersection(r.ids)}
        decision = run.decision
        assert decision is not None
        fresh_ms = {name: r.elapsed_ms for name, r in run.fresh.items()}
        self.graph.observe(
            run.query_type,
            fresh_ms or dict.fromkeys(run.query.layers, 0.0),
            contributed,
            run.cache_state == "hit",
            len(hits),
            actual_ms,
        )
        executed = run.executed
        if run.cache_state == "miss" and executed is not None and not run.fallback:
            self.selector.learn(executed, run.situation, actual_ms)
        sequential = sum(fresh_ms.values()) or decision.estimated_ms
        self.telemetry.record(
            TelemetryRow(
                at=time.time(),
                tenant=run.query.tenant,
                query_type=run.query_type,
                strategy=(executed or decision.strategy).value,
                confidence=decision.confidence,
                estimated_ms=decision.estimated_ms,
                actual_ms=actual_ms,
                cache=run.cache_state,
                layers_ms=fresh_ms,
                layers=run.query.layers,
                contributed=tuple(sorted(contributed)),
                speedup_estimated=decision.estimated_speedup,
                speedup_actual=sequential / actual_ms if actual_ms else 1.0,
                fallback=run.fallback,
                success=True,
                features=tuple(run.situation.features().tolist()),
                forced=run.strategy != "adaptive",
            )
        )
        self._count_for_save()

    def stats(self) -> dict[str, Any]:
        backend = self._backend
        pool: dict[str, Any] = backend.health() if backend is not None else {"started": False}
        if self._backend_error:
            pool["error"] = self._backend_error
        return {
            "cache": self.cache.stats(),
            "pool": pool,
            "telemetry": self.telemetry.summary(),
            "selector": self.selector.snapshot(),
            "graph": self.graph.snapshot(),
        }

    def close(self) -> None:
        try:
            self.save()
        finally:
            self.parallel.close()
            if self._backend is not None:
                self._backend.close()


def _situation_from(row: TelemetryRow) -> Situation:
    f = row.features
    return Situation(int(f[1]), f[2], 1.0, 0.0, int(f[3]), f[4], True, False, int(f[5]))


class _Run:
    """The state of one recall while it executes."""

    def __init__(
        self,
        engine: AdaptiveEngine,
        query: RecallQuery,
        generations: dict[str, int],
        strategy: str,
        timeout: float | None,
        query_type: str,
    ) -> None:
        self.engine = engine
        self.query = query
        self.generations = generations
        self.strategy = strategy
        self.timeout = timeout
        self.query_type = query_type
        self.decision: Decision | None = None
        self.executed: Strategy | None = None
        self.situation = engine._situation(query.layers, 0.0, light=True)
        self.cache_state = "miss"
        self.fallback: str | None = None
        self.results: Mapping[str, LayerResult] = {}
        self.fresh: dict[str, LayerResult] = {}
        self.cached_ms: dict[str, float] = {}
        self.analysis: QueryAnalysis | None = None
        self.confidence = 1.0

    def execute(self) -> tuple[Hit, ...]:
        engine, query = self.engine, self.query
        if self.strategy in ("adaptive", "cache", "hybrid"):  # the full hit was tried before
            key = engine.cache.flight_key(query, engine.model, self.generations)
            hits = engine.cache.single_flight(key, self._compute)
            if self.decision is None:  # another thread computed it for us (single-flight)
                self.cache_state = "hit"
                self.decision = replace(
                    engine.selector.for_cache(True, self.situation.sequential_ms, 1.0, 0.0),
                    reasoning="shared the execution of a concurrent identical recall",
                )
            return hits
        return self._compute()

    def _compute(self) -> tuple[Hit, ...]:
        engine, query = self.engine, self.query
        depth = self.engine.pipeline.request_depth(query)
        cached: dict[str, Any] = {}
        uses_cache = self.strategy in ("adaptive", "cache", "hybrid")
        if self.strategy in ("adaptive", "hybrid"):
            cached = engine.cache.get_layers(query, engine.model, depth, self.generations)
            engine.cache.record_partial(cached.values())
        elif uses_cache:
            engine.cache.record_miss()
        missing = tuple(name for name in query.layers if name not in cached)
        self.situation = engine._situation(missing, len(cached) / len(query.layers))
        self.analysis = QueryAnalysis(
            query_type=self.query_type,
            layers=query.layers,
            estimated_ms=engine.graph.estimate_ms(query.layers),
            cached_fraction=self.situation.cached_fraction,
            length=len(query.text),
        )
        if cached:
            self.cache_state = "partial" if missing else "hit"
            self.decision = engine.selector.for_cache(
                not missing, self.situation.sequential_ms, self.situation.cached_fraction, 0.0
            )
            inner = self._choose(missing) if missing else None
        else:
            self.decision = self._decide(missing)
            inner = self.decision.strategy
        self.executed = inner
        if missing and inner is not None:
            request = engine.pipeline.request(query, self.generations)
            self.fresh = self._run(inner, request, missing)
        results, self.confidence = engine.aggregator.merge(
            [
                (
                    {n: c.value for n, c in cached.items()},
                    {n: c.confidence for n, c in cached.items()},
                ),
                (self.fresh, {}),
            ]
        )
        self.results = results
        hits = engine.pipeline.hits(query, results)
        if uses_cache:  # forced executing strategies neither read nor fill the cache
            for result in self.fresh.values():
                engine.cache.put_layer(
                    query, engine.model, depth, result, self.generations, result.elapsed_ms
                )
            cost = sum(r.elapsed_ms for r in self.fresh.values())
            engine.cache.put_full(query, engine.model, self.generations, hits, cost)
        return hits

    def _decide(self, layers: tuple[str, ...]) -> Decision:
        forced = {
            "sequential": Strategy.SEQUENTIAL,
            "parallel": Strategy.PARALLEL,
            "distributed": Strategy.DISTRIBUTED,
        }.get(self.strategy)
        if forced is None:  # adaptive, or cache/hybrid that found nothing cached
            return self.engine.selector.decide(self.situation)
        if forced is Strategy.DISTRIBUTED:
            self.engine._pool()
        estimate, _ = self.engine.selector.predict(forced, self.situation)
        return Decision(forced, 1.0, f"forced {forced.value}", estimate, 1.0)

    def _choose(self, layers: tuple[str, ...]) -> Strategy:
        return self._decide(layers).strategy

    def _run(
        self, strategy: Strategy, request: SearchRequest, layers: tuple[str, ...]
    ) -> dict[str, LayerResult]:
        engine = self.engine
        if strategy is Strategy.DISTRIBUTED:
            backend = engine._pool()
            if backend is None:
                self.fallback = f"pool unavailable: {engine._backend_error or 'not configured'}"
            else:
                try:
                    return backend.run(request, layers, timeout=self.timeout or DISTRIBUTED_TIMEOUT)
                except (WorkerPoolUnavailable, RecallTimeout) as exc:
                    self.fallback = f"pool failed: {exc}"
            self.executed = Strategy.PARALLEL
            strategy = Strategy.PARALLEL
        if strategy is Strategy.PARALLEL and len(layers) > 1:
            return engine.parallel.run(request, layers, self.timeout)
        start = time.monotonic()
        out = {}
        for name in layers:
            out[name] = engine.pipeline.run(name, request, "sequential")
            if self.timeout is not None and time.monotonic() - start > self.timeout:
                raise RecallTimeout(f"recall exceeded its {self.timeout}s timeout")
        return out

    def explain(self, actual_ms: float, asked: tuple[str, ...]) -> dict[str, Any]:
        decision = self.decision
        assert decision is not None
        layers_ms: dict[str, float] = {
            name: round(self.fresh[name].elapsed_ms, 3) if name in self.fresh else 0.0
            for name in self.query.layers
        }
        return {
            "strategy": decision.strategy.value,
            "executed": (self.executed or decision.strategy).value,
            "reasoning": decision.reasoning,
            "confidence": round(decision.confidence, 4),
            "estimated_ms": round(decision.estimated_ms, 3),
            "estimated_speedup": round(decision.estimated_speedup, 3),
            "actual_ms": round(actual_ms, 3),
            "cache": self.cache_state,
            "result_confidence": round(self.confidence, 4),
            "layers": layers_ms,
            "cached_layers": sorted(set(self.query.layers) - set(self.fresh)),
            "skipped_layers": sorted(set(asked) - set(self.query.layers)),
            "query_type": self.query_type,
            "fallback": self.fallback,
            "analysis": None
            if self.analysis is None
            else {
                "query_type": self.analysis.query_type,
                "layers": list(self.analysis.layers),
                "estimated_sequential_ms": round(self.analysis.estimated_ms, 3),
                "cached_fraction": self.analysis.cached_fraction,
                "parallel_benefit": round(self.situation.parallel_benefit, 3),
            },
        }
