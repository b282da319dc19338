"""The vector index under updates: superseded vectors never crowd out live ones, an exact
index compacts, and a long-lived index answers exactly as a freshly built one."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from athena import Memory
from athena.embedding import Embedder
from athena.retrieval.vector import EXACT_COMPACT_MIN, VectorIndexes


def _search(memory: Memory, indexes: VectorIndexes, text: str, limit: int) -> list[int]:
    generation = memory.generations.get("t")["semantic"]
    vector = memory.embedder.embed([text])[0]
    return [i for i, _ in indexes.search("t", "semantic", generation, vector, limit)]


def test_updates_do_not_crowd_out_live_vectors(tmp_path: Path, embedder: Embedder) -> None:
    with Memory(tmp_path / "v.db", embedder=embedder, execution="sequential") as memory:
        ids = [memory.remember(f"note {i} about gardening", tenant="t", layer="semantic")
               for i in range(12)]  # fmt: skip
        live = VectorIndexes(memory.store, memory.embedder.name)
        _search(memory, live, "hiking in the alps", 5)  # built now, then kept through updates
        for round_ in range(40):  # one memory, rewritten near the query again and again
            memory.update(ids[0], tenant="t", text=f"hiking in the alps, take {round_}")
            memory.update(ids[1], tenant="t", text=f"hiking in the alps again, take {round_}")
            assert len(_search(memory, live, "hiking in the alps", 5)) == 5
        fresh = VectorIndexes(memory.store, memory.embedder.name)
        assert _search(memory, live, "hiking in the alps", 5) == _search(
            memory, fresh, "hiking in the alps", 5
        )
        state = live._indexes[("t", "semantic")]._state
        assert state.dead <= max(EXACT_COMPACT_MIN, len(state.latest) // 4)  # compacted


@settings(max_examples=15, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 30)), min_size=1, max_size=120))
def test_long_lived_index_equals_a_fresh_one(
    tmp_path_factory: object, edits: list[tuple[int, int]]
) -> None:
    from athena.embedding import load_embedder

    path = Path(str(tmp_path_factory.mktemp("vec"))) / "v.db"  # type: ignore[attr-defined]
    with Memory(path, embedder=load_embedder("static"), execution="sequential") as memory:
        ids = [memory.remember(f"memory {i}", tenant="t", layer="semantic") for i in range(6)]
        live = VectorIndexes(memory.store, memory.embedder.name)
        for which, word in edits:
            memory.update(ids[which], tenant="t", text=f"memory {which} word {word} lisbon")
            got = _search(memory, live, "lisbon word 7", 4)
        fresh = VectorIndexes(memory.store, memory.embedder.name)
        assert got == _search(memory, fresh, "lisbon word 7", 4)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 300), st.data())
def test_the_same_vector_scores_the_same_wherever_it_sits(size: int, data: st.DataObject) -> None:
    import numpy as np

    from athena.retrieval.vector import ExactBackend

    rng = np.random.default_rng(size)
    matrix = rng.random((size, 256), dtype=np.float32)
    twin, query = rng.random(256, dtype=np.float32), rng.random(256, dtype=np.float32)
    spots = data.draw(st.lists(st.integers(0, size - 1), min_size=1, max_size=6, unique=True))
    spots.append(size - 1)  # the tail rows are where BLAS switches kernels
    spots = sorted(set(spots))
    matrix[spots] = twin
    backend = ExactBackend(256)
    backend.add(matrix)
    scores, positions = backend.search(query, size)
    tied = [s for s, p in zip(scores.tolist(), positions.tolist(), strict=True) if p in spots]
    assert len(set(tied)) == 1  # BLAS's tail kernel would give the last rows another ulp
    ranked = [p for p in positions.tolist() if p in spots]
    assert ranked == spots  # equal scores rank by position, every time


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(0, 12), max_size=15), min_size=1, max_size=5))
def test_loading_batches_counts_what_each_supersedes(batches: list[list[int]]) -> None:
    """A state loading batches of (id, seq) in seq order keeps each id's newest seq and
    counts one superseded vector per id loaded again, in a batch or across them."""
    import numpy as np

    from athena.retrieval.vector import VectorBatch, _State

    state, latest, dead, seq = _State(None, [], [], {}), {}, 0, 0
    for ids in batches:
        if not ids:
            continue
        seqs = list(range(seq + 1, seq + 1 + len(ids)))
        seq = seqs[-1]
        matrix = np.ones((len(ids), 4), np.float32)
        state.append(VectorBatch(np.array(seqs), np.array(ids), matrix), hnsw_cutoff=1_000)
        for memory_id, s in zip(ids, seqs, strict=True):
            dead += memory_id in latest
            latest[memory_id] = s
    assert state.latest == latest and state.dead == dead
    assert state.ids == [i for b in batches for i in b] and len(state.seqs) == len(state.ids)
