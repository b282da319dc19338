"""The catch-up thread: loaded indexes follow this process's writes before the next recall,
never anything else, and never at the cost of a recall's correctness."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from athena import Memory, catch_up
from athena.catch_up import MOST, OtherWriters
from athena.embedding import Embedder
from athena.errors import InvalidInput
from athena.records import MemoryInput
from athena.retrieval.vector import ExactBackend, HnswBackend

WORDS = "tea coffee lisbon porto train boat sister brother garden river piano".split()


@pytest.fixture
def mem(tmp_path: Path, embedder: Embedder) -> Iterator[Memory]:
    m = Memory(tmp_path / "c.db", embedder=embedder, pool="off")
    yield m
    m.close()


def loaded(mem: Memory) -> int:
    """Index rows the recalls applied."""
    return mem.pipeline.ctx.loaded()


def followed(mem: Memory) -> int:
    """Index rows the catch-up thread applied."""
    ctx = mem.pipeline.ctx
    return ctx.indexes.followed + ctx.lexicon.followed


def test_a_write_to_a_loaded_scope_is_caught_up_before_the_next_recall(mem: Memory) -> None:
    mem.remember("Ann drinks tea in Lisbon", tenant="t", key="ann")
    mem.recall("who drinks tea?", tenant="t")  # loads the tenant's indexes
    before = loaded(mem)
    mem.remember("Bo drinks coffee in Porto", tenant="t", key="bo")
    assert mem.catch_up.settle(10.0)
    assert followed(mem) == 2  # its vector and its postings, by the thread
    hits = mem.recall("who drinks coffee in Porto?", tenant="t", k=2).hits
    assert loaded(mem) == before  # the recall found both indexes current
    assert hits[0].key == "bo"


def test_a_scope_no_recall_has_searched_stays_unbuilt(mem: Memory) -> None:
    mem.remember("Ann drinks tea", tenant="a")
    mem.recall("tea?", tenant="a")
    mem.remember("Bo drinks coffee", tenant="b")
    mem.remember("Cy reads books", tenant="a", layer="semantic")  # a's semantic: never searched
    assert mem.catch_up.settle(10.0)
    assert mem.catch_up.followed >= 1 and followed(mem) == 0  # taken up; nothing loaded
    mem.remember("Dee reads too", tenant="a")  # a's episodic is loaded: followed
    assert mem.catch_up.settle(10.0)
    assert followed(mem) == 2


def test_a_bulk_import_is_left_to_the_next_recall(mem: Memory) -> None:
    mem.remember("Ann drinks tea", tenant="t")
    mem.recall("tea?", tenant="t")
    before = loaded(mem)
    items = [
        MemoryInput(layer="episodic", text=f"note {i} about {WORDS[i % len(WORDS)]}", tenant="t")
        for i in range(MOST + 1)
    ]
    mem.remember_many(items)
    assert mem.catch_up.settle(10.0)
    assert followed(mem) == 0  # too far behind: not the thread's
    hits = mem.recall("a note about the piano", tenant="t", k=3).hits
    assert loaded(mem) == before + 2 * (MOST + 1)
    assert hits and all(h.text.startswith("note ") for h in hits)
    mem.remember_many(items[:MOST])  # as far behind as it takes: the thread's
    assert mem.catch_up.settle(10.0)
    assert followed(mem) == 2 * MOST


def test_the_thread_never_builds_a_graph(tmp_path: Path, embedder: Embedder) -> None:
    with Memory(tmp_path / "g.db", embedder=embedder, pool="off", hnsw_cutoff=8) as mem:
        mem.remember_many(
            [MemoryInput(layer="episodic", text=f"fact {i}", tenant="t") for i in range(8)]
        )
        mem.recall("fact?", tenant="t")
        index = mem.pipeline.ctx.indexes._indexes[("t", "episodic")]
        assert isinstance(index._state.backend, ExactBackend)
        mem.remember("fact 8", tenant="t")  # past the cutoff: the next recall builds it
        assert mem.catch_up.settle(10.0)
        assert isinstance(index._state.backend, ExactBackend) and len(index) == 8
        mem.recall("fact 8?", tenant="t")
        assert isinstance(index._state.backend, HnswBackend) and len(index) == 9
        mem.remember("fact 9", tenant="t")  # a graph it only adds to
        assert mem.catch_up.settle(10.0)
        assert len(index) == 10 and mem.pipeline.ctx.indexes.followed == 1


def test_a_failed_catch_up_is_left_to_the_recall(
    mem: Memory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    mem.remember("Ann drinks tea", tenant="t")
    mem.recall("tea?", tenant="t")
    lexicon = mem.pipeline.ctx.lexicon

    def broken(*args: object) -> int:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(lexicon, "follow", broken)
    with caplog.at_level(logging.DEBUG, logger="athena.catch_up"):
        mem.remember("Bo drinks coffee", tenant="t", key="bo")
        assert mem.catch_up.settle(10.0)
    assert "disk on fire" in caplog.text
    monkeypatch.undo()
    assert mem.recall("who drinks coffee?", tenant="t", k=1).hits[0].key == "bo"
    before = followed(mem)
    mem.remember("Cy drinks water", tenant="t", key="cy")  # the thread lives on
    assert mem.catch_up.settle(10.0)
    assert followed(mem) == before + 2
    assert mem.recall("who drinks water?", tenant="t", k=1).hits[0].key == "cy"


def test_a_listener_that_fails_does_not_lose_the_write(mem: Memory) -> None:
    def broken(touched: set[tuple[str, str]]) -> None:
        raise RuntimeError("listener on fire")

    mem.store.on_commit(broken)
    ids: list[int] = []

    def write() -> None:  # committed, and the caller hears so; writing goes on
        ids.append(mem.remember("Ann drinks tea", tenant="t"))
        ids.append(mem.remember("Bo drinks coffee", tenant="t"))

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    writer.join(30.0)  # (a dead writer thread once left remember waiting for ever)
    assert len(ids) == 2 and mem.get(ids[0], tenant="t")["text"] == "Ann drinks tea"


def test_close_during_a_catch_up_waits_for_that_scope_only(
    tmp_path: Path, embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    mem = Memory(tmp_path / "x.db", embedder=embedder, pool="off")
    for tenant in ("a", "b"):
        mem.remember("Ann drinks tea", tenant=tenant)
        mem.recall("tea?", tenant=tenant)
    started, taken = threading.Event(), []
    plain = catch_up.follow

    def slow(pipeline: Any, tracker: Any, tenant: str, layers: set[str]) -> bool:
        taken.append(tenant)
        started.set()
        deadline = time.monotonic() + 30.0
        while not mem.catch_up._closed and time.monotonic() < deadline:
            time.sleep(0.01)  # until close() has begun
        return plain(pipeline, tracker, tenant, layers)

    monkeypatch.setattr(catch_up, "follow", slow)
    mem.remember_many([MemoryInput(layer="episodic", text="Bo", tenant=t) for t in ("a", "b")])
    assert started.wait(10.0)
    thread = mem.catch_up._thread
    mem.close()
    assert thread is not None and not thread.is_alive()
    assert len(taken) == 1  # the other tenant was left
    mem.catch_up.close()  # idempotent


def _until(done: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done():
            return True
        time.sleep(0.005)
    return False


@pytest.fixture
def pair(tmp_path: Path, embedder: Embedder) -> Iterator[tuple[Memory, Memory]]:
    """Two Memory objects on one file: to SQLite and the engine, two processes."""
    path = tmp_path / "p.db"
    with (
        Memory(path, embedder=embedder, pool="off") as mem,
        Memory(path, embedder=embedder, pool="off") as other,
    ):
        yield mem, other


def test_another_process_writes_are_caught_up_when_watching(pair: tuple[Memory, Memory]) -> None:
    mem, other = pair
    other.remember("Ann drinks tea in Lisbon", tenant="t", key="ann")
    mem.recall("who drinks tea?", tenant="t")  # loads the tenant's indexes
    before = loaded(mem)
    mem.catch_up.watch(0.002)
    mem.catch_up.watch(0.002)  # idempotent
    other.remember("Bo drinks coffee in Porto", tenant="t", key="bo")
    assert _until(lambda: followed(mem) == 2)  # its vector and postings, by mem's thread
    assert mem.catch_up.watched >= 1
    hits = mem.recall("who drinks coffee in Porto?", tenant="t", k=2).hits
    assert loaded(mem) == before  # current already
    assert hits[0].key == "bo"


def test_the_watcher_leaves_tenants_it_holds_nothing_of_unread(
    pair: tuple[Memory, Memory], monkeypatch: pytest.MonkeyPatch
) -> None:
    mem, other = pair
    other.remember("Ann drinks tea in Lisbon", tenant="t")
    other.remember("Cy reads in Faro", tenant="u")
    mem.recall("who drinks tea?", tenant="t")  # t's indexes loaded; u never searched here
    asked: list[str] = []
    real = mem.generations.get

    def get(tenant: str) -> dict[str, int]:
        asked.append(tenant)
        return real(tenant)

    monkeypatch.setattr(mem.generations, "get", get)
    mem.catch_up.watch(0.002)
    other.remember("Bo drinks coffee in Porto", tenant="t")
    other.remember("Dee swims in Faro", tenant="u")
    assert _until(lambda: followed(mem) == 2)
    assert mem.catch_up.settle(5.0)
    assert "t" in asked and "u" not in asked  # u's generations were never read for it
    assert not mem.pipeline.ctx.residency.holds("u")


def test_without_watching_the_recall_catches_up_another_process_writes(
    pair: tuple[Memory, Memory],
) -> None:
    mem, other = pair
    other.remember("Ann drinks tea in Lisbon", tenant="t", key="ann")
    mem.recall("who drinks tea?", tenant="t")
    before = loaded(mem)
    other.remember("Bo drinks coffee in Porto", tenant="t", key="bo")
    time.sleep(0.1)
    assert followed(mem) == 0 and mem.catch_up.watched == 0
    assert mem.recall("who drinks coffee in Porto?", tenant="t", k=2).hits[0].key == "bo"
    assert loaded(mem) == before + 2


def test_other_writers_are_read_after_a_pause_and_in_pieces(
    pair: tuple[Memory, Memory], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(catch_up, "SCAN", 2)
    mem, other = pair
    mem.catch_up.close()  # the thread would take the scopes first
    others = OtherWriters(mem.store)
    assert others.scopes(0.0) == {}  # nothing written
    items = [MemoryInput(layer="semantic", text=f"fact {i}", tenant=f"t{i}") for i in range(5)]
    other.remember_many(items)
    assert others.scopes(1.0) == {}  # the file moved: wait for it to be still
    assert others.scopes(1.005) == {}  # still for 5 ms only
    found = [others.scopes(1.02), others.scopes(1.02), others.scopes(1.02)]
    assert found == [
        {"t0": {"semantic"}, "t1": {"semantic"}},
        {"t2": {"semantic"}, "t3": {"semantic"}},
        {"t4": {"semantic"}},  # read on at once: the previous reads were full
    ]
    assert others.scopes(2.0) == {}  # nothing since


def test_watching_is_stopped_by_close(tmp_path: Path, embedder: Embedder) -> None:
    mem = Memory(tmp_path / "s.db", embedder=embedder, pool="off")
    with pytest.raises(InvalidInput):
        mem.catch_up.watch(0)
    mem.catch_up.watch(0.002)
    thread = mem.catch_up._thread
    assert thread is not None and thread.is_alive()
    mem.close()
    assert not thread.is_alive()
    mem.catch_up.watch()  # closed: nothing starts
    assert mem.catch_up._thread is None


OPS = st.lists(
    st.tuples(
        st.sampled_from(["remember", "update", "forget", "recall"]),
        st.sampled_from(WORDS[:4]),  # few words: a recall often asks for the newest memory
        st.sampled_from(["episodic", "semantic"]),
        st.booleans(),  # then wait for the catch-up (else the next recall may race it)
    ),
    min_size=1,
    max_size=25,
)
PEOPLE = ("Ann", "Cy", "Dee")


def views(mem: Memory, word: str) -> list[object]:
    """What a recall of ``word`` reads from the in-process state: each text layer's lexical
    and vector rankings with their scores, and the graph layer's names and memory count,
    synced to the current generations as a recall syncs them."""
    from athena.layers.graph import GraphLayer
    from athena.retrieval.lexical import query_stems

    ctx, generations = mem.pipeline.ctx, mem.generations.get("t")
    vector = mem.embedder.embed([f"{word}?"])[0]
    seen: list[object] = []
    for layer in ("episodic", "semantic"):
        generation = generations.get(layer, 0)
        seen.append(ctx.lexicon.search("t", layer, generation, query_stems(word), 50))
        seen.append(ctx.indexes.search("t", layer, generation, vector, 50))
    graph = mem.layers["graph"]
    assert isinstance(graph, GraphLayer)
    names, count = graph._known(ctx, "t", generations)
    seen.append(([p.lower() in names for p in PEOPLE], len(names), count))
    return seen


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS)
def test_recalls_equal_a_memory_without_the_thread(
    embedder: Embedder, ops: list[tuple[str, str, str, bool]]
) -> None:
    """For any interleaving of writes, recalls and catch-ups, every recall, and every index
    it reads, answers as in a Memory on the same file whose indexes catch up only when it
    recalls."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "h.db"
        with (
            Memory(path, embedder=embedder, pool="off") as mem,
            Memory(path, embedder=embedder, pool="off") as ref,
            Memory(path, embedder=embedder, pool="off") as watcher,  # another process's view
        ):
            ref.catch_up.close()
            watcher.catch_up.watch(0.001)  # its thread follows mem's writes as others' writes
            mem.remember("Ann drinks tea in Lisbon", tenant="t", layer="semantic")
            mem.remember("Bo took the train to Porto", tenant="t", layer="episodic")
            for m in (mem, ref, watcher):  # every index loaded: the threads' to follow
                m.recall("tea?", tenant="t", strategy="sequential")
            ids: list[int] = []
            seen, wrote = watcher.catch_up.watched, False
            for n, (op, word, layer, settle) in enumerate(ops):
                text = f"{word} note {n} with {PEOPLE[n % len(PEOPLE)]}"
                wrote = wrote or op == "remember" or (op in ("update", "forget") and bool(ids))
                if op == "remember":
                    ids.append(mem.remember(text, tenant="t", layer=layer))
                elif op == "update" and ids:
                    mem.update(ids[n % len(ids)], tenant="t", text=text)
                elif op == "forget" and ids:
                    mem.forget(ids.pop(n % len(ids)), tenant="t")
                elif op == "recall":
                    want_views = views(ref, word)
                    assert views(mem, word) == want_views
                    assert views(watcher, word) == want_views
                    want = ref.recall(f"{word}?", tenant="t", k=10, strategy="sequential")
                    for m in (mem, watcher):
                        got = m.recall(f"{word}?", tenant="t", k=10, strategy="sequential")
                        assert [(h.id, h.score) for h in got.hits] == [
                            (h.id, h.score) for h in want.hits
                        ]
                if settle:
                    assert mem.catch_up.settle(10.0)
                    if wrote:  # and the watcher has found the writes and followed them
                        assert _until(lambda before=seen: watcher.catch_up.watched > before)
                        assert watcher.catch_up.settle(10.0)
                        seen, wrote = watcher.catch_up.watched, False
