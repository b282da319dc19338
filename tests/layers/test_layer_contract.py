"""One contract, run against every layer: what a MemoryLayer must do for the facade."""

from __future__ import annotations

import pytest

from athena import LAYERS, Memory, NotFound

# Per layer: (memories to store as (text, attributes)), a query, the text that must win.
CASES: dict[str, tuple[list[tuple[str, dict[str, object]]], str, str]] = {
    "episodic": (
        [
            ("Caroline went hiking in the Alps with her dog.", {}),
            ("Melanie baked bread for the school fair.", {}),
            ("The team shipped the billing migration on Friday.", {}),
        ],
        "who went hiking in the Alps?",
        "Caroline went hiking in the Alps with her dog.",
    ),
    "semantic": (
        [
            ("Lisbon is the capital of Portugal.", {}),
            ("Alice is allergic to peanuts.", {}),
            ("The office wifi password rotates monthly.", {}),
        ],
        "what is Alice allergic to?",
        "Alice is allergic to peanuts.",
    ),
    "procedural": (
        [
            (
                "Deploy the web service",
                {
                    "trigger": "a release is tagged",
                    "steps": ["run tests", "build image", "roll out"],
                },
            ),
            ("Rotate database credentials", {"trigger": "every 90 days", "steps": ["create user"]}),
            ("Onboard a new engineer", {"steps": ["laptop", "accounts"]}),
        ],
        "how do I deploy the web service after a release is tagged?",
        "Deploy the web service",
    ),
    "prospective": (
        [
            ("Renew the passport", {"due_at": 2_000_000_000.0, "priority": 9}),
            ("Water the plants", {"due_at": 1_900_000_000.0, "priority": 2}),
            ("Book flights to Tokyo", {"priority": 5}),
        ],
        "renew my passport",
        "Renew the passport",
    ),
    "graph": (
        [
            (
                "Zed works with Quillon at Brightwater.",
                {
                    "relations": [
                        ["Zed", "works_with", "Quillon"],
                        ["Zed", "works_at", "Brightwater"],
                    ]
                },
            ),
            ("Maya lives in Oslo.", {"relations": [["Maya", "lives_in", "Oslo"]]}),
            ("Ravi plays chess.", {}),
        ],
        "what do we know about Quillon?",
        "Zed works with Quillon at Brightwater.",
    ),
}


def store_case(memory: Memory, layer: str, tenant: str = "t1") -> list[int]:
    items, _, _ = CASES[layer]
    return [
        memory.remember(text, tenant=tenant, layer=layer, attributes=attrs, timestamp=1e9 + i)
        for i, (text, attrs) in enumerate(items)
    ]


def test_every_layer_has_a_case() -> None:
    assert set(CASES) == set(LAYERS)


@pytest.mark.parametrize("layer", LAYERS)
class TestLayerContract:
    def test_relevant_memory_ranks_first(self, memory: Memory, layer: str) -> None:
        store_case(memory, layer)
        _, query, expected = CASES[layer]
        hits = memory.recall(query, tenant="t1", layers=[layer], k=3).hits
        assert hits and hits[0].text.startswith(expected)
        assert all(hit.tenant == "t1" for hit in hits)

    def test_hits_carry_the_documented_fields(self, memory: Memory, layer: str) -> None:
        store_case(memory, layer)
        _, query, _ = CASES[layer]
        hit = memory.recall(query, tenant="t1", layers=[layer], k=1).hits[0]
        d = hit.to_dict()
        for name in (
            "id",
            "layer",
            "text",
            "score",
            "tenant",
            "created_at",
            "updated_at",
            "sources",
        ):
            assert name in d
        assert d["score"] > 0

    def test_another_tenant_sees_nothing(self, memory: Memory, layer: str) -> None:
        store_case(memory, layer, tenant="owner")
        memory.remember("unrelated note", tenant="other", layer=layer)
        _, query, _ = CASES[layer]
        hits = memory.recall(query, tenant="other", layers=[layer], k=10).hits
        assert all(hit.tenant == "other" for hit in hits)
        assert all(hit.text == "unrelated note" for hit in hits)

    def test_forgotten_memory_is_never_recalled(self, memory: Memory, layer: str) -> None:
        ids = store_case(memory, layer)
        _, query, _expected = CASES[layer]
        winner = memory.recall(query, tenant="t1", layers=[layer], k=1).hits[0].id
        memory.forget(winner, tenant="t1")
        hits = memory.recall(query, tenant="t1", layers=[layer], k=10).hits
        assert winner not in [h.id for h in hits]
        assert {h.id for h in hits} <= set(ids)

    def test_update_changes_what_is_found(self, memory: Memory, layer: str) -> None:
        ids = store_case(memory, layer)
        memory.update(ids[-1], tenant="t1", text="Xylophone recital rehearsal notes")
        hits = memory.recall("xylophone recital", tenant="t1", layers=[layer], k=1).hits
        assert hits[0].id == ids[-1]
        assert hits[0].text.startswith("Xylophone recital rehearsal notes")

    def test_time_filter_is_respected(self, memory: Memory, layer: str) -> None:
        store_case(memory, layer)
        _, query, _ = CASES[layer]
        hits = memory.recall(query, tenant="t1", layers=[layer], k=10, since=1e9 + 1).hits
        assert all(h.event_time is not None and h.event_time >= 1e9 + 1 for h in hits)

    def test_cross_tenant_forget_and_update_are_refused(self, memory: Memory, layer: str) -> None:
        ids = store_case(memory, layer, tenant="owner")
        memory.remember("mine", tenant="intruder", layer=layer)
        with pytest.raises(NotFound):
            memory.forget(ids[0], tenant="intruder")
        with pytest.raises(NotFound):
            memory.update(ids[0], tenant="intruder", text="pwned")
        assert memory.get(ids[0], tenant="owner")["text"] != "pwned"
