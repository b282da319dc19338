"""Vector index snapshots: a graph built once is loaded by the next index (another
process too), catches up exactly on what was written since, and a snapshot that cannot be
trusted (another database, one restored from an older copy, a damaged file) is ignored."""

from __future__ import annotations

import multiprocessing as mp
import shutil
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from athena import Memory
from athena.retrieval import lexical_index
from athena.retrieval.lexical import query_stems
from athena.retrieval.lexical_index import LexicalIndexes
from athena.retrieval.snapshots import IndexSnapshots, for_store
from athena.retrieval.vector import VectorIndexes
from athena.store.sqlite import SQLiteStore

CUTOFF = 30  # past this many vectors a scope gets a graph (the default is 20,000)
QUERIES = ("a walk by the river", "dinner with friends", "memory 7", "the lisbon trip")


def _fill(memory: Memory, n: int, start: int = 0) -> list[int]:
    texts = [f"memory {i}: {QUERIES[i % 4]} number {i}" for i in range(start, start + n)]
    return [memory.remember(t, tenant="t", layer="semantic") for t in texts]


def _indexes(memory: Memory, snapshots: bool = True, cutoff: int = CUTOFF) -> VectorIndexes:
    store = memory.store
    snaps = for_store(store) if snapshots else None
    return VectorIndexes(store, memory.embedder.name, cutoff, snaps)


def _answers(memory: Memory, indexes: VectorIndexes, limit: int = 8) -> list[list[int]]:
    generation = memory.generations.get("t")["semantic"]
    vectors = memory.embedder.embed(list(QUERIES))
    return [[i for i, _ in indexes.search("t", "semantic", generation, v, limit)] for v in vectors]


def _exact(memory: Memory) -> list[list[int]]:
    return _answers(memory, _indexes(memory, snapshots=False, cutoff=10_000))


def _memory(path: Path) -> Memory:
    return Memory(path, embedder="static", execution="sequential", hnsw_cutoff=CUTOFF)


def test_a_built_graph_is_saved_and_the_next_index_loads_it(tmp_path: Path) -> None:
    with _memory(tmp_path / "s.db") as memory:
        _fill(memory, 60)
        first = _indexes(memory)
        built = _answers(memory, first)
        assert first.snapshots is not None and first.snapshots.saved == 1
        assert first._indexes[("t", "semantic")].kind == "HnswBackend"
        assert list((tmp_path / "s.db.indexes").glob("*.snapshot"))

        second = _indexes(memory)
        assert _answers(memory, second) == built == _exact(memory)
        assert second.snapshots is not None
        assert (second.snapshots.loaded, second.snapshots.saved) == (1, 0)


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(st.sampled_from(["add", "update", "delete"]), st.integers(0, 59)), max_size=25
    )
)
def test_a_loaded_snapshot_catches_up_on_later_writes_exactly(
    tmp_path_factory: pytest.TempPathFactory, edits: list[tuple[str, int]]
) -> None:
    with _memory(tmp_path_factory.mktemp("snap") / "s.db") as memory:
        ids = _fill(memory, 60)
        _answers(memory, _indexes(memory))  # builds and saves the graph
        for n, (op, which) in enumerate(edits):
            if op == "add":
                ids += _fill(memory, 1, start=100 + n)
            elif op == "update" and ids[which] > 0:
                memory.update(ids[which], tenant="t", text=f"the lisbon trip, take {n}")
            elif op == "delete" and ids[which] > 0:
                memory.forget(ids[which], tenant="t")
                ids[which] = -1
        loaded = _indexes(memory)
        assert _answers(memory, loaded) == _exact(memory)
        assert loaded.snapshots is not None and loaded.snapshots.loaded == 1


def test_a_new_database_at_the_same_path_ignores_the_old_snapshots(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with _memory(path) as memory:
        _fill(memory, 60)
        _answers(memory, _indexes(memory))
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    with _memory(path) as memory:  # a new file: a new identity
        _fill(memory, 45, start=500)
        fresh = _indexes(memory)
        assert _answers(memory, fresh) == _exact(memory)
        assert fresh.snapshots is not None and fresh.snapshots.loaded == 0


def test_a_snapshot_newer_than_a_restored_database_is_ignored(tmp_path: Path) -> None:
    path, backup = tmp_path / "s.db", tmp_path / "backup.db"
    with _memory(path) as memory:
        _fill(memory, 40)
        source = sqlite3.connect(path)
        dest = sqlite3.connect(backup)
        source.backup(dest)  # a copy of the database before the last 30 memories
        dest.close()
        source.close()
        _fill(memory, 30, start=40)
        _answers(memory, _indexes(memory))  # the snapshot knows all 70
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(backup, path)  # restored over the file; the .indexes directory stays
    with _memory(path) as memory:
        restored = _indexes(memory)
        assert _answers(memory, restored) == _exact(memory)
        assert restored.snapshots is not None and restored.snapshots.loaded == 0


def test_a_damaged_snapshot_is_rebuilt_and_replaced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with _memory(tmp_path / "s.db") as memory:
        _fill(memory, 60)
        _answers(memory, _indexes(memory))
        (snapshot,) = (tmp_path / "s.db.indexes").glob("*.snapshot")
        snapshot.write_bytes(snapshot.read_bytes()[:5000])  # torn
        rebuilt = _indexes(memory)
        assert _answers(memory, rebuilt) == _exact(memory)
        assert rebuilt.snapshots is not None
        assert (rebuilt.snapshots.loaded, rebuilt.snapshots.saved) == (0, 1)
        assert "ignoring the index snapshot" in caplog.text
        again = _indexes(memory)
        _answers(memory, again)
        assert again.snapshots is not None and again.snapshots.loaded == 1


def test_an_unwritable_snapshot_directory_turns_snapshots_off_not_recalls(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "s.db.indexes").write_text("a file where the directory would be")
    with _memory(tmp_path / "s.db") as memory:
        _fill(memory, 60)
        indexes = _indexes(memory)
        assert _answers(memory, indexes) == _exact(memory)
        assert indexes.snapshots is not None and indexes.snapshots.saved == 0
        assert "index snapshots are off" in caplog.text


def test_snapshots_can_be_turned_off(tmp_path: Path) -> None:
    with Memory(tmp_path / "s.db", hnsw_cutoff=CUTOFF, index_snapshots=False) as memory:
        _fill(memory, 60)
        memory.recall("the lisbon trip", tenant="t", k=3)
    assert not (tmp_path / "s.db.indexes").exists()


def _warm_in_a_process(path: str, model: str) -> tuple[int, int]:
    store = SQLiteStore(path, readonly=True)
    try:
        snaps = for_store(store)
        assert snaps is not None
        indexes = VectorIndexes(store, model, CUTOFF, snaps)
        indexes.warm("t", "semantic", store.generations("t")["semantic"])
        return snaps.loaded, snaps.saved
    finally:
        store.close()


def test_two_processes_build_a_scope_once(tmp_path: Path) -> None:
    with _memory(tmp_path / "s.db") as memory:
        _fill(memory, 400)
        model = memory.embedder.name
    with mp.get_context("spawn").Pool(2) as pool:
        counts = pool.starmap(_warm_in_a_process, [(str(tmp_path / "s.db"), model)] * 2)
    assert sorted(counts) == [(0, 1), (1, 0)]  # one built and saved it, the other loaded it


def test_snapshot_names_are_per_database_kind_and_scope(tmp_path: Path) -> None:
    one = IndexSnapshots(tmp_path, "one", {})
    other = IndexSnapshots(tmp_path, "other", {})
    names = {
        one.path("vector", "t", "semantic", "m"),
        one.path("vector", "t", "episodic", "m"),
        one.path("vector", "u", "semantic", "m"),
        one.path("vector", "t", "semantic", "n"),
        one.path("lexical", "t", "semantic", "m"),
        other.path("vector", "t", "semantic", "m"),
    }
    assert len(names) == 6


def _lexical(memory: Memory, indexes: LexicalIndexes) -> list[list[tuple[int, float]]]:
    generation = memory.generations.get("t")["semantic"]
    return [indexes.search("t", "semantic", generation, query_stems(q), 8) for q in (*QUERIES, "7")]


_EDITS = st.lists(
    st.tuples(st.sampled_from(["add", "update", "delete"]), st.integers(0, 59)), max_size=20
)


def _edit(memory: Memory, ids: list[int], edits: list[tuple[str, int]], start: int) -> None:
    for n, (op, which) in enumerate(edits, start):
        if op == "add":
            ids += _fill(memory, 1, start=100 + n)
        elif op == "update" and ids[which] > 0:
            memory.update(ids[which], tenant="t", text=f"the lisbon trip, take {n}")
        elif op == "delete" and ids[which] > 0:
            memory.forget(ids[which], tenant="t")
            ids[which] = -1


@settings(
    max_examples=16, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(before=_EDITS, after=_EDITS, compacted=st.booleans())
def test_a_lexical_snapshot_loads_and_catches_up_bit_for_bit(
    tmp_path_factory: pytest.TempPathFactory,
    before: list[tuple[str, int]],
    after: list[tuple[str, int]],
    compacted: bool,
) -> None:
    """Saved after a catch-up (superseded and forgotten documents compacted away first, or,
    as a snapshot may hold them, kept), more edits, then loaded: BM25 scores bit for bit
    those of a fresh build."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(lexical_index, "SAVE_MIN", 30)
        patch.setattr(lexical_index, "SAVE_AFTER", 1)  # every sync that applies changes saves
        if not compacted:
            patch.setattr(lexical_index.LexicalPostings, "_compact", lambda self: None)
        with _memory(tmp_path_factory.mktemp("lex") / "s.db") as memory:
            ids = _fill(memory, 60)
            built = LexicalIndexes(memory.store, for_store(memory.store))
            _lexical(memory, built)
            _edit(memory, ids, before, 0)
            _lexical(memory, built)  # caught up and saved again
            assert built.snapshots is not None and built.snapshots.saved == 1 + bool(before)
            if compacted:
                assert built._indexes[("t", "semantic")]._dead == 0
            _edit(memory, ids, after, len(before))
            loaded = LexicalIndexes(memory.store, for_store(memory.store))
            assert _lexical(memory, loaded) == _lexical(memory, LexicalIndexes(memory.store))
            assert loaded.snapshots is not None and loaded.snapshots.loaded == 1


def test_a_scope_shrunk_under_the_minimum_deletes_its_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lexical_index, "SAVE_MIN", 30)
    monkeypatch.setattr(lexical_index, "SAVE_AFTER", 1)
    with _memory(tmp_path / "s.db") as memory:
        ids = _fill(memory, 40)
        indexes = LexicalIndexes(memory.store, for_store(memory.store))
        _lexical(memory, indexes)
        (saved,) = (tmp_path / "s.db.indexes").glob("*.snapshot")
        memory.forget(ids[:5], tenant="t")
        _lexical(memory, indexes)  # 35 left: saved again, without the forgotten five
        assert saved.exists() and indexes.snapshots is not None and indexes.snapshots.saved == 2
        memory.forget(ids[5:15], tenant="t")
        expected = _lexical(memory, LexicalIndexes(memory.store))
        assert _lexical(memory, indexes) == expected  # 25 left: under the minimum
        assert not saved.exists()


def test_a_damaged_or_outdated_lexical_snapshot_is_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lexical_index, "SAVE_MIN", 30)
    with _memory(tmp_path / "s.db") as memory:
        _fill(memory, 60)
        _lexical(memory, LexicalIndexes(memory.store, for_store(memory.store)))
        expected = _lexical(memory, LexicalIndexes(memory.store))
        files = {p.name for p in (tmp_path / "s.db.indexes").glob("*.snapshot")}
        for snapshot in (tmp_path / "s.db.indexes").glob("*.snapshot"):
            snapshot.write_bytes(snapshot.read_bytes()[:3000])  # torn: ignored, rebuilt
        again = LexicalIndexes(memory.store, for_store(memory.store))
        assert _lexical(memory, again) == expected
        assert again.snapshots is not None and again.snapshots.loaded == 0
        monkeypatch.setattr(lexical_index, "STEMS_VERSION", 2)  # stems() changed
        newer = LexicalIndexes(memory.store, for_store(memory.store))
        assert _lexical(memory, newer) == expected
        assert newer.snapshots is not None and newer.snapshots.loaded == 0
        now = {p.name for p in (tmp_path / "s.db.indexes").glob("*.snapshot")}
        assert len(files) == 1 and len(now) == 2 and files < now  # one per stems() version


def test_prepare_indexes_builds_the_graphs_once_for_every_later_process(tmp_path: Path) -> None:
    with _memory(tmp_path / "s.db") as memory:
        _fill(memory, 60)
        memory.remember("a small scope stays exact", tenant="u", layer="semantic")
        assert [s[:2] for s in memory.large_scopes()] == [("t", "semantic")]
        assert memory.prepare_indexes() == 1
        assert memory.pipeline.ctx.indexes.snapshots is not None
        assert memory.pipeline.ctx.indexes.snapshots.saved == 1
    with _memory(tmp_path / "s.db") as memory:
        assert [h.id for h in memory.recall("the lisbon trip", tenant="t", k=3).hits]
        snaps = memory.pipeline.ctx.indexes.snapshots
        assert snaps is not None and (snaps.loaded, snaps.saved) == (1, 0)


def test_a_process_with_a_higher_cutoff_searches_exactly_not_from_a_graph(tmp_path: Path) -> None:
    with _memory(tmp_path / "s.db") as memory:
        _fill(memory, 60)
        _answers(memory, _indexes(memory))  # a graph, saved
        exact = _indexes(memory, cutoff=1_000)
        assert _answers(memory, exact) == _exact(memory)
        assert exact._indexes[("t", "semantic")].kind == "ExactBackend"
        assert exact.snapshots is not None and exact.snapshots.loaded == 0


_DTYPES = st.sampled_from(["<i8", "<u4", "<u2", "|u1", "<f4", "|b1"])
_ARRAYS = st.dictionaries(
    st.text(min_size=1, max_size=8),
    st.tuples(_DTYPES, st.lists(st.integers(0, 5), max_size=2), st.integers(0, 2**31)),
    max_size=5,
)


@settings(max_examples=60, deadline=None)
@given(spec=_ARRAYS, last=st.integers(0, 2**62))
def test_arrays_and_meta_round_trip(spec: dict[str, tuple[str, list[int], int]], last: int) -> None:
    import tempfile

    import numpy as np

    from athena.retrieval.snapshots import read_arrays, write_arrays

    rng = np.random.default_rng(0)
    arrays = {
        name: rng.integers(0, seed % 200 + 2, shape).astype(dtype)
        for name, (dtype, shape, seed) in spec.items()
    }
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "x.snapshot"
        write_arrays(path, {"last_seq": last, "scope": ["t", "é"]}, arrays)
        meta, back = read_arrays(path)
    assert meta == {"last_seq": last, "scope": ["t", "é"]}
    assert list(back) == list(arrays)
    for name, array in arrays.items():
        assert back[name].dtype == array.dtype and back[name].shape == array.shape
        assert np.array_equal(back[name], array)
        assert back[name].flags.writeable


def _saved(folder: Path) -> tuple[IndexSnapshots, Path]:
    import numpy as np

    snaps = IndexSnapshots(folder, "db", {"lexical": lambda: 10**6})
    arrays = {"ids": np.arange(40, dtype=np.int64), "tfs": np.ones(7, np.uint16)}
    assert snaps.save("lexical", "t", "episodic", "m", arrays, 99)
    return snaps, snaps.path("lexical", "t", "episodic", "m")


@settings(max_examples=80, deadline=None)
@given(where=st.floats(0.0, 1.0, exclude_max=True), flip=st.integers(1, 255))
def test_a_snapshot_with_any_byte_changed_or_cut_off_is_ignored(where: float, flip: int) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        snaps, path = _saved(Path(folder))
        whole = path.read_bytes()
        at = int(where * len(whole))
        path.write_bytes(whole[:at] + bytes([whole[at] ^ flip]) + whole[at + 1 :])
        assert snaps.load("lexical", "t", "episodic", "m") is None
        path.write_bytes(whole[:at])
        assert snaps.load("lexical", "t", "episodic", "m") is None
        path.write_bytes(whole)
        loaded = snaps.load("lexical", "t", "episodic", "m")
        assert loaded is not None and loaded["last_seq"] == 99 and len(loaded["ids"]) == 40


def _crafted(path: Path, places: list[list[object]], body: bytes) -> None:
    """A snapshot file with these array places over ``body``, every CRC right."""
    import json
    import struct
    import zlib

    from athena.retrieval.snapshots import MAGIC

    header = json.dumps(
        {"meta": {}, "arrays": places, "size": len(body), "crc32": zlib.crc32(body)}
    ).encode()
    path.write_bytes(MAGIC + struct.pack("<II", len(header), zlib.crc32(header)) + header + body)


@pytest.mark.parametrize(
    "place",
    [
        ["a", "<i8", [2], -64, 16],  # before the body: the header read as numbers
        ["a", "<i8", [-1], 0, -8],  # a negative shape: any length
        ["a", "<i8", [2], 8, 16],  # not aligned
        ["a", "<U2", [2], 0, 16],  # not a plain number
        ["a", "<i8", [2.0], 0, 16],  # not a whole number
        ["a", "<i8", [3], 0, 24],  # past the body
    ],
)
def test_a_well_formed_header_that_lies_is_refused(tmp_path: Path, place: list[object]) -> None:
    from athena.retrieval.snapshots import read_arrays

    _crafted(tmp_path / "x.snapshot", [place], bytes(16))
    with pytest.raises(ValueError):
        read_arrays(tmp_path / "x.snapshot")
    _crafted(tmp_path / "x.snapshot", [["a", "<i8", [2], 0, 16]], bytes(16))
    assert read_arrays(tmp_path / "x.snapshot")[1]["a"].tolist() == [0, 0]


def test_only_plain_numbers_are_written(tmp_path: Path) -> None:
    import numpy as np

    from athena.retrieval.snapshots import write_arrays

    for odd in (np.array(["x"]), np.zeros(2, "M8[s]"), np.zeros(2, [("a", "<i4")])):
        with pytest.raises(TypeError):
            write_arrays(tmp_path / "x.snapshot", {}, {"a": odd})


def test_a_lexical_snapshot_pointing_past_its_documents_is_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np

    monkeypatch.setattr(lexical_index, "SAVE_MIN", 30)
    with _memory(tmp_path / "s.db") as memory:
        _fill(memory, 40)
        expected = _lexical(memory, LexicalIndexes(memory.store))
        snaps = for_store(memory.store)
        assert snaps is not None
        store_high = memory.store.change_seq_high()
        lie = {
            "ids": np.array([1, 2], np.int64),
            "lengths": np.array([3, 3], np.uint32),
            "live": np.ones(2, np.uint8),
            "terms": np.frombuffer(b"lisbon", np.uint8),
            "counts": np.array([1], np.int64),
            "positions": np.array([7], np.uint32),  # a third document it does not have
            "tfs": np.array([1], np.uint16),
        }
        assert snaps.save("lexical", "t", "semantic", "stems-1", lie, store_high)
        again = LexicalIndexes(memory.store, for_store(memory.store))
        assert _lexical(memory, again) == expected
        assert again.snapshots is not None and again.snapshots.loaded == 0


def test_a_failed_save_waits_and_a_forbidden_directory_turns_saves_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import errno

    import numpy as np

    from athena.retrieval import snapshots as module

    snaps = IndexSnapshots(tmp_path / "d", "db", {})
    arrays = {"ids": np.arange(3, dtype=np.int64)}
    calls: list[str] = []
    failure: list[BaseException] = [OSError(errno.ENOSPC, "No space left on device")]

    def write(path: Path, meta: object, given: object) -> None:
        calls.append(path.name)
        raise failure[0]

    monkeypatch.setattr(module, "write_arrays", write)
    assert not snaps.save("lexical", "t", "episodic", "m", arrays, 1)
    assert not snaps.save("lexical", "t", "episodic", "m", arrays, 1)  # waits: not tried
    assert len(calls) == 1 and "was not saved" in caplog.text
    assert not list((tmp_path / "d").glob("*.tmp"))  # the aside file is gone
    snaps._retry_at = 0.0  # RETRY_S later
    failure[0] = MemoryError()  # not an OSError: still not the recall's error
    assert not snaps.save("lexical", "t", "episodic", "m", arrays, 1)
    snaps._retry_at = 0.0
    failure[0] = PermissionError(errno.EACCES, "Permission denied")
    assert not snaps.save("lexical", "t", "episodic", "m", arrays, 1)
    snaps._retry_at = 0.0
    assert not snaps.save("lexical", "t", "episodic", "m", arrays, 1)
    assert len(calls) == 3 and "index snapshots are off" in caplog.text
    monkeypatch.undo()
    fresh = IndexSnapshots(tmp_path / "d", "db", {})
    assert fresh.save("lexical", "t", "episodic", "m", arrays, 1)
    assert fresh.load("lexical", "t", "episodic", "m") is not None


def test_older_formats_and_dead_saves_are_swept(tmp_path: Path) -> None:
    import os
    import time

    import numpy as np

    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "old.npz").write_bytes(b"an older format")
    (folder / "dead.123.ab.tmp").write_bytes(b"a save that died")
    (folder / "live.456.cd.tmp").write_bytes(b"a save in progress")
    hour_ago = time.time() - 7200
    os.utime(folder / "dead.123.ab.tmp", (hour_ago, hour_ago))
    snaps = IndexSnapshots(folder, "db", {})
    assert snaps.save("lexical", "t", "episodic", "m", {"a": np.zeros(1)}, 1)
    left = sorted(p.name for p in folder.iterdir())
    assert left == sorted(["live.456.cd.tmp", snaps.path("lexical", "t", "episodic", "m").name])
