"""The row cache serves exactly what the store holds.

Hypothesis interleaves writes through two ``Memory`` objects on one file (so half of them
come from another connection, which only the generation tracker's commit check sees) with
recalls: every recall through the row cache (forced SEQUENTIAL, which reads no result
cache) must equal the reference engine's, which reads every row from the store.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from athena import Memory
from athena.embedding import Embedder
from athena.execution.rows import RowCache

WORDS = ["apple", "river", "piano", "rocket", "garden", "violet", "tiger", "cloud"]
TENANTS = ["t1", "t2"]
LAYERS = ["episodic", "semantic"]

words = st.lists(st.sampled_from(WORDS), min_size=1, max_size=3)
writer = st.integers(0, 1)  # 0: the Memory under test, 1: the other connection
op = st.one_of(
    st.tuples(st.just("remember"), writer, st.sampled_from(TENANTS), st.integers(0, 6), words),
    st.tuples(st.just("update"), writer, st.sampled_from(TENANTS), st.integers(0, 50), words),
    st.tuples(st.just("forget"), writer, st.sampled_from(TENANTS), st.integers(0, 50), words),
    st.tuples(st.just("recall"), writer, st.sampled_from(TENANTS), st.integers(0, 0), words),
)


@pytest.fixture(scope="module")
def pair(
    tmp_path_factory: pytest.TempPathFactory, embedder: Embedder
) -> Iterator[tuple[Memory, Memory]]:
    path = tmp_path_factory.mktemp("rows") / "m.db"
    mem = Memory(path, embedder=embedder, pool="off")
    reference = Memory(path, embedder=embedder, execution="sequential", pool="off")
    for tenant in TENANTS:
        mem.remember("seed memory", tenant=tenant, layer="procedural")
    yield mem, reference
    reference.close()
    mem.close()


def seen(mem: Memory, tenant: str, text: str, strategy: str) -> list[tuple[int, str, str]]:
    hits = mem.recall(text, tenant=tenant, k=5, strategy=strategy).hits
    return [(hit.id, hit.layer, hit.text) for hit in hits]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=st.lists(op, min_size=1, max_size=25))
def test_recalls_through_the_row_cache_match_the_store(
    pair: tuple[Memory, Memory], ops: list[tuple[str, int, str, int, list[str]]]
) -> None:
    mem, reference = pair
    for kind, via, tenant, number, text_words in ops:
        text, writes = " ".join(text_words), pair[via]
        if kind == "remember":  # a key already used rewrites that memory (an upsert)
            layer = LAYERS[number % 2]
            writes.remember(text, tenant=tenant, layer=layer, key=f"k{number}")
        elif kind in ("update", "forget"):
            every = mem.store.get(tenant, list(range(1, 200)))  # every id this file can hold
            rows = [row for row in every if row.layer != "procedural"]  # the seed stays
            if not rows:
                continue
            target = rows[number % len(rows)].id
            if kind == "update":
                writes.update(target, tenant=tenant, text=text)
            else:
                writes.forget(target, tenant=tenant)
        else:
            assert seen(mem, tenant, text, "sequential") == seen(
                reference, tenant, text, "sequential"
            )


def test_a_write_from_another_connection_is_seen(tmp_path: Path, embedder: Embedder) -> None:
    mem = Memory(tmp_path / "m.db", embedder=embedder, pool="off")
    other = Memory(tmp_path / "m.db", embedder=embedder, pool="off")
    try:
        mid = mem.remember("Bob plays the cello.", tenant="t", layer="semantic")
        before = seen(mem, "t", "What does Bob play?", "sequential")
        assert before == [(mid, "semantic", "Bob plays the cello.")]
        other.update(mid, tenant="t", text="Bob plays the cello and the piano.")
        after = seen(mem, "t", "What does Bob play?", "sequential")
        assert after == [(mid, "semantic", "Bob plays the cello and the piano.")]
        other.forget(mid, tenant="t")
        assert seen(mem, "t", "What does Bob play?", "sequential") == []
        assert mem.execution_stats()["rows"]["served"] == 0  # every read found its row stale
    finally:
        other.close()
        mem.close()


def test_rows_are_served_again_until_their_layer_is_written(
    memory: Memory,
) -> None:
    first = memory.remember("Bob plays the cello.", tenant="t", layer="semantic")
    second = memory.remember("Bob met Alice in Lisbon.", tenant="t", layer="episodic")
    rows, store = RowCache(), memory.store
    generations = memory.generations.get("t")
    assert [r.id for r in rows.get(store, "t", [second, 999, first], generations)] == [
        second,
        first,
    ]
    again = rows.get(store, "t", [first, second], generations)
    assert [r.id for r in again] == [first, second]
    assert rows.stats() == {"rows": 2, "served": 2, "read": 3}
    memory.remember("Alice paints.", tenant="t", layer="semantic")  # the semantic layer moves
    generations = memory.generations.get("t")
    rows.get(store, "t", [first, second], generations)
    assert rows.stats()["served"] == 3 and rows.stats()["read"] == 4  # the semantic row again
    assert rows.get(store, "other", [first, second], memory.generations.get("other")) == []


def test_the_cache_is_bounded_and_can_be_off(memory: Memory) -> None:
    ids = [memory.remember(f"memory number {n}", tenant="t", layer="semantic") for n in range(12)]
    generations = memory.generations.get("t")
    small = RowCache(kept=4)
    for memory_id in ids:
        small.get(memory.store, "t", [memory_id], generations)
    assert small.stats()["rows"] <= 4
    off = RowCache(kept=0)
    for _ in range(3):
        assert [r.id for r in off.get(memory.store, "t", ids, generations)] == ids
    assert off.stats() == {"rows": 0, "served": 0, "read": 0}
