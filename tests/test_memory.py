"""The facade: validation, sync and async faces, idempotent keys, layer specifics."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from athena import (
    AsyncMemory,
    InvalidInput,
    Memory,
    MemoryInput,
    NotFound,
    QueryTooLong,
    UnknownLayer,
)
from athena.embedding import Embedder


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"query": ""}, InvalidInput),
        ({"query": "   "}, InvalidInput),
        ({"query": "x" * 5000}, QueryTooLong),
        ({"k": 0}, InvalidInput),
        ({"k": -3}, InvalidInput),
        ({"k": 10_001}, InvalidInput),
        ({"k": "5"}, InvalidInput),
        ({"layers": ["nope"]}, UnknownLayer),
        ({"tenant": ""}, InvalidInput),
        ({"tenant": "ghost"}, NotFound),
        ({"timeout": 0}, InvalidInput),
        ({"since": 10.0, "until": 5.0}, InvalidInput),
        ({"query": "bad \ud800 surrogate"}, InvalidInput),
    ],
)
def test_bad_recall_input_is_a_typed_error(
    memory: Memory, kwargs: dict[str, object], error: type
) -> None:
    memory.remember("something", tenant="t")
    args: dict[str, object] = {"query": "something", "tenant": "t", **kwargs}
    with pytest.raises(error):
        memory.recall(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"text": ""},
        {"text": "a\x00b"},
        {"layer": "cortex"},
        {"tenant": ""},
        {"timestamp": float("nan")},
        {"timestamp": "yesterday"},
        {"metadata": {"x": object()}},
        {"layer": "prospective", "attributes": {"priority": 11}},
        {"layer": "procedural", "attributes": {"steps": "not a list"}},
        {"layer": "graph", "attributes": {"relations": [["a", "b"]]}},
    ],
)
def test_bad_memories_are_refused_and_nothing_is_written(
    memory: Memory, kwargs: dict[str, object]
) -> None:
    memory.remember("keep me", tenant="t")
    before = memory.stats()
    args: dict[str, object] = {"text": "hello", "tenant": "t", **kwargs}
    with pytest.raises(InvalidInput):
        memory.remember(**args)  # type: ignore[arg-type]
    assert memory.stats() == before


def test_a_batch_with_one_bad_item_writes_nothing(memory: Memory) -> None:
    good = MemoryInput(layer="semantic", text="fine", tenant="t")
    bad = MemoryInput(layer="semantic", text="", tenant="t")
    with pytest.raises(InvalidInput):
        memory.remember_many([good, bad])
    assert memory.stats()["memories"] == 0


def test_keys_make_writes_idempotent(memory: Memory) -> None:
    a = memory.remember("v1", tenant="t", key="fact-1", layer="semantic")
    b = memory.remember("v2", tenant="t", key="fact-1", layer="semantic")
    assert a == b
    assert memory.stats("t")["memories"] == 1
    assert memory.recall("v2", tenant="t").hits[0].text == "v2"


def test_semantic_facts_keep_their_sources(memory: Memory) -> None:
    turn = memory.remember("Bob: I adopted a cat named Miso", tenant="t", key="D1:1")
    fact = memory.remember(
        "Bob has a cat called Miso.", tenant="t", layer="semantic", sources=["D1:1"]
    )
    hits = {h.id: h for h in memory.recall("Bob's cat", tenant="t").hits}
    assert hits[turn].sources == ("D1:1",)
    assert hits[fact].sources == ("D1:1",)


def test_prospective_prefers_open_and_due(memory: Memory) -> None:
    now = time.time()
    later = memory.remember(
        "call the plumber about the leak",
        tenant="t",
        layer="prospective",
        attributes={"due_at": now + 86400 * 30},
    )
    soon = memory.remember(
        "call the plumber to confirm",
        tenant="t",
        layer="prospective",
        attributes={"due_at": now + 3600},
    )
    memory.remember(
        "call the plumber (done)", tenant="t", layer="prospective", attributes={"status": "done"}
    )
    ranked = [
        h.id for h in memory.recall("call the plumber", tenant="t", layers=["prospective"]).hits
    ]
    assert ranked.index(soon) < ranked.index(later)


def test_procedure_outcome_counts_update(memory: Memory) -> None:
    pid = memory.remember(
        "Restart the queue worker",
        tenant="t",
        layer="procedural",
        attributes={"steps": ["drain", "restart"]},
    )
    memory.update(pid, tenant="t", attributes={"success_count": 3})
    got = memory.get(pid, tenant="t")
    assert got["attributes"]["success_count"] == 3
    assert got["attributes"]["steps"] == ["drain", "restart"]


def test_forget_unknown_id_changes_nothing(memory: Memory) -> None:
    keep = memory.remember("keep", tenant="t")
    with pytest.raises(NotFound):
        memory.forget([keep, 999_999], tenant="t")
    assert memory.get(keep, tenant="t")["text"] == "keep"


def test_switching_embedder_backfills_vectors(tmp_path: Path, embedder: Embedder) -> None:
    class Renamed:
        name = "static:renamed-for-test"
        dim = embedder.dim

        def embed(self, texts):  # type: ignore[no-untyped-def]
            return embedder.embed(texts)

    with Memory(tmp_path / "m.db", embedder=embedder) as mem:
        mid = mem.remember("penguins live in Antarctica", tenant="t", layer="semantic")
    with Memory(tmp_path / "m.db", embedder=Renamed()) as mem:  # type: ignore[arg-type]
        assert mem.store.missing_vectors(Renamed.name, 10) == []
        assert (
            mem.recall("birds of the south pole", tenant="t", layers=["semantic"]).hits[0].id == mid
        )


async def test_async_face_shares_the_core(tmp_path: Path, embedder: Embedder) -> None:
    async with AsyncMemory(tmp_path / "a.db", embedder=embedder) as mem:
        ids = await asyncio.gather(
            *(mem.remember(f"note {i} about gardening", tenant="t") for i in range(20))
        )
        assert len(set(ids)) == 20
        results = await asyncio.gather(
            *(mem.recall("gardening", tenant="t", k=5) for _ in range(50))
        )
        assert all(len(r.hits) == 5 for r in results)
        with pytest.raises(InvalidInput):
            await mem.recall("", tenant="t")


def test_execution_gauges_are_the_pool_admission_thread_queue_and_index_sections_of_the_stats(
    memory: Memory,
) -> None:
    memory.remember("the sky is blue", tenant="t")
    memory.recall("sky", tenant="t")
    gauges, stats = memory.execution_gauges(), memory.execution_stats()
    sections = {"pool", "admission", "thread_queue", "indexes"}
    assert set(gauges) == sections
    assert gauges == {name: stats[name] for name in sections}
    assert gauges["admission"]["admitted"] >= 1
    assert gauges["indexes"]["memories"] >= 1 and gauges["indexes"]["tenants"] >= 1


def test_backfill_can_wait_and_then_reports_its_progress(
    tmp_path: Path, embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    from athena import memory_indexes

    monkeypatch.setattr(memory_indexes, "BACKFILL_BATCH", 128)

    class Renamed:
        name = "static:renamed-for-test"
        dim = embedder.dim

        def embed(self, texts):  # type: ignore[no-untyped-def]
            return embedder.embed(texts)

    with Memory(tmp_path / "m.db", embedder=embedder) as mem:
        mem.remember_many(
            [MemoryInput(tenant="t", layer="semantic", text=f"fact {i}") for i in range(300)]
        )
    with Memory(tmp_path / "m.db", embedder=Renamed(), backfill=False) as mem:  # type: ignore[arg-type]
        assert mem.missing_vectors() == 300
        steps: list[int] = []
        assert mem.backfill_vectors(steps.append) == 300
        assert sum(steps) == 300 and len(steps) >= 2  # batch by batch
        assert mem.missing_vectors() == 0 and mem.backfill_vectors() == 0
    with Memory(tmp_path / "m.db", embedder=embedder) as mem:  # the first model's are kept
        assert mem.missing_vectors() == 0
