"""Importing LoCoMo: each conversation becomes one tenant.

- turns → episodic turns keyed by dia_id, timed by their session's date, with the speaker;
- observations → semantic facts whose sources are the dia_ids they cite;
- session summaries → episodic summaries; event_summary items → dated episodic events
  (neither cites turns, so neither ever counts as evidence in the evaluation);
- speakers and mentioned entities → the graph (extracted on write, plus one relation
  linking the two speakers).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from athena.locomo.data import Conversation, load_locomo
from athena.memory import Memory
from athena.records import MemoryInput

Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class ImportReport:
    conversations: int
    memories: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.memories / self.seconds if self.seconds else 0.0


def conversation_memories(conv: Conversation) -> list[MemoryInput]:
    """Every memory one conversation contributes, in a deterministic order."""
    tenant = conv.sample_id
    items: list[MemoryInput] = []
    for index, turn in enumerate(conv.turns):
        # Turns of a session share its date; a second per turn keeps them in order.
        at = None if turn.time is None else turn.time + index % 1000
        items.append(
            MemoryInput(
                layer="episodic",
                text=turn.text,
                tenant=tenant,
                key=turn.dia_id,
                kind="turn",
                session=f"session_{turn.session}",
                actor=turn.speaker,
                event_time=at,
                sources=(turn.dia_id,),
            )
        )
    for index, (speaker, text, dia_ids, session) in enumerate(conv.observations):
        items.append(
            MemoryInput(
                layer="semantic",
                text=text,
                tenant=tenant,
                key=f"observation:{session}:{index}",
                kind="observation",
                session=f"session_{session}",
                actor=speaker,
                event_time=conv.session_times.get(session),
                sources=dia_ids,
            )
        )
    for session, text in conv.summaries:
        items.append(
            MemoryInput(
                layer="episodic",
                text=text,
                tenant=tenant,
                key=f"summary:{session}",
                kind="summary",
                session=f"session_{session}",
                event_time=conv.session_times.get(session),
            )
        )
    for index, (session, speaker, text, when) in enumerate(conv.events):
        items.append(
            MemoryInput(
                layer="episodic",
                text=text,
                tenant=tenant,
                key=f"event:{session}:{index}",
                kind="event",
                session=f"session_{session}",
                actor=speaker,
                event_time=when,
            )
        )
    if len(conv.speakers) == 2:
        a, b = conv.speakers
        items.append(
            MemoryInput(
                layer="graph",
                text=f"{a} and {b} talk with each other.",
                tenant=tenant,
                key="speakers",
                kind="relation",
                attributes={"relations": [[a, "talks_with", b]]},
            )
        )
    return [item for item in items if item.text.strip()]


def import_locomo(
    memory: Memory,
    path: str | Path,
    *,
    tenant_prefix: str = "",
    progress: Progress | None = None,
) -> ImportReport:
    """Import a LoCoMo file; returns counts and the time it took.

    Each conversation is written in one transaction, so an import that fails part-way
    leaves whole conversations or nothing of them. Re-importing updates in place (keys).
    """
    conversations = load_locomo(path)
    start = time.perf_counter()
    total = 0
    for conv in conversations:
        items = conversation_memories(conv)
        if tenant_prefix:
            items = [_retenant(item, tenant_prefix + item.tenant) for item in items]
        memory.remember_many(items)
        total += len(items)
        if progress:
            progress(1)
    return ImportReport(len(conversations), total, time.perf_counter() - start)


def _retenant(item: MemoryInput, tenant: str) -> MemoryInput:
    from dataclasses import replace

    return replace(item, tenant=tenant)
