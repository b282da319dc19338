"""The reference engine: layers one after another, then fusion."""

from __future__ import annotations

import time
from typing import Any

from athena.execution.pipeline import Pipeline, Recall
from athena.layers.protocol import LayerResult
from athena.records import RecallQuery


class SequentialEngine:
    """Runs each chosen layer in turn on the calling thread."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    def results(self, query: RecallQuery, generations: dict[str, int]) -> dict[str, LayerResult]:
        request = self.pipeline.request(query, generations)
        return {name: self.pipeline.run(name, request, "sequential") for name in query.layers}

    def cached(
        self,
        query: RecallQuery,
        generations: dict[str, int],
        *,
        strategy: str = "sequential",
        explain: bool = False,
    ) -> Recall | None:
        """The reference engine caches nothing."""
        return None

    def recall(
        self,
        query: RecallQuery,
        generations: dict[str, int],
        *,
        strategy: str = "sequential",
        explain: bool = False,
        timeout: float | None = None,
    ) -> Recall:
        start = time.perf_counter()
        results = self.results(query, generations)
        hits = self.pipeline.hits(query, results)
        details = None
        if explain:
            details = {
                "strategy": "sequential",
                "reasoning": "reference path: every layer in turn",
                "estimated_ms": None,
                "actual_ms": (time.perf_counter() - start) * 1000.0,
                "cache": "miss",
                "layers": {name: r.elapsed_ms for name, r in results.items()},
            }
        return Recall(hits=hits, explain=details)

    def stats(self) -> dict[str, Any]:
        return {"cache": {}, "pool": {}, "telemetry": {}, "selector": {"strategy": "sequential"}}

    def gauges(self) -> dict[str, Any]:
        return {"pool": {}, "admission": {}}

    def pool_ready(self) -> bool:
        return False  # no pool: a DISTRIBUTED recall runs here

    def close(self) -> None:
        return None
