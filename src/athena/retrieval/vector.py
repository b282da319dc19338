"""In-memory vector indexes over the vectors stored in SQLite.

Vectors live in the database, so an index is only a cache of them: it is built from the
rows on first use and catches up on rows with a newer ``seq`` when the scope's write
generation moves. Nothing outside SQLite can disagree with it after a crash.

Per (tenant, layer), search is exact (one matrix product) while the set is small; past
``hnsw_cutoff`` vectors it switches to a faiss HNSW graph. A vector replaced by an update
leaves its old position behind; such positions are skipped, and the index is rebuilt when
they pile up. A built graph is saved as a snapshot beside the database (see
:mod:`athena.retrieval.snapshots`), so the next process loads it instead of building it.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt

from athena.retrieval.collection import IndexCollection
from athena.retrieval.residency import Residency
from athena.retrieval.snapshots import IndexSnapshots
from athena.store.protocol import Store, VectorBatch

log = logging.getLogger(__name__)

DEFAULT_HNSW_CUTOFF: Final = 20_000
HNSW_M: Final = 16
HNSW_EF_CONSTRUCTION: Final = 128
HNSW_EF_SEARCH: Final = 128

Floats = npt.NDArray[np.float32]


class Backend(Protocol):
    """Nearest-neighbour search over positions 0..n-1 by inner product."""

    def add(self, matrix: Floats) -> None: ...

    def search(self, query: Floats, limit: int) -> tuple[Floats, npt.NDArray[np.int64]]: ...

    def __len__(self) -> int: ...


def limit_blas_threads() -> None:
    """Hold numpy's BLAS to one thread (once per process).

    A matrix-vector product over a few thousand vectors is microseconds of work; split over
    two threads on a busy 2-core machine it stalled for milliseconds (8.0 ms against 0.057 ms
    p50 at 2,000 vectors, docs/benchmarks.md). Set ATHENA_BLAS_THREADS to override.
    """
    global _BLAS_LIMITED
    if _BLAS_LIMITED:
        return
    _BLAS_LIMITED = True
    import os

    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=int(os.environ.get("ATHENA_BLAS_THREADS", "1")), user_api="blas")


_BLAS_LIMITED = False
EXACT_COMPACT_MIN = 64  # superseded vectors an exact index keeps before it compacts
EXACT_BLOCK = 64  # an exact index's rows come in whole blocks of this many (see search)
SNAPSHOT_AFTER = 5_000  # vectors a graph takes in before it is saved (again); see snapshots.py


def _rows_for(n: int) -> int:
    return max(EXACT_BLOCK, -(-n // EXACT_BLOCK) * EXACT_BLOCK)


class ExactBackend:
    """Brute force: exact, and fastest while the set is small."""

    def __init__(self, dim: int) -> None:
        limit_blas_threads()
        self._matrix = np.zeros((0, dim), np.float32)
        self._size = 0

    def add(self, matrix: Floats) -> None:
        needed = self._size + len(matrix)
        if needed > len(self._matrix):
            rows = _rows_for(max(needed, 2 * len(self._matrix)))
            grown = np.zeros((rows, matrix.shape[1]), np.float32)
            grown[: self._size] = self._matrix[: self._size]
            self._matrix = grown
        self._matrix[self._size : needed] = matrix
        self._size = needed

    def search(self, query: Floats, limit: int) -> tuple[Floats, npt.NDArray[np.int64]]:
        # Over whole blocks of rows (the unused ones are zeros): BLAS computes the rows past
        # the last block of 4 in another kernel, so the same vector would score an ulp apart
        # depending on where it sits, and ties would rank by an index's history.
        scores = (self._matrix[: _rows_for(self._size)] @ query)[: self._size]
        limit = min(limit, self._size)
        if limit <= 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        top = np.argpartition(-scores, limit - 1)[:limit]
        # Stable order: score, then position, so equal scores rank the same every time.
        order = np.lexsort((top, -scores[top]))
        chosen = top[order]
        return scores[chosen].astype(np.float32), chosen.astype(np.int64)

    def __len__(self) -> int:
        return self._size


class HnswBackend:
    """faiss HNSW over inner product (vectors are normalised, so it is cosine)."""

    def __init__(self, dim: int) -> None:
        import faiss

        faiss.omp_set_num_threads(1)
        self._index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        self._index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        self._index.hnsw.efSearch = HNSW_EF_SEARCH

    def add(self, matrix: Floats) -> None:
        self._index.add(np.ascontiguousarray(matrix, np.float32))

    def search(self, query: Floats, limit: int) -> tuple[Floats, npt.NDArray[np.int64]]:
        scores, positions = self._index.search(query.reshape(1, -1).astype(np.float32), limit)
        keep = positions[0] >= 0
        return scores[0][keep].astype(np.float32), positions[0][keep].astype(np.int64)

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def dump(self) -> npt.NDArray[np.uint8]:
        """The graph and its vectors, serialised (see :mod:`athena.retrieval.snapshots`)."""
        import faiss

        return faiss.serialize_index(self._index)

    @classmethod
    def restore(cls, graph: npt.NDArray[np.uint8]) -> HnswBackend:
        """A backend from :meth:`dump`'s bytes, with this module's search settings."""
        import faiss

        faiss.omp_set_num_threads(1)
        backend = cls.__new__(cls)
        index = faiss.deserialize_index(graph)
        if not isinstance(index, faiss.IndexHNSWFlat):
            raise ValueError(f"a snapshot holds a {type(index).__name__}, not an HNSW graph")
        backend._index = index
        backend._index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        backend._index.hnsw.efSearch = HNSW_EF_SEARCH
        return backend


@dataclass(slots=True)
class _State:
    """What a :class:`VectorIndex` has loaded: a backend, each position's memory id and seq,
    and the newest seq of every live memory."""

    backend: Backend | None
    ids: list[int]
    seqs: list[int]
    latest: dict[int, int]  # memory id -> newest seq loaded
    last_seq: int = 0
    dead: int = 0
    last_change: int = 0  # the memory_changes seq of the last tombstone applied

    def append(self, batch: VectorBatch, hnsw_cutoff: int) -> None:
        """Load a batch of vectors (newer than every one loaded so far)."""
        size = len(self.ids) + len(batch.ids)
        if self.backend is None or (isinstance(self.backend, ExactBackend) and size > hnsw_cutoff):
            # (Re)build in the backend that fits the new size, with everything loaded so far.
            old = self.backend
            self.backend = (
                HnswBackend(batch.matrix.shape[1])
                if size > hnsw_cutoff
                else ExactBackend(batch.matrix.shape[1])
            )
            if old is not None and isinstance(old, ExactBackend) and len(old):
                self.backend.add(old._matrix[: len(old)])
        self.backend.add(batch.matrix)
        for memory_id, seq in zip(batch.ids.tolist(), batch.seqs.tolist(), strict=True):
            if memory_id in self.latest:
                self.dead += 1
            self.latest[memory_id] = seq
            self.ids.append(memory_id)
            self.seqs.append(seq)
        self.last_seq = int(batch.seqs[-1])

    def arrays(self, graph: HnswBackend) -> dict[str, npt.NDArray[Any]]:
        """The state (over its HNSW ``graph``) as named arrays for a snapshot."""
        return {
            "graph": graph.dump(),
            "ids": np.asarray(self.ids, np.int64),
            "seqs": np.asarray(self.seqs, np.int64),
            "live_ids": np.fromiter(self.latest.keys(), np.int64, len(self.latest)),
            "live_seqs": np.fromiter(self.latest.values(), np.int64, len(self.latest)),
            "counters": np.array([self.dead, self.last_change], np.int64),
        }

    @classmethod
    def restored(cls, snap: dict[str, Any]) -> _State | None:
        """The state a snapshot holds, None if its arrays disagree (raises if it is damaged)."""
        backend = HnswBackend.restore(snap["graph"])
        ids, seqs = snap["ids"].tolist(), snap["seqs"].tolist()
        latest = dict(zip(snap["live_ids"].tolist(), snap["live_seqs"].tolist(), strict=True))
        dead, last_change = (int(v) for v in snap["counters"])
        if len(backend) != len(ids) or len(ids) != len(seqs):
            return None
        return cls(backend, ids, seqs, latest, snap["last_seq"], dead, last_change)


class VectorIndex:
    """The vectors of one (tenant, layer, model), searchable by cosine similarity."""

    def __init__(
        self,
        tenant: str,
        layer: str,
        model: str,
        hnsw_cutoff: int = DEFAULT_HNSW_CUTOFF,
        snapshots: IndexSnapshots | None = None,
    ) -> None:
        self.tenant, self.layer, self.model = tenant, layer, model
        self.hnsw_cutoff = hnsw_cutoff
        self._snapshots = snapshots
        self._unsaved = 0  # vectors added to an HNSW graph since it was last saved or loaded
        self._lock = threading.Lock()
        self._state = _State(None, [], [], {})
        self._synced_generation: int | None = None

    @property
    def kind(self) -> str:
        return type(self._state.backend).__name__

    def sync(self, store: Store, generation: int) -> int:
        """Load vectors written since the last sync (a no-op if ``generation`` is unchanged);
        returns how many vectors and tombstones it applied."""
        if generation == self._synced_generation:
            return 0
        with self._lock:
            if generation == self._synced_generation:
                return 0
            if self._state.backend is None and self._snapshots is not None:
                return self._first_sync(store, self._snapshots, generation)
            return self._catch_up(store, generation)

    def follow(self, store: Store, generation: int, most: int) -> int:
        """:meth:`sync`, for a loaded index at most ``most`` vectors and tombstones behind
        whose catch-up builds nothing (see :func:`_builds`); otherwise nothing, for the next
        search to do. Returns how many it applied.

        >>> VectorIndex("t", "episodic", "m").follow(None, 1, 512)  # type: ignore[arg-type]
        0
        """
        if generation == self._synced_generation or self._state.backend is None:
            return 0
        with self._lock:
            if generation == self._synced_generation:
                return 0
            read = self._read_after(store, self._state, most + 1)
            if _builds(self._state, read, most, self.hnsw_cutoff):
                return 0
            return self._catch_up(store, generation, read)

    def _first_sync(self, store: Store, snapshots: IndexSnapshots, generation: int) -> int:
        """Start from the scope's snapshot if there is one. If the scope turns out to need a
        graph, build it under the cross-process lock (or load what another process built
        meanwhile); :meth:`_catch_up` saves it."""
        if self._restore(snapshots):
            return self._catch_up(store, generation)
        read = self._read_after(store, _State(None, [], [], {}))
        if len(read[1].ids) <= self.hnsw_cutoff:
            return self._catch_up(store, generation, read)
        with snapshots.building("vector", self.tenant, self.layer, self.model):
            if self._restore(snapshots):  # another process built it while this one waited
                return self._catch_up(store, generation)
            return self._catch_up(store, generation, read)

    def _restore(self, snapshots: IndexSnapshots) -> bool:
        state = _snapshot_state(snapshots, self.tenant, self.layer, self.model)
        # None: no snapshot, or its arrays disagree; and a scope this size, this process
        # searches exactly
        if state is None or len(state.latest) <= self.hnsw_cutoff:
            return False
        self._state, self._unsaved = state, 0
        snapshots.note_loaded()
        return True

    def _save(self) -> None:
        state = self._state
        if self._snapshots is None or not isinstance(state.backend, HnswBackend):
            return
        args = (self.tenant, self.layer, self.model, state.arrays(state.backend), state.last_seq)
        if self._snapshots.save("vector", *args):
            self._unsaved = 0

    def _read_after(
        self, store: Store, state: _State, limit: int | None = None
    ) -> tuple[list[tuple[int, int]], VectorBatch]:
        # Tombstones first: a memory deleted after this read is caught by the next sync,
        # one re-inserted after it comes back through its new vector.
        gone = store.deleted_after(self.tenant, self.layer, state.last_change, limit)
        return gone, store.vectors_after(self.tenant, self.layer, self.model, state.last_seq, limit)

    def _catch_up(
        self,
        store: Store,
        generation: int,
        read: tuple[list[tuple[int, int]], VectorBatch] | None = None,
    ) -> int:
        state = self._state
        gone, batch = read or self._read_after(store, state)
        for change, memory_id in gone:
            if state.latest.pop(memory_id, None) is not None:
                state.dead += 1
            state.last_change = change
        if len(batch.ids):
            if _rebuild_due(state.dead, len(state.ids)):
                batch = store.vectors_after(self.tenant, self.layer, self.model, 0)
                state = _State(None, [], [], {}, last_change=state.last_change)
            before = state.backend
            state.append(batch, self.hnsw_cutoff)
            if isinstance(state.backend, ExactBackend) and state.dead > max(
                EXACT_COMPACT_MIN, len(state.latest) // 4
            ):
                state = _compacted(state)
            self._state = state
            if isinstance(state.backend, HnswBackend):
                built = state.backend is not before  # a new graph holds everything loaded
                self._unsaved = len(state.ids) if built else self._unsaved + len(batch.ids)
                if built or self._unsaved >= SNAPSHOT_AFTER:
                    self._save()
        self._synced_generation = generation
        return len(gone) + len(batch.ids)

    def search(self, query: Floats, limit: int) -> list[tuple[int, float]]:
        """Up to ``limit`` (memory id, cosine) pairs, best first."""
        with self._lock:
            state = self._state
            if state.backend is None or limit <= 0:
                return []
            # Older vectors of updated memories stay in the backend until a compaction;
            # ask for more until ``limit`` live ones are found or the backend runs out, so
            # the answer is the same as a freshly built index would give.
            want, total = limit + min(state.dead, limit), len(state.backend)
            if not state.dead:  # every vector loaded is its memory's newest: no check
                scores, positions = state.backend.search(query, min(limit, total))
                ids = state.ids
                pairs = zip(scores.tolist(), positions.tolist(), strict=True)
                return [(ids[p], s) for s, p in pairs]
            while True:
                scores, positions = state.backend.search(query, min(want, total))
                found: list[tuple[int, float]] = []
                for score, position in zip(scores.tolist(), positions.tolist(), strict=True):
                    memory_id = state.ids[position]
                    if state.latest.get(memory_id) != state.seqs[position]:
                        continue  # an older vector of a memory that was updated since
                    found.append((memory_id, float(score)))
                    if len(found) == limit:
                        return found
                if len(positions) < min(want, total) or want >= total:
                    return found
                want *= 4

    def __len__(self) -> int:
        return len(self._state.latest)


def _snapshot_state(
    snapshots: IndexSnapshots, tenant: str, layer: str, model: str
) -> _State | None:
    """The state the scope's snapshot holds; None if there is none, or it is damaged or
    inconsistent (a cache miss, never a failed recall)."""
    snap = snapshots.load("vector", tenant, layer, model)
    if snap is None:
        return None
    try:
        return _State.restored(snap)
    except Exception as exc:
        log.warning("ignoring the index snapshot of %s/%s: %s", tenant, layer, exc)
        return None


def _rebuild_due(dead: int, positions: int) -> bool:
    """Whether ``dead`` superseded vectors among ``positions`` call for a rebuild from the
    store (the catch-up's rule, which a follow leaves to it).

    >>> _rebuild_due(1_001, 3_000), _rebuild_due(1_001, 3_004), _rebuild_due(900, 1_000)
    (True, False, False)
    """
    return dead > 1_000 and dead > positions // 3


def _builds(
    state: _State, read: tuple[list[tuple[int, int]], VectorBatch], most: int, cutoff: int
) -> bool:
    """Whether catching ``state`` up with ``read`` is more than a follow does: over
    ``most`` rows (or a read cut at ``most + 1``), an exact index past the HNSW ``cutoff``
    (a graph to build), or enough superseded vectors for a rebuild (see ``_catch_up``).

    >>> state = _State(ExactBackend(4), [1, 2], [1, 2], {1: 1, 2: 2})
    >>> batch = VectorBatch(np.array([3]), np.array([3]), np.zeros((1, 4), np.float32))
    >>> _builds(state, ([], batch), 512, 20_000), _builds(state, ([], batch), 512, 2)
    (False, True)
    """
    gone, batch = read
    dead = state.dead + len(gone)
    return (
        len(gone) + len(batch.ids) > most
        or (isinstance(state.backend, ExactBackend) and len(state.ids) + len(batch.ids) > cutoff)
        or _rebuild_due(dead, len(state.ids))
    )


def _compacted(state: _State) -> _State:
    """The same live vectors without the superseded ones (exact backend only: a cheap copy,
    no reload), so an index whose memories are updated often stays the size of its data."""
    backend = state.backend
    assert isinstance(backend, ExactBackend)
    pairs = zip(state.ids, state.seqs, strict=True)
    live = [i for i, (m, q) in enumerate(pairs) if state.latest.get(m) == q]
    fresh = ExactBackend(backend._matrix.shape[1])
    fresh.add(backend._matrix[live])
    ids, seqs = [state.ids[i] for i in live], [state.seqs[i] for i in live]
    latest = dict(zip(ids, seqs, strict=True))
    return _State(fresh, ids, seqs, latest, state.last_seq, 0, state.last_change)


class VectorIndexes(IndexCollection[VectorIndex]):
    """The indexes of every (tenant, layer) for one embedding model."""

    kind = "vector"

    def __init__(
        self,
        store: Store,
        model: str,
        hnsw_cutoff: int = DEFAULT_HNSW_CUTOFF,
        snapshots: IndexSnapshots | None = None,
        residency: Residency | None = None,
    ) -> None:
        super().__init__(store, residency)
        self._model = model
        self.cutoff = hnsw_cutoff
        self.snapshots = snapshots

    def _make(self, tenant: str, layer: str) -> VectorIndex:
        return VectorIndex(tenant, layer, self._model, self.cutoff, self.snapshots)

    def search(
        self, tenant: str, layer: str, generation: int, query: Floats, limit: int
    ) -> list[tuple[int, float]]:
        """Sync the (tenant, layer) index to ``generation``, then search it."""
        return self.warm(tenant, layer, generation).search(query, limit)

    def has_snapshot(self, tenant: str, layer: str) -> bool:
        """Whether a snapshot of the (tenant, layer) graph is saved (loading it is quick).

        >>> VectorIndexes(None, "m").has_snapshot("t", "episodic")  # type: ignore[arg-type]
        False
        """
        snaps = self.snapshots
        return snaps is not None and snaps.path("vector", tenant, layer, self._model).exists()
