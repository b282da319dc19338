"""The graph layer: an entity named in more than the ubiquity share of a tenant's memories
neither matches nor expands, exactly at the line (the store counts mentions only up to it);
the entity names it holds, read from where it last stopped, are always those a full read
gives."""

from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from athena import Memory
from athena.layers.graph import UBIQUITY, Names, read_names
from athena.store import PreparedMemory, SQLiteStore

POOL = ("Ann", "Bo", "Cy", "Dee", "Eli", "Fay")


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


def put(store: SQLiteStore, tenant: str, key: str, names: list[str]) -> int:
    [memory_id] = store.put(
        [
            PreparedMemory(
                tenant=tenant, layer="episodic", key=key, kind="turn",
                text=f"{key} {' '.join(names)}", session=None, actor=None, event_time=None,
                sources=(), metadata={}, attributes={}, vector=np.ones(4, np.float32) / 2,
                model="m", entities=tuple(names),
            )
        ]
    )  # fmt: skip
    return memory_id


def all_names(store: SQLiteStore, tenant: str) -> set[str]:
    conn = sqlite3.connect(store.path)
    try:
        rows = conn.execute("SELECT norm FROM entities WHERE tenant = ?", (tenant,)).fetchall()
    finally:
        conn.close()
    return {row[0] for row in rows}


def unmentioned(store: SQLiteStore, tenant: str) -> int:
    conn = sqlite3.connect(store.path)
    try:
        return int(
            conn.execute(
                "SELECT count(*) FROM entities e WHERE tenant = ? AND NOT EXISTS"
                " (SELECT 1 FROM mentions n WHERE n.entity_id = e.id)",
                (tenant,),
            ).fetchone()[0]
        )
    finally:
        conn.close()


def held_names(names: Names) -> set[str]:
    return {name.casefold() for name in (*POOL, "Zed") if name.casefold() in names}


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    s = SQLiteStore(tmp_path / "g.db")
    yield s  # type: ignore[misc]
    s.close()


_TENANTS = itertools.count()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["put", "put", "text", "delete", "read"]),
            st.integers(0, 4),  # which memory (key)
            st.lists(st.sampled_from(POOL), min_size=1, max_size=3),
        ),
        max_size=30,
    )
)
def test_names_read_incrementally_are_a_full_read(
    store: SQLiteStore, ops: list[tuple[str, int, list[str]]]
) -> None:
    """Whatever writes, rewrites and deletions came between two reads (deleting the newest
    entity lets its id be taken again), the names held are exactly the tenant's, and a read
    past a deletion starts over."""
    tenant = f"h{next(_TENANTS)}"  # one store for every example: each its own tenant
    put(store, f"{tenant}-other", "k", ["Zed"])  # another tenant's names never show
    stored: dict[str, int] = {}
    held = read_names(store, tenant, None)
    for op, which, names in ops:
        key = f"k{which}"
        if op == "put":
            stored[key] = put(store, tenant, key, names)
        elif op == "text" and key in stored:
            store.delete(tenant, [stored.pop(key)])
            stored[key] = put(store, tenant, key, names)
        elif op == "delete" and key in stored:
            store.delete(tenant, [stored.pop(key)])
            assert unmentioned(store, tenant) == 0  # a deletion leaves no entity unmentioned
        else:
            held = read_names(store, tenant, held)
            assert held_names(held) == all_names(store, tenant)
            assert len(held) == len(all_names(store, tenant))
            assert held.last_id == store.entity_names(tenant).last_id
    held = read_names(store, tenant, held)
    assert held_names(held) == all_names(store, tenant)


def test_a_reused_entity_id_is_not_missed(store: SQLiteStore) -> None:
    first = put(store, "t", "a", ["Ann"])
    put(store, "t", "b", ["Bo"])
    held = read_names(store, "t", None)
    newest = store.entity_names("t").last_id
    store.delete("t", [put(store, "t", "c", ["Cy"])])  # Cy's entity, the newest, goes
    put(store, "t", "d", ["Dee"])  # and Dee's takes its id
    assert store.entity_names("t").last_id == newest + 1
    held = read_names(store, "t", held)
    assert held_names(held) == {"ann", "bo", "dee"}
    store.delete("t", [first])
    assert held_names(read_names(store, "t", held)) == {"bo", "dee"}
    assert store.entity_names("t").deletions == 2
    assert store.entity_names("t", newest).names == {"dee"}


def test_recall_finds_a_name_first_written_after_the_last_recall(memory: Memory) -> None:
    memory.remember("Quillon painted the fence.", tenant="t")
    graph = {"layers": ["graph"], "strategy": "sequential"}
    assert memory.recall("Who is Zorvak?", tenant="t", **graph).hits == ()  # type: ignore[arg-type]
    memory.remember("Zorvak walked to the lake.", tenant="t")
    found = memory.recall("Who is Zorvak?", tenant="t", **graph)  # type: ignore[arg-type]
    assert [hit.text for hit in found.hits] == ["Zorvak walked to the lake."]
    memory.forget(found.hits[0].id, tenant="t")
    assert memory.recall("Who is Zorvak?", tenant="t", **graph).hits == ()  # type: ignore[arg-type]


def test_a_layer_shared_by_two_stores_keeps_each_ones_names(tmp_path: Path) -> None:
    from athena.layers import default_layers

    shared = default_layers()
    options = {"pool": "off", "execution": "sequential", "layers": shared}
    graph = {"layers": ["graph"], "strategy": "sequential"}
    with Memory(tmp_path / "x.db", **options) as x, Memory(tmp_path / "y.db", **options) as y:  # type: ignore[arg-type]
        for text in ("Quillon met Ann.", "Bo met Cy.", "Ann met Dee."):
            x.remember(text, tenant="t")
        assert len(x.recall("Who is Quillon?", tenant="t", **graph).hits) == 1  # type: ignore[arg-type]
        y.remember("Zorvak walked to the lake.", tenant="t")  # ids below x's newest
        found = y.recall("Who is Zorvak?", tenant="t", **graph)  # type: ignore[arg-type]
        assert [hit.text for hit in found.hits] == ["Zorvak walked to the lake."]
