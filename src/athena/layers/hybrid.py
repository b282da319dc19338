"""Search shared by the text layers: lexical (tenant-local BM25) and vector, fused with RRF."""

from __future__ import annotations

from athena.layers.protocol import LayerContext, SearchRequest
from athena.retrieval.fusion import rrf
from athena.retrieval.lexical import query_stems

LEXICAL_WEIGHT = 1.0
# Measured on LoCoMo: lexical evidence beats dense here, so the vector list counts half.
VECTOR_WEIGHT = 0.5


def lexical_ids(ctx: LayerContext, layer: str, request: SearchRequest, limit: int) -> list[int]:
    generation = request.generations.get(layer, 0)
    if generation == 0:
        return []  # never written for this tenant
    query = query_stems(request.query.text)
    if not query:
        return []
    where, tenant = request.where, request.query.tenant
    admit = None if where.empty else (lambda ids: ctx.store.admitted(tenant, ids, where))
    found = ctx.lexicon.search(tenant, layer, generation, query, limit, admit)
    return [memory_id for memory_id, _ in found]


def vector_ids(ctx: LayerContext, layer: str, request: SearchRequest, limit: int) -> list[int]:
    generation = request.generations.get(layer, 0)
    if generation == 0:
        return []  # nothing was ever written to this layer for this tenant
    where = request.where
    fetch = limit if where.empty else limit * 4
    found = ctx.indexes.search(request.query.tenant, layer, generation, request.vector, fetch)
    ids = [memory_id for memory_id, _ in found]
    if not where.empty:
        passing = ctx.store.admitted(request.query.tenant, ids, where)
        ids = [memory_id for memory_id in ids if memory_id in passing]
    return ids[:limit]


def hybrid_search(
    ctx: LayerContext,
    layer: str,
    request: SearchRequest,
    extra: list[tuple[list[int], float]] | None = None,
) -> list[tuple[int, float]]:
    """Fuse the lexical and vector rankings of ``layer`` (plus any ``extra`` ranking)."""
    depth = request.depth
    rankings = [
        (lexical_ids(ctx, layer, request, depth), LEXICAL_WEIGHT),
        (vector_ids(ctx, layer, request, depth), VECTOR_WEIGHT),
        *(extra or []),
    ]
    return rrf(((ids, w) for ids, w in rankings if ids), limit=depth)
