"""Prospective memory: tasks, goals and reminders with due time, status and priority."""

from __future__ import annotations

from typing import Any, Final

from athena.errors import InvalidInput
from athena.layers.hybrid import hybrid_search
from athena.layers.protocol import LayerContext, Prepared, SearchRequest
from athena.records import MemoryInput

STATUSES: Final = frozenset({"open", "active", "done", "cancelled"})
KINDS: Final = frozenset({"task", "goal", "reminder", "plan"})
URGENCY_WEIGHT: Final = 0.5


class ProspectiveLayer:
    """What is to be done. Search fuses relevance with urgency: open tasks, soonest due and
    highest priority first; done and cancelled tasks are found only by relevance.
    """

    name = "prospective"
    default_kind = "task"

    def prepare(self, item: MemoryInput) -> Prepared:
        kind = item.kind or self.default_kind
        if kind not in KINDS:
            raise InvalidInput(f"prospective kind must be one of {sorted(KINDS)}, not {kind!r}")
        attrs: dict[str, Any] = dict(item.attributes)
        status = attrs.setdefault("status", "open")
        if status not in STATUSES:
            raise InvalidInput(f"status must be one of {sorted(STATUSES)}")
        priority = attrs.setdefault("priority", 5)
        if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 10:
            raise InvalidInput("priority must be an integer from 0 to 10")
        due = attrs.get("due_at")
        if due is not None and (isinstance(due, bool) or not isinstance(due, int | float)):
            raise InvalidInput("due_at must be seconds since the epoch")
        return Prepared(kind=kind, text=item.text, attributes=attrs)

    def search(self, ctx: LayerContext, request: SearchRequest) -> list[tuple[int, float]]:
        relevant = hybrid_search(ctx, self.name, request)
        if not relevant:
            return []
        # Urgency re-orders only what is relevant: an open task due tomorrow outranks an
        # equally relevant one due next year, but an unrelated urgent task is not returned.
        relevant_ids = {memory_id for memory_id, _ in relevant}
        urgent = ctx.store.tasks(request.query.tenant, request.depth * 4, request.where)
        extra = [([r.id for r in urgent if r.id in relevant_ids], URGENCY_WEIGHT)]
        return hybrid_search(ctx, self.name, request, extra)
