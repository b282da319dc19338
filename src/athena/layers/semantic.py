"""Semantic memory: facts and observations, each linked to the episodes it came from."""

from __future__ import annotations

from typing import Final

from athena.errors import InvalidInput
from athena.layers.hybrid import hybrid_search
from athena.layers.protocol import LayerContext, Prepared, SearchRequest
from athena.records import MemoryInput

KINDS: Final = frozenset({"fact", "observation", "preference", "summary"})


class SemanticLayer:
    """What is known. ``sources`` on each fact name the episodic turns it derives from."""

    name = "semantic"
    default_kind = "fact"

    def prepare(self, item: MemoryInput) -> Prepared:
        kind = item.kind or self.default_kind
        if kind not in KINDS:
            raise InvalidInput(f"semantic kind must be one of {sorted(KINDS)}, not {kind!r}")
        return Prepared(kind=kind, text=item.text, attributes=dict(item.attributes))

    def search(self, ctx: LayerContext, request: SearchRequest) -> list[tuple[int, float]]:
        return hybrid_search(ctx, self.name, request)
