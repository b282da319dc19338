"""Episodic memory: events and conversation turns, with time, speaker and session."""

from __future__ import annotations

from typing import Final

from athena.errors import InvalidInput
from athena.layers.hybrid import hybrid_search
from athena.layers.protocol import LayerContext, Prepared, SearchRequest
from athena.records import MemoryInput

KINDS: Final = frozenset({"turn", "event", "summary", "note"})


class EpisodicLayer:
    """What happened: turns, events and session summaries.

    Search is lexical + vector; ``since``/``until`` filter on the event time. With
    ``recency_weight`` above zero, a third ranking by event time joins the fusion, so among
    equally relevant episodes the recent ones come first.
    """

    name = "episodic"
    default_kind = "turn"

    def __init__(self, recency_weight: float = 0.0) -> None:
        self.recency_weight = recency_weight

    def prepare(self, item: MemoryInput) -> Prepared:
        kind = item.kind or self.default_kind
        if kind not in KINDS:
            raise InvalidInput(f"episodic kind must be one of {sorted(KINDS)}, not {kind!r}")
        return Prepared(kind=kind, text=item.text, attributes=dict(item.attributes))

    def search(self, ctx: LayerContext, request: SearchRequest) -> list[tuple[int, float]]:
        ranked = hybrid_search(ctx, self.name, request)
        if self.recency_weight <= 0 or not ranked:
            return ranked
        rows = ctx.store.get(request.query.tenant, [memory_id for memory_id, _ in ranked])
        by_time = sorted(rows, key=lambda r: (-(r.event_time or r.created_at), r.id))
        extra = [([r.id for r in by_time], self.recency_weight)]
        return hybrid_search(ctx, self.name, request, extra)
