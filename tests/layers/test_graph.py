"""The graph layer: an entity named in more than the ubiquity share of a tenant's memories
neither matches nor expands, exactly at the line (the store counts mentions only up to it)."""

from __future__ import annotations

from athena import Memory
from athena.layers.graph import UBIQUITY


def test_an_entity_past_the_ubiquity_line_is_ignored(memory: Memory) -> None:
    total = 100
    line = max(10, int(UBIQUITY * total))  # 10 mentions here
    for i in range(line):
        memory.remember(f"Zorvak walked to the lake, day {i}.", tenant="t")
    for i in range(line + 1):
        memory.remember(f"Quillon painted a fence, day {i}.", tenant="t")
    for i in range(total - 2 * line - 1):
        memory.remember(f"a plain note number {i}", tenant="t")
    assert memory.stats("t")["memories"] == total

    def graph_hits(question: str) -> list[str]:
        found = memory.recall(question, tenant="t", layers=["graph"], strategy="sequential", k=20)
        return [hit.text for hit in found.hits]

    at_line = graph_hits("Where did Zorvak walk?")
    assert len(at_line) == line and all("Zorvak" in text for text in at_line)
    assert graph_hits("What did Quillon paint?") == []  # one mention past the line
    counts = memory.store.entities("t", ["zorvak", "quillon"], cap=line + 1)
    assert {name: count for name, (_, count) in counts.items()} == {
        "zorvak": line,
        "quillon": line + 1,
    }
