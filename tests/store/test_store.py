"""The SQLite store: migrations, round trips, tenant scoping, error translation."""

from __future__ import annotations

import itertools
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from athena.errors import NotFound, StoreError, StoreLocked, StoreReadOnly
from athena.store import EntityChanges, EntityNames, PreparedMemory, RowFilter, SQLiteStore
from athena.store.connection import translate, unwritable
from athena.store.schema import SCHEMA_VERSION, migrate
from athena.store.sql_reads import ENTITY_CHANGES, ENTITY_NAMES
from athena.store.sql_writes import UNMENTIONED
from athena.store.turns import QUIET_S


def prepared(
    tenant: str = "t", key: str = "k", text: str = "hello world", **kw: object
) -> PreparedMemory:
    base: dict[str, object] = {
        "tenant": tenant,
        "layer": "episodic",
        "key": key,
        "kind": "turn",
        "text": text,
        "session": None,
        "actor": None,
        "event_time": None,
        "sources": (key,),
        "metadata": {},
        "attributes": {},
        "vector": np.ones(4, np.float32) / 2,
        "model": "m",
    }
    base.update(kw)
    return PreparedMemory(**base)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    s = SQLiteStore(tmp_path / "s.db")
    yield s  # type: ignore[misc]
    s.close()


def test_new_file_is_migrated_to_current_version(store: SQLiteStore) -> None:
    conn = sqlite3.connect(store.path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_reopening_keeps_data_and_does_not_remigrate(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "s.db")
    [mid] = s.put([prepared()])
    s.close()
    s2 = SQLiteStore(tmp_path / "s.db")
    assert s2.get("t", [mid])[0].text == "hello world"
    s2.close()


def older_file(path: Path, version: int) -> sqlite3.Connection:
    """A connection to a new file at schema ``version``, as that release left it."""
    conn = sqlite3.connect(path)
    migrate(conn, to=version)
    return conn


def test_version_2_file_gains_the_change_feed(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = older_file(path, 2)
    conn.execute(
        "INSERT INTO memories (tenant, layer, key, kind, text, created_at, updated_at, scope)"
        " VALUES ('t', 'episodic', 'k', 'turn', 'an old memory', 0, 0, 's')"
    )
    conn.commit()
    conn.close()
    s = SQLiteStore(path)
    try:
        assert s.changes_after("t", "episodic", 0) == [(1, 1, "an old memory")]
        s.delete("t", [1])
        assert s.changes_after("t", "episodic", 1) == [(2, 1, None)]
        assert s.deleted_after("t", "episodic", 0) == [(2, 1)]
    finally:
        s.close()


def test_version_5_file_gains_the_mentions_event_times(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = older_file(path, 5)
    for memory_id, when in ((1, 7.0), (2, None), (3, 9.0)):
        conn.execute(
            "INSERT INTO memories (id, tenant, layer, key, kind, text, event_time, created_at,"
            " updated_at, scope) VALUES (?, 't', 'episodic', ?, 'turn', 'Ann said', ?, 0, 0, 's')",
            (memory_id, f"k{memory_id}", when),
        )
        conn.execute(
            "INSERT OR IGNORE INTO entities (id, tenant, norm, name) VALUES (1, 't', 'ann', 'Ann')"
        )
        conn.execute("INSERT INTO mentions (entity_id, memory_id) VALUES (1, ?)", (memory_id,))
    conn.execute(
        "INSERT INTO memories (id, tenant, layer, key, kind, text, created_at, updated_at,"
        " scope) VALUES (9, 'u', 'episodic', 'k', 'turn', 'another tenant', 0, 0, 's')"
    )
    conn.commit()
    conn.close()
    s = SQLiteStore(path)
    try:
        assert s.mentioning("t", [1], 10) == [(3, 1), (1, 1), (2, 1)]
        s.update("t", 2, {"event_time": 8.0}, None)
        assert s.mentioning("t", [1], 2) == [(3, 1), (2, 1)]
        assert [s.memory_count(t) for t in ("t", "u", "nobody")] == [3, 1, 0]
        assert s.entities("t", ["ann"]) == {"ann": (1, 3)}
        s.delete("t", [1])
        assert s.memory_count("t") == 2
        assert s.entities("t", ["ann"], cap=1) == {"ann": (1, 1)}
        assert s.entities("t", ["ann"]) == {"ann": (1, 2)}  # the mention went with it
        assert s.deleted_after("t", "episodic", 0) == [(5, 1)]
    finally:
        s.close()
    conn = sqlite3.connect(path)
    # A writer that knows nothing of schema 6 (an older release still running, another
    # tool): the triggers keep the mentions' event times and the counts right all the same.
    conn.execute(
        "INSERT INTO memories (id, tenant, layer, key, kind, text, event_time, created_at,"
        " updated_at, scope) VALUES (4, 't', 'episodic', 'k4', 'turn', 'Ann', 11.0, 0, 0, 's')"
    )
    conn.execute("INSERT INTO mentions (entity_id, memory_id) VALUES (1, 4)")
    conn.execute("UPDATE memories SET tenant = 'u' WHERE id = 2")
    conn.commit()
    conn.close()
    s = SQLiteStore(path)
    try:
        assert s.mentioning("t", [1], 1) == [(4, 1)]
        assert s.entities("t", ["ann"]) == {"ann": (1, 3)}
        assert [s.memory_count(t) for t in ("t", "u")] == [2, 2]
    finally:
        s.close()
    conn = sqlite3.connect(path)
    plan = conn.execute(
        "EXPLAIN QUERY PLAN SELECT seq, memory_id FROM memory_changes"
        " WHERE tenant = 't' AND layer = 'episodic' AND seq > 0 AND deleted ORDER BY seq"
    ).fetchall()
    conn.close()
    assert "memory_changes_deleted" in str(plan)  # the tombstones alone, not every change


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ops=st.lists(
        st.tuples(st.booleans(), st.sampled_from(["a", "b"]), st.integers(0, 6)), max_size=30
    )
)
def test_memory_count_follows_every_write(
    store: SQLiteStore, ops: list[tuple[bool, str, int]]
) -> None:
    """Puts (new keys and rewrites of old ones) and deletes, in two tenants: the kept
    count is always the tenant's count of rows."""
    prefix = f"c{next(_EXAMPLES)}"
    for put, tenant, key in ops:
        name = f"{prefix}{tenant}"
        if put:
            store.put([prepared(tenant=name, key=f"k{key}", text=f"text {key}")])
        else:
            store.delete(name, [m.id for m in store.get(name, list(range(1, 10_000)))][:1])
    conn = sqlite3.connect(store.path)
    for tenant in ("a", "b"):
        name = f"{prefix}{tenant}"
        rows = conn.execute("SELECT count(*) FROM memories WHERE tenant = ?", (name,)).fetchone()
        assert store.memory_count(name) == rows[0]
    conn.close()


def test_an_older_file_opened_read_only_is_refused_not_misread(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = older_file(path, 5)
    conn.commit()
    conn.close()
    with pytest.raises(StoreReadOnly, match="schema version 5"):
        SQLiteStore(path, readonly=True)  # its reads would ask for tables it lacks
    SQLiteStore(path).close()  # opened writable, it is migrated
    SQLiteStore(path, readonly=True).close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    SQLiteStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        SQLiteStore(path)


def test_same_key_updates_instead_of_duplicating(store: SQLiteStore) -> None:
    a = store.put([prepared(text="one")])
    b = store.put([prepared(text="two")])
    assert a == b
    assert store.stats("t")["memories"] == 1
    assert store.get("t", a)[0].text == "two"


def test_an_id_is_never_used_again(store: SQLiteStore) -> None:
    # The newest memory forgotten, the next one written to another scope: with SQLite's
    # own choice (largest id + 1) it took the same id, and its change replaced the
    # tombstone that tells the first scope's indexes the memory is gone.
    [first] = store.put([prepared(key="a")])
    store.delete("t", [first])
    [second] = store.put([prepared(tenant="u", key="b")])
    [third] = store.put([prepared(key="a")])  # the same key again: a new memory too
    assert len({first, second, third}) == 3 and first < second < third
    assert store.deleted_after("t", "episodic", 0) == [(store.change_seq_high() - 2, first)]
    assert store.get("t", [first]) == [] and store.get("u", [first]) == []


def test_rows_are_scoped_by_tenant(store: SQLiteStore) -> None:
    [mid] = store.put([prepared(tenant="alice")])
    assert store.get("bob", [mid]) == []
    assert store.delete("bob", [mid]) == []
    with pytest.raises(NotFound):
        store.update("bob", mid, {"text": "x"}, None)
    assert store.get("alice", [mid])[0].tenant == "alice"


def test_entity_counts_stop_at_the_cap(store: SQLiteStore) -> None:
    store.put([prepared(key=f"k{i}", entities=("Maria",) if i < 7 else ("Maria", "Jon"))
               for i in range(9)])  # fmt: skip
    store.put([prepared(tenant="u", key="x", entities=("Maria",))])  # another tenant's
    counts = {n: c for n, (_, c) in store.entities("t", ["maria", "jon", "nobody"]).items()}
    assert counts == {"maria": 9, "jon": 2}
    assert {n: c for n, (_, c) in store.entities("t", ["maria", "jon"], cap=5).items()} == {
        "maria": 5,  # at least five
        "jon": 2,
    }
    assert store.entities("t", ["maria"], cap=0)["maria"][1] == 0


_EXAMPLES = itertools.count()


def _mentions_joined(store: SQLiteStore, ids: list[int], limit: int) -> list[tuple[int, int]]:
    """The most recent mentions as the memories' own event times order them (the reference
    the mentions' copy must agree with)."""
    conn = sqlite3.connect(store.path)
    marks = ",".join("?" * len(ids))
    rows = conn.execute(
        "SELECT n.memory_id, n.entity_id FROM mentions n JOIN memories m ON m.id = n.memory_id"
        f" WHERE n.entity_id IN ({marks})"
        " ORDER BY m.event_time DESC, n.memory_id DESC, n.entity_id DESC LIMIT ?",
        (*ids, limit),
    ).fetchall()
    conn.close()
    return [(int(a), int(b)) for a, b in rows]


def test_mentioning_is_newest_event_first_and_follows_event_time_changes(
    store: SQLiteStore,
) -> None:
    ids = store.put(
        [prepared(key=f"k{i}", text=f"turn {i}", event_time=float(t), entities=("Maria",))
         for i, t in enumerate([5, 1, 9, 3])]
        + [prepared(key="none", text="no time", entities=("Maria", "Jon"))]
    )  # fmt: skip
    found = store.entities("t", ["maria", "jon"])
    maria, jon = found["maria"][0], found["jon"][0]
    # Newest first; a memory without an event time last.
    assert [m for m, _ in store.mentioning("t", [maria], 10)] == [ids[i] for i in (2, 0, 3, 1, 4)]
    assert store.mentioning("t", [maria, jon], 2) == [(ids[2], maria), (ids[0], maria)]
    store.update("t", ids[1], {"event_time": 100.0}, None)  # moves to the front
    store.put([prepared(key="k2", text="turn 2", event_time=0.5, entities=("Maria",))])  # back
    assert [m for m, _ in store.mentioning("t", [maria], 3)] == [ids[1], ids[0], ids[3]]
    assert store.mentioning("t", [maria, jon], 10) == _mentions_joined(store, [maria, jon], 10)


def logged(
    changes: int, last_id: int, names: set[str], removed: set[str] | None = None
) -> EntityChanges:
    return EntityChanges(changes, last_id, frozenset(names), frozenset(removed or ()), True)


def test_version_7_file_logs_changes_from_its_count(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = older_file(path, 7)
    conn.execute("INSERT INTO entities (id, tenant, norm, name) VALUES (4, 't', 'ann', 'Ann')")
    conn.execute("DELETE FROM entities WHERE id = 4")  # counted, not logged
    conn.commit()
    conn.close()
    s = SQLiteStore(path)
    try:  # a reader at that count saw no entity
        assert s.entity_changes("t", 0, 1) == logged(1, 0, set())  # nothing since the count
        assert not s.entity_changes("t", 4, 0).complete  # the change before it: not kept
        [memory_id] = s.put([prepared(key="a", entities=("Bo",))])
        assert s.entity_changes("t", 0, 1) == logged(1, 1, {"bo"})
        s.delete("t", [memory_id])
        assert s.entity_changes("t", 1, 1) == logged(2, 0, set(), {"bo"})
    finally:
        s.close()


def test_version_6_file_counts_and_logs_entity_changes(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = older_file(path, 6)
    for entity_id, tenant, norm in ((1, "t", "ann"), (2, "u", "bo"), (3, "t", "cy")):
        conn.execute(
            "INSERT INTO entities (id, tenant, norm, name) VALUES (?, ?, ?, ?)",
            (entity_id, tenant, norm, norm.title()),
        )
    conn.commit()
    conn.close()
    s = SQLiteStore(path)
    try:
        assert s.entity_names("t") == EntityNames(0, 3, frozenset({"ann", "cy"}))
        assert s.entity_changes("t", 1, 0) == logged(0, 3, {"cy"})
        assert s.entity_changes("t", 3, 0).names == frozenset()
        assert s.entity_names("nobody") == EntityNames(0, 0, frozenset())
    finally:
        s.close()
    conn = sqlite3.connect(path)
    # A writer that knows nothing of schemas 7-8: the triggers count and log what it removes
    # or renames.
    conn.execute("DELETE FROM entities WHERE id = 3")
    conn.execute("UPDATE entities SET norm = 'anne' WHERE id = 1")
    conn.execute("UPDATE entities SET name = 'Bob' WHERE id = 2")  # a display name: no count
    conn.execute("INSERT INTO entities (id, tenant, norm, name) VALUES (7, 'v', 'eve', 'Eve')")
    conn.execute("INSERT INTO entities (id, tenant, norm, name) VALUES (5, 'v', 'fay', 'Fay')")
    conn.commit()
    conn.close()
    s = SQLiteStore(path)
    try:
        assert s.entity_names("t") == EntityNames(2, 1, frozenset({"anne"}))
        assert s.entity_names("u") == EntityNames(0, 2, frozenset({"bo"}))
        assert s.entity_names("v") == EntityNames(1, 7, frozenset({"fay", "eve"}))  # 5 below 7
        # The log since a read that saw Ann and Cy: Cy's id and Ann's are read again.
        assert s.entity_changes("t", 3, 0) == logged(2, 1, {"anne"}, {"ann", "cy"})
        assert s.entity_changes("v", 7, 0) == logged(1, 7, {"fay"})
        assert s.entity_changes("t", 3, 1).removed == {"ann"}  # the rename alone
    finally:
        s.close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE entities SET tenant = 't' WHERE id = 2")  # moved: both tenants count
    conn.commit()
    plans = [
        conn.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()
        for sql, params in (
            (ENTITY_CHANGES, ("t", 5, 2)),
            (ENTITY_NAMES, ("t",)),
            (UNMENTIONED, ("t",)),
        )
    ]  # the statements the store runs
    conn.close()
    assert "entities_recent (tenant=? AND id>?)" in str(plans[0])  # past that id alone
    assert str(plans[0]).count("PRIMARY KEY (tenant=? AND seq>?)") == 2  # the log since
    assert "INTEGER PRIMARY KEY (rowid=?)" in str(plans[0])  # a logged id
    assert "COVERING INDEX sqlite_autoindex_entities_1 (tenant=?)" in str(plans[1])  # no rows
    assert "TEMP B-TREE" not in str(plans[:2])  # nothing sorted
    assert "entities_unmentioned" in str(plans[2])  # the unmentioned alone, not every entity
    s = SQLiteStore(path)
    try:
        assert s.entity_names("t") == EntityNames(3, 2, frozenset({"anne", "bo"}))
        assert s.entity_names("u") == EntityNames(1, 0, frozenset())
        assert s.entity_changes("t", 1, 2) == logged(3, 2, {"bo"})
        assert s.entity_changes("u", 2, 0) == logged(1, 0, set(), {"bo"})
    finally:
        s.close()
    s = SQLiteStore(path)
    try:  # a deletion takes every unmentioned entity of its tenant with it: Anne, Bo, Dee
        [kept] = s.put([prepared(key="a", entities=("Cy",))])
        [gone] = s.put([prepared(key="b", entities=("Dee", "Cy"))])
        s.delete("t", [gone])
        assert s.entity_names("t").names == {"cy"}
        assert s.entity_names("t").last_id == 8
        assert s.entity_names("t").changes == 6  # cy, the rename, bo's move, anne, bo, dee
        assert s.entity_names("u") == EntityNames(1, 0, frozenset())  # Bo moved to t, then went
        assert s.get("t", [kept])[0].text == "hello world"
    finally:
        s.close()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["put", "put", "time", "time", "text", "delete"]),
            st.integers(0, 5),  # which memory (key)
            st.none() | st.integers(0, 4).map(float),  # event time: ties on purpose
            st.lists(st.sampled_from(["Ann", "Bo", "Cy"]), min_size=1, max_size=3),
        ),
        max_size=25,
    ),
    limit=st.integers(1, 12),
)
def test_mentions_keep_their_memories_event_time(
    store: SQLiteStore,
    ops: list[tuple[str, int, float | None, list[str]]],
    limit: int,
) -> None:
    """Whatever writes, rewrites, retimes or deletes came before, the most recent mentions
    read from the mentions' index are those the memories' own event times give."""
    tenant = f"h{next(_EXAMPLES)}"  # one store for every example: each its own tenant
    stored: dict[str, int] = {}
    for op, which, when, names in ops:
        key = f"k{which}"
        known = stored.get(key)
        if op == "put":
            [stored[key]] = store.put([prepared(tenant=tenant, key=key, event_time=when,
                text=f"{key} {' '.join(names)}", entities=tuple(names))])  # fmt: skip
        elif known is not None and op == "time":
            store.update(tenant, known, {"event_time": when}, None)
        elif known is not None and op == "text":
            text = f"{key} now {' '.join(names)}"
            new = prepared(tenant=tenant, key=key, text=text, entities=tuple(names))
            store.update(tenant, known, {"text": text, "event_time": when}, new)
        elif known is not None:
            store.delete(tenant, [stored.pop(key)])
    conn = sqlite3.connect(store.path)
    unequal = conn.execute(
        "SELECT count(*) FROM mentions n JOIN memories m ON m.id = n.memory_id"
        " WHERE n.event_time IS NOT m.event_time"
    ).fetchone()[0]
    counted = dict(
        conn.execute(
            "SELECT e.norm, count(n.memory_id) FROM entities e"
            " LEFT JOIN mentions n ON n.entity_id = e.id WHERE e.tenant = ? GROUP BY e.id",
            (tenant,),
        ).fetchall()
    )
    conn.close()
    assert unequal == 0
    kept = store.entities(tenant, ["ann", "bo", "cy"])
    assert {norm: count for norm, (_, count) in kept.items()} == counted  # the kept counts
    entity_ids = [eid for eid, _ in kept.values()]
    assert store.mentioning(tenant, entity_ids, limit) == _mentions_joined(store, entity_ids, limit)


def test_lexical_search_is_scoped_and_filtered(store: SQLiteStore) -> None:
    store.put([prepared(tenant="a", key="1", text="red apple", event_time=10.0)])
    store.put([prepared(tenant="a", key="2", text="red car", event_time=20.0)])
    store.put([prepared(tenant="b", key="1", text="red apple")])
    hits = store.lexical("a", "episodic", '"red"', 10, RowFilter())
    assert len(hits) == 2
    only_late = store.lexical("a", "episodic", '"red"', 10, RowFilter(since=15.0))
    assert [store.get("a", [i])[0].text for i, _ in only_late] == ["red car"]


def test_generation_moves_with_every_committed_write(store: SQLiteStore) -> None:
    seen: list[set[tuple[str, str]]] = []
    store.on_commit(seen.append)
    [mid] = store.put([prepared()])
    g1 = store.generations("t")["episodic"]
    store.update("t", mid, {"text": "changed"}, None)
    g2 = store.generations("t")["episodic"]
    store.delete("t", [mid])
    g3 = store.generations("t")["episodic"]
    assert g1 < g2 < g3
    assert all(("t", "episodic") in s for s in seen)


def test_readers_do_not_map_the_file_and_see_every_commit(store: SQLiteStore) -> None:
    # A mapped WAL reader unmaps the whole file after each commit by another connection
    # (benchmarks/reader_mmap.py: a recall after a write ~7% dearer); the writer maps it.
    reader = store._readers.get()
    assert reader.execute("PRAGMA mmap_size").fetchone()[0] == 0  # set so, not by default
    assert store._writer.run(lambda conn, _: conn.execute("PRAGMA mmap_size").fetchone()[0]) > 0
    for i in range(3):
        [mid] = store.put([prepared(key=f"k{i}", text=f"text {i}")])
        assert [row.text for row in store.get("t", [mid])] == [f"text {i}"]


def test_writing_pauses_are_told_once_per_burst_and_a_failing_listener_is_survived(
    store: SQLiteStore,
) -> None:
    import time

    told: list[float] = []

    def broken() -> None:
        raise RuntimeError("listener on fire")

    store.on_quiet(broken)  # before the counting one: it must still be called
    store.on_quiet(lambda: told.append(time.monotonic()))
    done = time.monotonic()
    store.put([prepared(key=f"k{i}") for i in range(3)])
    deadline = time.monotonic() + 10.0
    while not told and time.monotonic() < deadline:
        time.sleep(0.005)
    assert len(told) == 1 and told[0] - done >= QUIET_S  # once, after the pause
    store.save_state("learned", "{}")  # touches no memory: no pause to tell of
    time.sleep(5 * QUIET_S)
    assert len(told) == 1
    [mid] = store.put([prepared(key="again")])  # writing goes on
    assert store.get("t", [mid])


def test_failed_write_changes_nothing(store: SQLiteStore) -> None:
    store.put([prepared(key="keep")])
    before = store.stats(None)
    bad = prepared(key="bad")
    object.__setattr__(bad, "layer", None)  # NOT NULL violation inside the transaction
    with pytest.raises(StoreError):
        store.put([prepared(key="first-of-batch"), bad])
    assert store.stats(None) == before


def test_sqlite_errors_are_translated() -> None:
    assert isinstance(translate(sqlite3.OperationalError("database is locked")), StoreLocked)
    assert (
        type(translate(sqlite3.OperationalError("attempt to write a readonly database"))).__name__
        == "StoreReadOnly"
    )
    assert (
        type(translate(sqlite3.OperationalError("database or disk is full"))).__name__
        == "StoreFull"
    )
    assert (
        type(translate(sqlite3.DatabaseError("file is not a database"))).__name__ == "StoreCorrupt"
    )


def test_not_a_database_file_is_a_typed_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError):
        SQLiteStore(path)


def test_read_only_store_refuses_every_write(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with_data = SQLiteStore(path)
    [mid] = with_data.put([prepared()])
    with_data.close()
    store = SQLiteStore(path, readonly=True)
    try:
        before = store.get("t", [mid])
        with pytest.raises(StoreReadOnly):  # update used to skip the guard and write
            store.update("t", mid, {"metadata": {"x": 1}}, None)
        with pytest.raises(StoreReadOnly):
            store.put([prepared(key="other")])
        with pytest.raises(StoreReadOnly):
            store.delete("t", [mid])
        store.save_state("s", "v")  # learned state and telemetry are not kept: no error
        store.append_telemetry([(0.0, "t", "q", "sequential", "{}")], keep=10)
        assert store.get("t", [mid]) == before and store.load_state("s") is None
        assert store.read_telemetry(10) == []
    finally:
        store.close()


def test_unwritable_file_opens_read_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file the OS will not let us write opens read-only, even where SQLite could open it
    (as root, or with nothing to migrate): reads work, writes raise StoreReadOnly."""
    path = tmp_path / "s.db"
    first = SQLiteStore(path)
    [mid] = first.put([prepared()])
    first.close()
    real_access = os.access

    def access(target: str | Path, mode: int) -> bool:
        return mode != os.W_OK and real_access(target, mode)

    monkeypatch.setattr(os, "access", access)  # what athena.store.connection asks
    store = SQLiteStore(path)
    try:
        assert store.readonly and store.read_only_reason is not None
        assert "not writable" in store.read_only_reason
        assert store.get("t", [mid])[0].text == "hello world"
        with pytest.raises(StoreReadOnly, match="read-only"):
            store.put([prepared(key="other")])
        with pytest.raises(StoreReadOnly):
            store.update("t", mid, {"metadata": {"x": 1}}, None)
    finally:
        store.close()
    monkeypatch.undo()
    again = SQLiteStore(path)
    try:
        assert not again.readonly
        again.put([prepared(key="other")])
    finally:
        again.close()


def test_a_wal_file_deleted_while_the_store_opens_is_not_read_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process's last connection deletes the -wal and -shm as it closes; one that
    vanishes while this store checks it is one SQLite creates, not one it cannot write
    (a writer process in tests/test_concurrency.py once opened read-only so)."""
    path = tmp_path / "s.db"
    SQLiteStore(path).close()
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").write_bytes(b"")
    real_access = os.access

    def access(target: str | Path, mode: int) -> bool:
        if mode == os.W_OK and str(target).endswith(("-wal", "-shm")):
            Path(target).unlink(missing_ok=True)  # the other process closes just now
            return False
        return real_access(target, mode)

    monkeypatch.setattr(os, "access", access)  # what athena.store.connection asks
    assert unwritable(path) is None  # what SQLiteStore asks once it has opened the file


def test_a_wal_file_created_while_the_store_opens_is_not_read_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other race: another process's first connection creates the -wal and -shm just
    after this store found them missing; asked again, they are writable."""
    path = tmp_path / "s.db"
    SQLiteStore(path).close()
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    real_access, created = os.access, set()

    def access(target: str | Path, mode: int) -> bool:
        name = str(target)
        if mode == os.W_OK and name.endswith(("-wal", "-shm")) and name not in created:
            created.add(name)
            Path(name).write_bytes(b"")  # the other process opens just now
            return False  # the answer from before it did
        return real_access(target, mode)

    monkeypatch.setattr(os, "access", access)
    assert unwritable(path) is None
    assert len(created) == 2


def test_missing_file_in_an_unwritable_place_is_still_an_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError):
        SQLiteStore(tmp_path / "no" / "such" / "dir" / "s.db")


def test_integrity_check_runs_fts5_check(store: SQLiteStore) -> None:
    [mid] = store.put([prepared()])
    assert store.integrity_check() == "ok"
    conn = sqlite3.connect(store.path, isolation_level=None)
    try:
        text, scope = conn.execute(
            "SELECT text, scope FROM memories WHERE id = ?", (mid,)
        ).fetchone()
        conn.execute(  # drop the row from the lexical index behind the store's back
            "INSERT INTO memories_fts (memories_fts, rowid, text, scope)"
            " VALUES ('delete', ?, ?, ?)",
            (mid, text, scope),
        )
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"  # 3.40: no FTS5
    finally:
        conn.close()
    result = store.integrity_check()
    assert result != "ok" and "fts5" in result
    assert store.get("t", [mid])[0].text == "hello world"  # the check wrote nothing


texts = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    min_size=1,
    max_size=300,
).filter(lambda s: s.strip() != "")
metadata = st.dictionaries(
    st.text(min_size=1, max_size=10),
    st.recursive(
        st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
        ),
        max_leaves=8,
    ),
    max_size=4,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    text=texts,
    tenant=st.text(min_size=1, max_size=20).filter(lambda s: s.strip() != "" and "\x00" not in s),
    meta=metadata,
    when=st.none() | st.floats(-1e10, 1e10, allow_nan=False),
    sources=st.lists(st.text(min_size=1, max_size=12), max_size=4),
)
def test_round_trip(
    store: SQLiteStore,
    text: str,
    tenant: str,
    meta: dict[str, object],
    when: float | None,
    sources: list[str],
) -> None:
    try:
        tenant.encode("utf-8")
    except UnicodeEncodeError:
        return
    [mid] = store.put(
        [
            prepared(
                tenant=tenant,
                key=text[:50],
                text=text,
                metadata=meta,
                event_time=when,
                sources=tuple(sources),
            )
        ]
    )
    row = store.get(tenant, [mid])[0]
    assert (row.text, row.tenant, row.event_time, row.sources) == (
        text,
        tenant,
        when,
        tuple(sources),
    )
    assert row.metadata == meta
