"""One recall while it executes: cache layers, decide, run, aggregate, explain."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Final

from athena.errors import RecallTimeout, WorkerPoolUnavailable
from athena.execution.cache_keys import CachedHits
from athena.layers.protocol import LayerResult, SearchRequest
from athena.planning.analysis import QueryAnalysis
from athena.planning.selector import Decision, Situation, Strategy
from athena.records import Hit, RecallQuery

if TYPE_CHECKING:
    from athena.execution.adaptive import AdaptiveEngine
    from athena.execution.pool_keeper import PoolKeeper

DISTRIBUTED_TIMEOUT: Final = 10.0
FORCED: Final = {
    "sequential": Strategy.SEQUENTIAL,
    "parallel": Strategy.PARALLEL,
    "distributed": Strategy.DISTRIBUTED,
}


class RecallRun:
    """The state of one recall while it executes."""

    def __init__(
        self,
        engine: AdaptiveEngine,
        query: RecallQuery,
        generations: dict[str, int],
        strategy: str,
        timeout: float | None,
        query_type: str,
        key: Hashable | None = None,
    ) -> None:
        self.engine = engine
        self.key = key  # the query's full cache key, if the plan made it
        self.query = query
        self.generations = generations
        self.strategy = strategy
        self.timeout = timeout
        self.query_type = query_type
        self.decision: Decision | None = None
        self.executed: Strategy | None = None
        self.situation: Situation  # what the selector saw: set once the recall runs
        self.cache_state = "miss"
        self.fallback: str | None = None
        self.results: Mapping[str, LayerResult] = {}
        self.fresh: dict[str, LayerResult] = {}
        self.remote_hits: tuple[Hit, ...] | None = None  # read by a worker (whole recall)
        self.analysis: QueryAnalysis | None = None
        self.confidence = 1.0
        self.queued_ms = 0.0  # waited for an execution slot (engine.admission)
        self.started = time.monotonic()

    def execute(self) -> tuple[Hit, ...]:
        engine, query = self.engine, self.query
        if self.strategy in ("adaptive", "cache", "hybrid"):  # the full hit was tried before
            key = engine.cache.flight_key(query, engine.model, self.generations, self.key)
            hits = engine.cache.single_flight(key, self._compute)
            if self.decision is None:  # another thread computed it for us (single-flight)
                self.cache_state = "hit"
                self.situation = engine.situations.of(query.layers, 0.0, light=True)
                self.decision = replace(
                    engine.selector.for_cache(True, self.situation.sequential_ms, 1.0, 0.0),
                    why="shared the execution of a concurrent identical recall",
                )
            return hits
        return self._compute()

    def _compute(self) -> tuple[Hit, ...]:
        engine, query = self.engine, self.query
        depth = self.engine.pipeline.request_depth(query)
        cached: dict[str, Any] = {}
        uses_cache = self.strategy in ("adaptive", "cache", "hybrid")
        if self.strategy in ("adaptive", "hybrid"):
            cached = engine.cache.get_layers(query, engine.model, depth, self.generations, self.key)
            engine.cache.record_partial(cached.values())
        elif uses_cache:
            engine.cache.record_miss()
        missing = tuple(name for name in query.layers if name not in cached)
        self.situation = engine.situations.of(
            missing, len(cached) / len(query.layers), tenant=query.tenant
        )
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
            inner = self._decide(missing).strategy if missing else None
        else:
            self.decision = self._decide(missing)
            inner = self.decision.strategy
        self.executed = inner
        request = None
        remote: dict[str, LayerResult] | None = None
        if missing and inner is not None:
            request = engine.pipeline.request(query, self.generations)  # embeds: no slot held
            if self.decision is not None and self.decision.warm_pool:
                engine.pools.warm(query.tenant, request, missing)
            if inner is Strategy.DISTRIBUTED:
                remote = self._distributed(request, missing)  # None: it fell back
        left = self.left()  # the embedding and a pool round trip have spent some of it
        with engine.admission.slot(left) as waited:
            self.queued_ms = waited * 1000.0
            if remote is not None:
                self.fresh = remote
            elif request is not None and self.executed is not None:
                timeout = None if left is None else max(left - waited, 0.0)
                self.fresh = in_process(self, self.executed, request, missing, timeout)
            hits = self._finish(cached, uses_cache, depth)
        return hits

    def left(self) -> float | None:
        """Seconds of the recall's timeout not yet spent (None: no timeout)."""
        if self.timeout is None:
            return None
        return max(self.timeout - (time.monotonic() - self.started), 0.0)

    def _finish(self, cached: dict[str, Any], uses_cache: bool, depth: int) -> tuple[Hit, ...]:
        """Merge cached and fresh layer results into hits; fill the cache."""
        engine, query = self.engine, self.query
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
        hits = self.remote_hits
        if hits is None or cached:
            hits = engine.pipeline.hits(query, results)
        if uses_cache:  # forced executing strategies neither read nor fill the cache
            fresh = [(result, result.elapsed_ms) for result in self.fresh.values()]
            cost = sum(r.elapsed_ms for r in self.fresh.values())
            gens, key = self.generations, self.key
            engine.cache.put_recall(query, engine.model, depth, fresh, gens, hits, cost, key)
        return hits

    def _decide(self, layers: tuple[str, ...]) -> Decision:
        forced = FORCED.get(self.strategy)
        if forced is None:  # adaptive, or cache/hybrid that found nothing cached
            return self.engine.selector.decide(self.situation)
        if forced is Strategy.DISTRIBUTED:
            self.engine.pools.get()
        estimate, _ = self.engine.selector.predict(forced, self.situation)
        return Decision(forced, 1.0, f"forced {forced.value}", estimate, 1.0)

    def _distributed(
        self, request: SearchRequest, layers: tuple[str, ...]
    ) -> dict[str, LayerResult] | None:
        """The layers run by the worker pool, or None after switching to PARALLEL because the
        pool could not (see :func:`pool_results`). When they are every layer of the query,
        one worker runs the whole recall and reads its hits too."""
        whole = layers == self.query.layers and self.engine.pipeline.diversify
        remote, self.remote_hits, self.fallback = pool_results(
            self.engine.pools, request, layers, self.left, self.timeout, whole
        )
        if remote is None:
            self.executed = Strategy.PARALLEL
        return remote

    def explain(self, actual_ms: float, asked: tuple[str, ...]) -> dict[str, Any]:
        """The explain object of this recall (see :func:`run_explain`)."""
        return run_explain(self, actual_ms, asked)


def pool_results(
    pools: PoolKeeper,
    request: SearchRequest,
    layers: tuple[str, ...],
    left: Callable[[], float | None],
    timeout: float | None,
    whole: bool = False,
) -> tuple[dict[str, LayerResult] | None, tuple[Hit, ...] | None, str | None]:
    """The layers run by the worker pool (no execution slot held while it works), and with
    ``whole`` the hits a worker read (None if it could not); or None and why the pool could
    not (the caller then runs them in process). ``left`` is what the recall's ``timeout``
    has left, asked once the pool can take the layers.

    >>> from athena.execution.pool_keeper import PoolKeeper
    >>> pool_results(PoolKeeper(None), None, ("episodic",), lambda: None, None)
    (None, None, 'pool unavailable: not configured')
    """
    backend = pools.get()
    if backend is None:
        return None, None, f"pool unavailable: {pools.error or 'not configured'}"
    if not backend.available:  # every worker is being replaced: do not wait
        return None, None, "pool unavailable: no worker is ready"
    remaining = left()
    if remaining is not None and remaining <= 0:
        raise RecallTimeout(f"recall exceeded its {timeout}s timeout")
    wait = DISTRIBUTED_TIMEOUT if remaining is None else remaining
    hits = None
    try:
        if whole and hasattr(backend, "recall"):  # a backend from before stop 42 lacks it
            results, hits = backend.recall(request, layers, timeout=wait)
        else:
            results = backend.run(request, layers, timeout=wait)
    except (WorkerPoolUnavailable, RecallTimeout) as exc:
        return None, None, f"pool failed: {exc}"
    pools.served(request.query.tenant, results, backend)  # warm, unless its workers built
    return results, hits, None


def in_process(
    run: RecallRun,
    strategy: Strategy,
    request: SearchRequest,
    layers: tuple[str, ...],
    timeout: float | None,
) -> dict[str, LayerResult]:
    """The layers run on this process's threads (PARALLEL) or one after another, within
    ``timeout`` seconds (what is left of the recall's own timeout).

    >>> # in_process(run, Strategy.SEQUENTIAL, request, ("episodic",), None)
    """
    engine = run.engine
    if strategy is Strategy.PARALLEL and len(layers) > 1:
        return engine.parallel.run(request, layers, timeout)
    start = time.monotonic()
    out = {}
    for name in layers:
        out[name] = engine.pipeline.run(name, request, "sequential")
        if timeout is not None and time.monotonic() - start > timeout:
            raise RecallTimeout(f"recall exceeded its {run.timeout}s timeout")
    return out


def run_explain(run: RecallRun, actual_ms: float, asked: tuple[str, ...]) -> dict[str, Any]:
    """The explain object of an executed recall; ``asked``: the layers the caller asked for.

    >>> # run_explain(run, 3.2, LAYERS)["executed"] -> 'parallel'
    """
    decision = run.decision
    assert decision is not None
    layers_ms: dict[str, float] = {
        name: round(run.fresh[name].elapsed_ms, 3) if name in run.fresh else 0.0
        for name in run.query.layers
    }
    return {
        "strategy": decision.strategy.value,
        "executed": (run.executed or decision.strategy).value,
        "reasoning": decision.reasoning,
        "confidence": round(decision.confidence, 4),
        "estimated_ms": round(decision.estimated_ms, 3),
        "estimated_speedup": round(decision.estimated_speedup, 3),
        "actual_ms": round(actual_ms, 3),
        "queued_ms": round(run.queued_ms, 3),
        "cache": run.cache_state,
        "result_confidence": round(run.confidence, 4),
        "layers": layers_ms,
        "cached_layers": sorted(set(run.query.layers) - set(run.fresh)),
        "skipped_layers": sorted(set(asked) - set(run.query.layers)),
        "query_type": run.query_type,
        "fallback": run.fallback,
        "analysis": None
        if run.analysis is None
        else {
            "query_type": run.analysis.query_type,
            "layers": list(run.analysis.layers),
            "estimated_sequential_ms": round(run.analysis.estimated_ms, 3),
            "cached_fraction": run.analysis.cached_fraction,
            "parallel_benefit": round(run.situation.parallel_benefit, 3),
        },
    }


def served_explain(
    query: RecallQuery,
    query_type: str,
    asked: tuple[str, ...],
    full: CachedHits,
    decision: Decision,
    actual_ms: float,
) -> dict[str, Any]:
    """The explain object of a full cache hit."""
    return {
        "strategy": "cache",
        "executed": "cache",
        "reasoning": decision.reasoning,
        "confidence": 1.0,
        "estimated_ms": 0.0,
        "estimated_speedup": round(decision.estimated_speedup, 3),
        "actual_ms": round(actual_ms, 3),
        "queued_ms": 0.0,
        "cache": "hit",
        "result_confidence": round(full.confidence, 4),
        "cache_age_s": round(full.age_s, 3),
        "layers": dict.fromkeys(query.layers, 0.0),
        "cached_layers": list(query.layers),
        "skipped_layers": sorted(set(asked) - set(query.layers)),
        "query_type": query_type,
        "fallback": None,
        "analysis": None,
    }
