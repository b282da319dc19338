"""Graph memory: entities and typed, timestamped relations extracted on write.

Search finds the entities a query names, expands one hop to related entities, and returns
the memories that mention them, ranked by how specific the matched entities are (an entity
mentioned everywhere, like the speaker of every turn, weighs little).
"""

from __future__ import annotations

import math
import threading
from typing import Any, Final

from athena.errors import InvalidInput
from athena.layers.extraction import query_entities
from athena.layers.protocol import LayerContext, Prepared, SearchRequest
from athena.records import MemoryInput

NEIGHBOUR_WEIGHT: Final = 0.5
MAX_NEIGHBOURS: Final = 10
# An entity in more than this share of a tenant's memories (the agent's user, the speaker of
# every turn) says nothing about which memory a query wants; it neither matches nor expands.
UBIQUITY: Final = 0.05


class GraphLayer:
    """Who and what, and how they relate. Writes to this layer are entity or relation
    notes; every layer's writes feed the graph through entity extraction.
    """

    name = "graph"
    default_kind = "relation"

    def __init__(self) -> None:
        self._names: dict[tuple[str, tuple[tuple[str, int], ...]], tuple[frozenset[str], int]]
        self._names = {}
        self._lock = threading.Lock()

    def prepare(self, item: MemoryInput) -> Prepared:
        raw = item.attributes.get("relations", [])
        relations: list[tuple[str, str, str]] = []
        if not isinstance(raw, list):
            raise InvalidInput("relations must be a list of [subject, relation, object]")
        for triple in raw:
            if (
                not isinstance(triple, list | tuple)
                or len(triple) != 3
                or not all(isinstance(part, str) and part.strip() for part in triple)
            ):
                raise InvalidInput("each relation must be [subject, relation, object] strings")
            relations.append((triple[0].strip(), triple[1].strip(), triple[2].strip()))
        attrs: dict[str, Any] = {**item.attributes, "relations": [list(r) for r in relations]}
        return Prepared(
            kind=item.kind or self.default_kind,
            text=item.text,
            attributes=attrs,
            relations=tuple(relations),
        )

    def _known(
        self, ctx: LayerContext, tenant: str, generations: dict[str, int]
    ) -> tuple[frozenset[str], int]:
        """The tenant's entity names and memory count, cached per generation of every layer
        (the count moves with writes to any layer), so every process computes the same."""
        key = (tenant, tuple(sorted(generations.items())))
        known = self._names.get(key)
        if known is None:
            names = frozenset(ctx.store.entity_names(tenant))
            known = (names, ctx.store.memory_count(tenant))
            with self._lock:
                for old in [k for k in self._names if k[0] == tenant]:
                    del self._names[old]
                self._names[key] = known
        return known

    def search(self, ctx: LayerContext, request: SearchRequest) -> list[tuple[int, float]]:
        tenant = request.query.tenant
        generation = request.generations.get(self.name, 0)
        if generation == 0:
            return []
        names, total = self._known(ctx, tenant, request.generations)
        named = query_entities(request.query.text, names)
        limit = int(max(10, UBIQUITY * total))  # mentions past this: too common to matter
        known = ctx.store.entities(tenant, named, cap=limit + 1)
        found = {n: v for n, v in known.items() if v[1] <= limit}
        if not found:
            return []
        weights = {eid: 1.0 / math.log(2.0 + count) for eid, count in found.values()}
        for eid in ctx.store.neighbours(tenant, list(weights), MAX_NEIGHBOURS):
            weights.setdefault(eid, NEIGHBOUR_WEIGHT / math.log(2.0 + MAX_NEIGHBOURS))
        scores: dict[int, float] = {}
        order: dict[int, int] = {}
        pairs = ctx.store.mentioning(tenant, list(weights), request.depth * 20)
        where = request.where
        for memory_id, eid in pairs:
            scores[memory_id] = scores.get(memory_id, 0.0) + weights[eid]
            order.setdefault(memory_id, len(order))
        ranked = sorted(scores, key=lambda m: (-scores[m], order[m]))
        if not where.empty:
            passing = ctx.store.admitted(tenant, ranked[: request.depth * 4], where)
            ranked = [m for m in ranked if m in passing]
        return [(m, scores[m]) for m in ranked[: request.depth]]
