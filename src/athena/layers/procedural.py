"""Procedural memory: named procedures with a trigger, steps and an outcome record."""

from __future__ import annotations

from typing import Any

from athena.errors import InvalidInput
from athena.layers.hybrid import hybrid_search
from athena.layers.protocol import LayerContext, Prepared, SearchRequest
from athena.records import MemoryInput


class ProceduralLayer:
    """How to do things. Attributes: ``name``, ``trigger``, ``steps``, ``success_count``,
    ``failure_count``. The trigger and steps are indexed with the text, so a query that
    describes the situation finds the procedure.
    """

    name = "procedural"
    default_kind = "procedure"

    def prepare(self, item: MemoryInput) -> Prepared:
        attrs: dict[str, Any] = dict(item.attributes)
        steps = attrs.get("steps", [])
        if not isinstance(steps, list) or not all(isinstance(s, str) for s in steps):
            raise InvalidInput("procedure steps must be a list of strings")
        for counter in ("success_count", "failure_count"):
            value = attrs.setdefault(counter, 0)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidInput(f"{counter} must be a non-negative integer")
        trigger = attrs.get("trigger")
        if trigger is not None and not isinstance(trigger, str):
            raise InvalidInput("procedure trigger must be a string")
        attrs.setdefault("name", item.text.split("\n", 1)[0][:120])
        parts = [item.text]
        if trigger and trigger not in item.text:
            parts.append(f"When: {trigger}")
        parts.extend(step for step in steps if step not in item.text)
        return Prepared(
            kind=item.kind or self.default_kind, text="\n".join(parts), attributes=attrs
        )

    def search(self, ctx: LayerContext, request: SearchRequest) -> list[tuple[int, float]]:
        return hybrid_search(ctx, self.name, request)
