"""The graph layer: an entity named in more than the ubiquity share of a tenant's memories
neither matches nor expands, exactly at the line (the store counts mentions only up to it);
the entity names it holds, read from where it last stopped, are always those a full read
gives."""

from __future__ import annotations

import itertools
import sqlite3
from dataclasses import astuple
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from athena import Memory
from athena.layers.graph import UBIQUITY, Names, read_names
from athena.store import EntityChanges, EntityNames, PreparedMemory, SQLiteStore

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
            st.sampled_from(["put", "put", "text", "delete", "read", "other", "full"]),
            st.integers(0, 4),  # which memory (key)
            st.lists(st.sampled_from(POOL), min_size=1, max_size=3),
        ),
        max_size=30,
    )
)
def test_names_read_incrementally_are_a_full_read(
    store: SQLiteStore, ops: list[tuple[str, int, list[str]]]
) -> None:
    """Whatever writes, rewrites and deletions came between two reads, in this tenant and
    another (deleting the file's newest entities lets their ids be taken again, below the
    largest id read), the names held are exactly the tenant's."""
    tenant = f"h{next(_TENANTS)}"  # one store for every example: each its own tenant
    put(store, f"{tenant}-other", "k", ["Zed"])  # another tenant's names never show
    stored: dict[str, int] = {}
    others: dict[str, int] = {}
    held = read_names(store, tenant, None)
    for op, which, names in ops:
        key = f"k{which}"
        if op == "other" and key in others:
            store.delete(f"{tenant}-other", [others.pop(key)])
        elif op == "other":
            others[key] = put(store, f"{tenant}-other", key, names)
        elif op == "put":
            stored[key] = put(store, tenant, key, names)
        elif op == "text" and key in stored:
            store.delete(tenant, [stored.pop(key)])
            stored[key] = put(store, tenant, key, names)
        elif op == "delete" and key in stored:
            store.delete(tenant, [stored.pop(key)])
            assert unmentioned(store, tenant) == 0  # a deletion leaves no entity unmentioned
        else:  # a full read now and then, so the names held are not all recent ones
            held = read_names(store, tenant, None if op == "full" else held)
            assert held_names(held) == all_names(store, tenant)
            assert len(held) == len(all_names(store, tenant))
            assert (held.changes, held.last_id) == astuple(store.entity_names(tenant))[:2]
    held = read_names(store, tenant, held)
    assert held_names(held) == all_names(store, tenant)


@given(
    first=st.frozensets(st.sampled_from(POOL)),
    steps=st.lists(st.tuples(st.frozensets(st.sampled_from(POOL)), st.sets(st.sampled_from(POOL)))),
    merge_at=st.integers(0, 3),
)
def test_names_changed_step_by_step_hold_what_a_set_would(
    first: frozenset[str], steps: list[tuple[frozenset[str], set[str]]], merge_at: int
) -> None:
    """Each step removes names and (re)adds others, as a read of the change log gives them;
    the names held, and their count, are a plain set's, whether or not the small sets were
    merged into the large one."""
    import athena.layers.graph as graph

    model = set(first)
    names = Names.read(EntityNames(0, 1, first))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(graph, "MERGE_AT", merge_at)
        for number, (removed, added) in enumerate(steps, start=1):
            model = (model - removed) | added
            names = names.changed(EntityChanges(number, 1, frozenset(added), removed, True))
            assert {name for name in POOL if name in names} == model
            assert len(names) == len(model)


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
    assert store.entity_names("t").changes == 3  # Cy went, its id given again, Ann went


def test_an_id_given_again_below_the_largest_read_is_not_missed(store: SQLiteStore) -> None:
    put(store, "t", "a", ["Ann"])
    other = put(store, "u", "z", ["Zed"])
    newest = put(store, "t", "b", ["Bo"])  # entity ids: Ann, Zed (u's), Bo
    held = read_names(store, "t", None)
    store.delete("u", [other])
    store.delete("t", [newest])  # the file's two newest entities go
    put(store, "t", "c", ["Cy"])  # and Cy takes Zed's id, below the largest t's reader saw
    now = store.entity_names("t")
    assert now.last_id < held.last_id and now.names == {"ann", "cy"}
    assert held_names(read_names(store, "t", held)) == {"ann", "cy"}


def test_names_read_past_a_pruned_change_log_are_read_again(store: SQLiteStore) -> None:
    put(store, "t", "a", ["Ann"])
    held = read_names(store, "t", None)
    conn = sqlite3.connect(store.path)  # 1,300 entities come and go
    for i in range(1300):
        conn.execute("INSERT INTO entities (tenant, norm, name) VALUES ('t', ?, 'x')", (f"n{i}",))
        conn.execute("DELETE FROM entities WHERE norm = ?", (f"n{i}",))
    conn.commit()
    logged = conn.execute("SELECT count(*), min(seq) FROM entity_changes WHERE tenant = 't'")
    count, first = logged.fetchone()
    conn.close()
    now = store.entity_names("t")
    assert 1024 <= count < 1280 and first == now.changes - count + 1  # the newest kept
    assert not store.entity_changes("t", held.last_id, held.changes).complete
    assert store.entity_changes("t", held.last_id, first - 1).complete
    again = read_names(store, "t", held)
    assert held_names(again) == {"ann"} and len(again) == 1
    assert (again.last_id, again.changes) == (now.last_id, now.changes)


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


def entity(entity_id: int | None, tenant: str, norm: str) -> str:
    """``INTO entities ...`` for an INSERT, the id given or (None) SQLite's."""
    if entity_id is None:
        return f"INTO entities (tenant, norm, name) VALUES ('{tenant}', '{norm}', 'x')"
    return f"INTO entities (id, tenant, norm, name) VALUES ({entity_id}, '{tenant}', '{norm}', 'x')"


@pytest.mark.parametrize(
    ("before", "between"),
    [
        ([], ["INSERT " + entity(0, "t", "zero")]),  # an id of 0 in a tenant with none
        (  # the same after the tenant held only an id below 0
            ["INSERT " + entity(-1, "t", "a"), "DELETE FROM entities WHERE id = -1"],
            ["INSERT " + entity(0, "t", "zero")],
        ),
        (  # a REPLACE displaces the row at its id: no delete trigger fires
            ["INSERT " + entity(1, "t", "a"), "INSERT " + entity(2, "t", "ann")],
            ["INSERT OR REPLACE " + entity(2, "t", "bob")],
        ),
        (  # an update's REPLACE displaces the newest entity, whose id is then reused
            ["INSERT " + entity(1, "t", "a"), "INSERT " + entity(2, "t", "b")],
            [
                "UPDATE OR REPLACE entities SET norm = 'b' WHERE id = 1",
                "INSERT " + entity(None, "t", "c"),
            ],
        ),
        (  # the newest entity moved by its rowid, then its id reused
            ["INSERT " + entity(1, "t", "a"), "INSERT " + entity(2, "t", "b")],
            ["UPDATE entities SET rowid = 0 WHERE id = 2", "INSERT " + entity(None, "t", "c")],
        ),
        (  # the same by its other names
            ["INSERT " + entity(1, "t", "a"), "INSERT " + entity(2, "t", "b")],
            [
                "UPDATE entities SET _rowid_ = 0 WHERE id = 2",
                "UPDATE entities SET oid = 2 WHERE id = 0",
                "UPDATE entities SET oid = -1 WHERE id = 2",
                "INSERT " + entity(None, "t", "c"),
            ],
        ),
        (  # another tenant's entity displaced by one of this tenant's
            ["INSERT " + entity(1, "u", "a"), "INSERT " + entity(2, "t", "b")],
            ["INSERT OR REPLACE " + entity(1, "t", "x")],
        ),
    ],
)
def test_a_raw_writers_changes_are_logged(
    store: SQLiteStore, before: list[str], between: list[str]
) -> None:
    """Writers other than Athena (raw SQL), in ways SQLite fires no plain trigger for."""
    conn = sqlite3.connect(store.path)
    for sql in before:
        conn.execute(sql)
    conn.commit()
    held = read_names(store, "t", None)
    for sql in between:
        conn.execute(sql)
    conn.commit()
    conn.close()
    held = read_names(store, "t", held)
    assert {name for name in all_names(store, "t") if name in held} == all_names(store, "t")
    assert len(held) == len(all_names(store, "t"))
