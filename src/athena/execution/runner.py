"""Running one layer's search and timing it: the unit every strategy executes."""

from __future__ import annotations

import time
from collections.abc import Mapping

from athena.layers.protocol import LayerContext, LayerResult, MemoryLayer, SearchRequest


def run_layer(
    layers: Mapping[str, MemoryLayer],
    ctx: LayerContext,
    name: str,
    request: SearchRequest,
    source: str,
) -> LayerResult:
    """Search one layer and wrap its ranking in a :class:`LayerResult`, with the index rows
    the search loaded (on other threads of this process too: an estimate there, exact in a
    pool worker, which runs one task at a time)."""
    loaded = ctx.loaded()
    start = time.perf_counter()
    ranked = layers[name].search(ctx, request)
    elapsed = (time.perf_counter() - start) * 1000.0
    return LayerResult(
        layer=name,
        ids=tuple(memory_id for memory_id, _ in ranked),
        scores=tuple(score for _, score in ranked),
        elapsed_ms=elapsed,
        generation=request.generations.get(name, 0),
        source=source,
        loaded=ctx.loaded() - loaded,
    )
