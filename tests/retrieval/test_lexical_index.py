"""The tenant-local lexical index: a long-lived index (and a vector index) answers exactly as a
freshly built one after any mix of writes, updates and deletes, scores never depend on other
tenants, and filters search deeper until enough rows pass."""

from __future__ import annotations

import doctest
import gc
import math
import string
from array import array
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import athena.retrieval.lexical_index as lexical_index
from athena import Memory
from athena.embedding import Embedder, load_embedder
from athena.records import MemoryInput
from athena.retrieval.lexical import query_stems, stems
from athena.retrieval.lexical_index import (
    COMPACT_MIN,
    K1,
    MAX_TF,
    B,
    LexicalIndexes,
    LexicalPostings,
    Pending,
)
from athena.retrieval.vector import VectorIndexes

WORDS = ["apple", "river", "piano", "rocket", "garden", "violet", "tiger", "cloud"]


def _lexical(memory: Memory, indexes: LexicalIndexes, tenant: str, text: str, limit: int = 10):
    generation = memory.generations.get(tenant).get("episodic", 0)
    return indexes.search(tenant, "episodic", generation, query_stems(text), limit)


def _vector(memory: Memory, indexes: VectorIndexes, text: str, limit: int = 5) -> list[int]:
    generation = memory.generations.get("t").get("episodic", 0)
    vector = memory.embedder.embed([text])[0]
    return [i for i, _ in indexes.search("t", "episodic", generation, vector, limit)]


edit = st.tuples(
    st.sampled_from(["remember", "update", "forget", "other"]),
    st.integers(0, 40),
    st.lists(st.sampled_from(WORDS), min_size=1, max_size=4),
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(edits=st.lists(edit, min_size=1, max_size=60), probe=st.sampled_from(WORDS))
def test_long_lived_indexes_equal_fresh_ones(
    tmp_path_factory: pytest.TempPathFactory, edits: list[tuple[str, int, list[str]]], probe: str
) -> None:
    path = tmp_path_factory.mktemp("lex") / "l.db"
    with Memory(path, embedder=load_embedder("static"), execution="sequential") as memory:
        owned = [memory.remember("seed words here", tenant="t")]
        lexical = LexicalIndexes(memory.store)
        vectors = VectorIndexes(memory.store, memory.embedder.name)
        for kind, which, words in edits:
            text = " ".join(words)
            if kind == "remember" or not owned:
                owned.append(memory.remember(text, tenant="t"))
            elif kind == "update":
                memory.update(owned[which % len(owned)], tenant="t", text=text + " again")
            elif kind == "forget":
                memory.forget(owned.pop(which % len(owned)), tenant="t")
            else:
                memory.remember(text, tenant="u")  # another tenant: must change nothing here
            got = _lexical(memory, lexical, "t", probe), _vector(memory, vectors, probe)
        fresh = LexicalIndexes(memory.store), VectorIndexes(memory.store, memory.embedder.name)
        assert got == (_lexical(memory, fresh[0], "t", probe), _vector(memory, fresh[1], probe))
        assert all(memory_id in owned for memory_id, _ in got[0])
        assert all(memory_id in owned for memory_id in got[1])


def test_scores_ignore_other_tenants(tmp_path: Path, embedder: Embedder) -> None:
    with Memory(tmp_path / "l.db", embedder=embedder, execution="sequential") as memory:
        for text in ["the red piano", "a piano and a river", "rivers and tigers", "red red red"]:
            memory.remember(text, tenant="t")
        indexes = LexicalIndexes(memory.store)
        before = _lexical(memory, indexes, "t", "red piano river")
        memory.remember_many(
            [MemoryInput(tenant="u", layer="episodic", text=f"piano piano {i}") for i in range(200)]
        )
        assert _lexical(memory, indexes, "t", "red piano river") == before
        assert _lexical(memory, LexicalIndexes(memory.store), "t", "red piano river") == before


def test_deletes_compact_and_filters_search_deeper(tmp_path: Path, embedder: Embedder) -> None:
    with Memory(tmp_path / "l.db", embedder=embedder, execution="sequential") as memory:
        ids = [memory.remember(f"garden note {i}", tenant="t", session=f"s{i % 10}")
               for i in range(300)]  # fmt: skip
        indexes = LexicalIndexes(memory.store)
        _lexical(memory, indexes, "t", "garden")
        for memory_id in ids[:200]:
            memory.forget(memory_id, tenant="t")
        found = _lexical(memory, indexes, "t", "garden", 500)
        assert sorted(m for m, _ in found) == ids[200:]
        index = indexes._indexes[("t", "episodic")]
        assert index._dead <= max(COMPACT_MIN, len(index) // 4)
        # Only one row in ten passes the session filter: the search must go deeper.
        hits = memory.recall("garden", tenant="t", k=15, session="s3", strategy="sequential")
        assert len(hits.hits) == 10 and all(h.session == "s3" for h in hits.hits)


def test_module_examples() -> None:
    assert doctest.testmod(lexical_index).failed == 0


def test_postings_are_invisible_to_the_garbage_collector() -> None:
    """Postings as array.array pairs were 740k collector-tracked objects over 110 tenants,
    and a full collection a 124 ms stall; now neither the postings nor their dicts are."""
    import gc

    class Feed:
        def changes_after(self, tenant: str, layer: str, after: int) -> list[Any]:
            texts = [f"memory {i} about topic{i % 97} and word{i % 13}" for i in range(400)]
            changes = [(i + 1, i + 1, t) for i, t in enumerate(texts)]
            return changes + [(401 + i, i + 1, None) for i in range(150)]

    index = lexical_index.LexicalIndex("t", "episodic")
    index.sync(Feed(), generation=1)  # built, then compacted by the deletes
    assert len(index) == 250 and index._dead == 0
    assert index.search(["topic5"], 3)
    for postings in (index._positions, index._tfs):
        assert postings and not gc.is_tracked(postings)
        assert not any(gc.is_tracked(v) for v in postings.values())


def test_stemming_leaves_nothing_for_the_garbage_collector() -> None:
    """PyStemmer's word cache held a tracked two-item list per word (a third of a warmed
    100k-memory process's tracked objects); stemming thousands of new words must leave no
    tracked object behind, in a new thread's stemmer as in one already made."""
    import gc
    import threading

    from athena.retrieval.lexical import stems

    def grown(first: int) -> int:
        stems(" ".join(f"warmup{i}" for i in range(10)))  # this thread's stemmer exists
        gc.collect()
        before = len(gc.get_objects())
        for chunk in range(first, first + 3000, 100):
            stems(" ".join(f"zqx{i}walking" for i in range(chunk, chunk + 100)))
        gc.collect()
        return len(gc.get_objects()) - before

    assert grown(0) < 500  # with the cache: 3,000 more
    out: list[int] = []
    worker = threading.Thread(target=lambda: out.append(grown(10_000)))
    worker.start()
    worker.join()
    assert out[0] < 500


def _reference_bm25(docs: dict[int, list[str]], query: list[str]) -> dict[int, float]:
    """BM25 written out term by term, document by document: what the array code must equal."""
    average = sum(len(d) for d in docs.values()) / len(docs) or 1.0
    scores: dict[int, float] = {}
    for term in dict.fromkeys(query):
        holding = [m for m, d in docs.items() if term in d]
        df = len(holding)
        if not df:
            continue
        idf = math.log(1.0 + (len(docs) - df + 0.5) / (df + 0.5))
        for memory_id in holding:
            tf = docs[memory_id].count(term)
            norm = K1 * (1.0 - B + B * len(docs[memory_id]) / average)
            scores[memory_id] = scores.get(memory_id, 0.0) + idf * tf * (K1 + 1.0) / (tf + norm)
    return scores


@settings(max_examples=60, deadline=None)
@given(
    texts=st.lists(
        st.lists(st.sampled_from(WORDS), min_size=1, max_size=6), min_size=1, max_size=30
    ),
    dropped=st.sets(st.integers(0, 29)),
    query=st.lists(st.sampled_from(WORDS), min_size=1, max_size=5),
)
def test_scores_equal_bm25_written_out(
    texts: list[list[str]], dropped: set[int], query: list[str]
) -> None:
    index = LexicalPostings("t", "episodic")
    pending = Pending()
    for memory_id, words in enumerate(texts):
        index._add(memory_id, " ".join(words), pending)
        if memory_id == len(texts) // 2:  # two batches: new terms, then terms held already
            index._flush(pending)
            pending = Pending()
    index._flush(pending)
    for memory_id in dropped & set(range(len(texts))):
        index._drop(memory_id)  # superseded documents stay in the postings until compacted
    live = {m: stems(" ".join(w)) for m, w in enumerate(texts) if m not in dropped}
    expected = _reference_bm25(live, query_stems(" ".join(query))) if live else {}
    ids, scores = index._scores(query_stems(" ".join(query)))
    got = dict(zip(ids.tolist(), scores.tolist(), strict=True))
    assert got.keys() == {m for m, s in expected.items() if s > 0.0}
    for memory_id, score in got.items():
        assert score == pytest.approx(expected[memory_id], rel=1e-12)


@settings(max_examples=200, deadline=None)
@given(
    texts=st.lists(
        st.text(alphabet=st.sampled_from("abcé'ß İ Straße running RUNS x_9-٣.'"), max_size=40),
        min_size=1,
        max_size=8,
    ),
    room=st.integers(1, 12),
)
def test_stems_remembered_equal_stems_computed_afresh(texts: list[str], room: int) -> None:
    """The stemmed words kept between documents (emptied when ``room`` is reached) never
    change what a text is indexed as."""
    from athena.retrieval import lexical

    saved, lexical.STEMMED_MAX = lexical.STEMMED_MAX, room  # type: ignore[misc]
    lexical._STEMMED.clear()
    widest = 0  # the most distinct words of one text so far: kept whole past the room
    try:
        for text in texts + texts:
            found = lexical._WORD.findall(lexical._fold(text))  # the Unicode pattern
            assert stems(text) == lexical._stem([w.replace("'", "") for w in found])
            widest = max(widest, len(set(found)))  # kept by the token as found
            assert len(lexical._STEMMED) <= max(room, widest)
        assert not gc.is_tracked(lexical._STEMMED)  # no full collection ever walks it
    finally:
        lexical.STEMMED_MAX = saved  # type: ignore[misc]
        lexical._STEMMED.clear()


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(), st.text(alphabet=string.printable)))
@example("Acme™ widgets")  # folding lower-cases, then NFKD makes "TM": capitals survive
@example("𝐇𝐞𝐥𝐥𝐨, №5")
@example("Sᴬmple x'ᴮ")
def test_stems_find_the_tokens_the_unicode_pattern_finds(text: str) -> None:
    """Folded ASCII text is tokenised by an ASCII pattern: always the same tokens as the
    Unicode one (their letters and digits are the same characters there)."""
    from athena.retrieval import lexical

    found = lexical._WORD.findall(lexical._fold(text))
    assert stems(text) == lexical._stem([w.replace("'", "") for w in found])


def _postings(index: LexicalPostings) -> dict[str, list[tuple[int, int]]]:
    """Each term's (position, frequency) pairs, as the index holds them."""
    return {
        term: list(
            zip(
                array("I", bytes(at)).tolist(),
                array("H", bytes(index._tfs[term])).tolist(),
                strict=True,
            )
        )
        for term, at in index._positions.items()
    }


@settings(max_examples=150, deadline=None)
@given(
    batches=st.lists(
        st.lists(st.lists(st.sampled_from([*WORDS, "!"]), max_size=8), max_size=12),
        min_size=1,
        max_size=4,
    )
)
def test_postings_written_out(batches: list[list[list[str]]]) -> None:
    """Each term's postings are exactly its documents' positions, ascending, with the times
    it occurs there, whatever the batches (documents without a token, "!", included)."""
    index, texts = LexicalPostings("t", "episodic"), []
    for batch in batches:
        pending = Pending()
        for words in batch:
            index._add(len(texts), " ".join(words), pending)
            texts.append(stems(" ".join(words)))
        index._flush(pending)
    expected: dict[str, list[tuple[int, int]]] = {}
    for position, tokens in enumerate(texts):
        for term, count in Counter(tokens).items():
            expected.setdefault(term, []).append((position, count))
    assert _postings(index) == expected
    assert index._lengths.tolist() == [len(tokens) for tokens in texts]


def test_a_term_frequency_is_capped() -> None:
    index, pending = LexicalPostings("t", "episodic"), Pending()
    index._add(1, "apple pie", pending)
    index._add(2, " ".join(["apple"] * (MAX_TF + 2)) + " pie", pending)
    index._flush(pending)
    assert _postings(index) == {"appl": [(0, 1), (1, MAX_TF)], "pie": [(0, 1), (1, 1)]}


def test_a_build_that_fails_part_way_keeps_what_it_added_searchable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Feed:
        def __init__(self) -> None:
            self.rows = [(1, 1, "apple pie"), (2, 2, "boom"), (3, 3, "river bank")]

        def changes_after(
            self, tenant: str, layer: str, after: int, limit: int | None = None
        ) -> list[tuple[int, int, str | None]]:
            return [row for row in self.rows if row[0] > after]

    real = lexical_index.stems

    def stems_or_fail(text: str) -> list[str]:
        if text == "boom":
            raise MemoryError("as a large build might")
        return real(text)

    index, feed = lexical_index.LexicalIndex("t", "episodic"), Feed()
    monkeypatch.setattr(lexical_index, "stems", stems_or_fail)
    with pytest.raises(MemoryError):
        index.sync(feed, 1)
    assert [m for m, _ in index.search(query_stems("apple"), 5)] == [1]  # flushed anyway
    monkeypatch.setattr(lexical_index, "stems", real)
    index.sync(feed, 1)  # from where it stopped
    assert [m for m, _ in index.search(query_stems("river"), 5)] == [3]
    assert [m for m, _ in index.search(query_stems("boom"), 5)] == [2]
    assert len(index) == 3


def test_a_build_keeps_few_tracked_objects_alive(monkeypatch: pytest.MonkeyPatch) -> None:
    """However many distinct terms a batch has, its pending postings are a handful of
    objects the garbage collector tracks: per-term containers, alive through a whole build,
    made a process rebuilding tenants run a full collection every 70 recalls."""

    texts = [f"word{i} term{i % 97} shared{i % 13} other{i * 7}" for i in range(600)]
    rows: list[tuple[int, int, str | None]] = [(n + 1, n + 1, t) for n, t in enumerate(texts)]

    class Feed:
        def changes_after(
            self, tenant: str, layer: str, after: int, limit: int | None = None
        ) -> list[tuple[int, int, str | None]]:
            return [row for row in rows if row[0] > after]  # the same row objects

    alive: list[int] = []
    real = lexical_index.LexicalIndex._flush

    def counted(index: lexical_index.LexicalIndex, pending: Pending) -> None:
        alive.append(len(gc.get_objects()))
        real(index, pending)

    monkeypatch.setattr(lexical_index.LexicalIndex, "_flush", counted)
    index = lexical_index.LexicalIndex("t", "episodic")
    gc.disable()
    try:
        before = len(gc.get_objects())
        index.sync(Feed(), 1)
    finally:
        gc.enable()
    assert len(index) == 600 and len(index._positions) > 1_300  # distinct terms
    assert alive[0] - before < 100
