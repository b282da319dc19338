"""Building hits from layer rankings: reading the rows in chunks as the walk needs them must
give exactly the hits of reading every candidate's row at once, over a real store."""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from dataclasses import fields, replace
from pathlib import Path
from types import MappingProxyType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from athena import Memory
from athena.embedding import Embedder
from athena.execution.aggregate import fuse
from athena.execution.pipeline import HITS_SLACK, Pipeline, _hit, pack_hits, unpack_hits
from athena.layers.protocol import LayerResult
from athena.records import Hit, MemoryInput, RecallQuery, make_query

WORDS = ("cat", "garden", "trip", "piano", "sister", "job", "paint", "lake", "book", "race")


@pytest.fixture(scope="module")
def mem(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Iterator[Memory]:
    memory = Memory(tmp_path_factory.mktemp("pipeline") / "m.db", embedder=embedder)
    rng = random.Random(7)
    turns = [
        MemoryInput("episodic", f"Ann: the {rng.choice(WORDS)} and the {w}", "t", key=f"D{i}")
        for i, w in enumerate(WORDS * 8)
    ]
    facts = [  # facts restate turns: a fact whose turns were all returned is a repeat
        MemoryInput(
            "semantic",
            f"Ann likes the {rng.choice(WORDS)} and the {rng.choice(WORDS)}",
            "t",
            sources=tuple(sorted({f"D{rng.randrange(len(turns))}" for _ in range(2)})),
        )
        for _ in range(60)
    ]
    memory.remember_many([*turns, *facts])
    yield memory
    memory.close()


def read_at_once(
    pipeline: Pipeline, query: RecallQuery, results: Mapping[str, LayerResult]
) -> tuple[Hit, ...]:
    """The hits' specification: every candidate's row read first, then the same walk."""
    fused = fuse(results, query.layers)
    window = fused[: max(query.k * 3, query.k + 20)]
    rows = {r.id: r for r in pipeline.ctx.store.get(query.tenant, [i for i, _ in window])}
    fresh: list[Hit] = []
    repeats: list[Hit] = []
    covered: set[str] = set()
    for memory_id, score in window:
        row = rows.get(memory_id)
        if row is None:
            continue
        if row.sources and covered.issuperset(row.sources):
            repeats.append(_hit(row, score))
        else:
            fresh.append(_hit(row, score))
            covered.update(row.sources)
        if len(fresh) == query.k:
            break
    return tuple((fresh + repeats)[: query.k])


def hits_reading(
    pipeline: Pipeline, query: RecallQuery, results: Mapping[str, LayerResult]
) -> tuple[tuple[Hit, ...], list[int]]:
    """``pipeline.hits`` and how many rows each of its reads asked the store for."""
    read: list[int] = []
    store_get = pipeline.ctx.store.get

    def counted(tenant: str, wanted: list[int]) -> list[object]:
        read.append(len(wanted))
        return store_get(tenant, wanted)  # type: ignore[return-value]

    pipeline.ctx.store.get = counted  # type: ignore[method-assign]
    try:
        return pipeline.hits(query, results), read
    finally:
        del pipeline.ctx.store.get


@settings(max_examples=60, deadline=None)
@given(
    words=st.lists(st.sampled_from(WORDS), min_size=1, max_size=3),
    k=st.integers(min_value=1, max_value=60),
    gone=st.lists(st.integers(min_value=0, max_value=80), max_size=12),
)
def test_rows_read_in_chunks_give_the_hits_of_reading_them_all(
    mem: Memory, words: list[str], k: int, gone: list[int]
) -> None:
    pipeline: Pipeline = mem.engine.pipeline  # type: ignore[attr-defined]
    query = make_query("what about the " + " ".join(words), "t", k, ("episodic", "semantic"))
    request = pipeline.request(query, mem.generations.get("t"))
    results = {name: pipeline.run(name, request, "sequential") for name in query.layers}
    # Ids whose rows are gone (deleted since the ranking) sit among the candidates.
    episodic = results["episodic"]
    ids, scores = list(episodic.ids), list(episodic.scores)
    for n, at in enumerate(sorted(set(gone))):
        if at <= len(ids):
            ids.insert(at, 10**9 + n)
            scores.insert(at, scores[min(at, len(scores) - 1)] if scores else 0.0)
    results["episodic"] = replace(episodic, ids=tuple(ids), scores=tuple(scores))
    got, read = hits_reading(pipeline, query, results)
    assert got == read_at_once(pipeline, query, results)
    assert read[0] <= k + HITS_SLACK and sum(read) <= max(k * 3, k + 20)


def test_a_later_chunk_reads_what_the_empty_slots_need_at_the_rate_seen(
    tmp_path: Path, embedder: Embedder
) -> None:
    memory = Memory(tmp_path / "m.db", embedder=embedder)
    try:
        turn = memory.remember("Ann: my cat Miso likes the garden", tenant="t", key="D0")
        facts = [
            MemoryInput(
                "semantic", f"Ann's cat Miso and the garden, note {i}", "t", sources=("D0",)
            )
            for i in range(30)
        ]
        memory.remember_many(facts)
        pipeline: Pipeline = memory.engine.pipeline  # type: ignore[attr-defined]
        query = make_query("Ann's cat Miso in the garden", "t", 2, ("episodic", "semantic"))
        request = pipeline.request(query, memory.generations.get("t"))
        results = {name: pipeline.run(name, request, "sequential") for name in query.layers}
        hits, read = hits_reading(pipeline, query, results)
        # Every fact restates the one turn: one fresh hit in the first 7 rows, one slot left,
        # so the next chunk is 1 slot x 7 rows a fresh hit + the slack; then the window's rest.
        assert len(hits) == 2 and turn in {h.id for h in hits}
        assert read[:2] == [2 + HITS_SLACK, 7 + HITS_SLACK] and sum(read) == 22
    finally:
        memory.close()


def test_a_packed_hit_holds_every_field_of_a_hit() -> None:
    """pack_hits names the fields one by one (deriving them from the dataclass cost the
    caller 14 µs more a recall): a field added to Hit must be added there too."""
    names = [f.name for f in fields(Hit)]
    values = {name: f"v-{name}" for name in names} | {"metadata": MappingProxyType({"m": 1})}
    hit = Hit(**values)
    (packed,) = pack_hits((hit,))
    assert len(packed) == len(names) and set(packed[:-1]) == {f"v-{n}" for n in names[:-1]}
    assert unpack_hits((packed,)) == (hit,)
