"""Tenant-local BM25: an in-memory inverted index per (tenant, layer).

The text lives in SQLite; an index is a cache of it, built on first use and caught up from
the ``memory_changes`` feed when the scope's write generation moves (tombstones included),
like the vector indexes, and (from 256 documents) saved as a snapshot that the next index
of the scope loads instead of stemming every text again: another process, or this one
after the index budget dropped the tenant (see :mod:`athena.retrieval.snapshots`).
Every statistic BM25 uses (document count, average length, each
term's document frequency) is the scope's own, so a tenant's ranking is a function of its
own memories only: another tenant's writes can neither reorder it nor be inferred from it,
and the (tenant, layer) generation is a complete validity key for a cached answer.

Scores are bit-identical whatever the index's history (a fresh worker process, an index
that saw every update, one just compacted): per document, contributions are summed in
query-term order, and ties break on the memory id.
"""

from __future__ import annotations

import logging
import math
import threading
from array import array
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from itertools import count
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt

from athena.retrieval.collection import IndexCollection
from athena.retrieval.lexical import STEMS_VERSION, stems
from athena.retrieval.residency import Residency
from athena.retrieval.snapshots import IndexSnapshots

log = logging.getLogger(__name__)

K1: Final = 1.2
B: Final = 0.75
COMPACT_MIN: Final = 64  # superseded documents kept before the postings are compacted
# A 753-document index: built from the store in 7.7 ms, loaded from its snapshot in 1.1.
SAVE_MIN: Final = 256  # documents from which a built index is saved as a snapshot
SAVE_AFTER: Final = 5_000  # changes applied before a saved index is saved again
LARGE: Final = 20_000  # documents past which one process builds while the others wait for
# its snapshot, and Memory.prepare_indexes builds ahead
MAX_TF: Final = 65_535
# Postings are two dicts of bytearrays (native uint32 positions, uint16 term frequencies),
# not array.array pairs: an array or a tuple holding one is tracked by the cyclic garbage
# collector, and a dict of str -> bytearray is not even scanned. With array pairs, 110
# tenants' postings were about 740k of a process's 802k tracked objects and a full
# collection took 124 ms, a stall any recall could land in (benchmarks/gc_pause.py).
if array("I").itemsize != 4 or array("H").itemsize != 2:  # the postings' native widths
    raise ImportError("the lexical index needs 32-bit 'I' and 16-bit 'H' arrays")


class Pending:
    """A batch's postings before they join the index: each token's term number in one flat
    array, the terms' numbers in a ``str -> int`` dict (numbered as first seen, by C code
    alone), and the batch's first position; each token's position comes from the index's
    own lengths at the flush. Three objects however large the batch: per-term containers (a
    tuple of two arrays each) kept ~9,000 tracked objects alive through a 940-memory build,
    and a process rebuilding tenants ran 29 full collections (up to 33 ms each) in 2,000
    recalls instead of none.
    """

    __slots__ = ("at", "first", "terms")

    def __init__(self) -> None:
        self.terms: defaultdict[str, int] = defaultdict(count().__next__)
        self.at = array("I")
        self.first = -1  # the position of the batch's first document (-1: none yet)


Admit = Callable[[list[int]], set[int]]


class ChangeFeed(Protocol):
    """Where an index learns what changed: :meth:`athena.store.protocol.Store.changes_after`."""

    def changes_after(
        self, tenant: str, layer: str, after_seq: int, limit: int | None = None
    ) -> list[tuple[int, int, str | None]]: ...


class LexicalPostings:
    """The inverted index of one (tenant, layer): its documents by position and each term's
    postings (compacted as superseded documents pile up), and their BM25 scores.
    :class:`LexicalIndex` keeps it in step with the store, snapshots it and searches it.

    >>> len(LexicalPostings("t", "episodic"))
    0
    """

    def __init__(self, tenant: str, layer: str) -> None:
        self.tenant, self.layer = tenant, layer
        self._ids = array("q")  # position -> memory id
        self._lengths = array("I")  # position -> tokens
        self._live = bytearray()  # position -> 1 while it is the memory's current text
        self._position: dict[int, int] = {}  # memory id -> live position
        self._positions: dict[str, bytearray] = {}  # term -> positions holding it
        self._tfs: dict[str, bytearray] = {}  # term -> its frequency at each position
        self._total_length = 0
        self._dead = 0

    def _add(self, memory_id: int, text: str, pending: Pending) -> None:
        """Give ``text`` the next position; its postings wait in ``pending`` until
        :meth:`_flush` (see :class:`Pending`)."""
        tokens = stems(text)
        position = len(self._ids)
        self._ids.append(memory_id)  # first: a bad id raises before anything is pending
        self._lengths.append(len(tokens))
        self._live.append(1)
        self._position[memory_id] = position
        self._total_length += len(tokens)
        if pending.first < 0:
            pending.first = position
        pending.at.extend(map(pending.terms.__getitem__, tokens))  # numbers new terms too

    def _flush(self, pending: Pending) -> None:
        """Append the postings :meth:`_add` left in ``pending``, term by term: each token
        keyed by (term number, position), sorted and counted by numpy (the counts are the
        term frequencies), so each term's positions come in order. Counting each document's
        terms in Python (``Counter`` and a loop over them) took a third of a build."""
        if not pending.at:
            return
        lengths = np.frombuffer(self._lengths, np.uint32)[pending.first :]
        key = np.frombuffer(pending.at, np.uint32).astype(np.uint64)
        key <<= np.uint64(32)  # in place, as below: a 75,000-memory build is 1.5M tokens
        key |= np.repeat(np.arange(pending.first, len(self._lengths), dtype=np.uint64), lengths)
        key.sort()
        first = np.empty(len(key), np.bool_)
        first[0] = True
        np.not_equal(key[1:], key[:-1], out=first[1:])
        firsts = np.flatnonzero(first)
        counts = np.diff(firsts, append=len(key))
        unique = key[firsts]
        del key, first, firsts
        sorted_terms = (unique >> np.uint64(32)).astype(np.uint32)
        cuts = (np.flatnonzero(np.diff(sorted_terms)) + 1).tolist()
        starts, ends = [0, *cuts], [*cuts, len(unique)]
        at = (unique & np.uint64(0xFFFFFFFF)).astype(np.uint32).tobytes()
        tf = np.minimum(counts, MAX_TF).astype(np.uint16).tobytes()
        names = list(pending.terms)  # in the order numbered
        positions, tfs = self._positions, self._tfs
        for start, end, number in zip(starts, ends, sorted_terms[starts].tolist(), strict=True):
            term = names[number]
            held = positions.get(term)
            if held is None:
                positions[term] = bytearray(at[4 * start : 4 * end])
                tfs[term] = bytearray(tf[2 * start : 2 * end])
            else:
                held += at[4 * start : 4 * end]
                tfs[term] += tf[2 * start : 2 * end]

    def _drop(self, memory_id: int) -> None:
        position = self._position.pop(memory_id, None)
        if position is not None:
            self._live[position] = 0
            self._total_length -= self._lengths[position]
            self._dead += 1

    def _compact(self) -> None:
        """Rewrite the postings without superseded documents (positions renumbered)."""
        live = np.frombuffer(self._live, np.uint8).astype(bool)
        renumber = np.cumsum(live, dtype=np.int64) - 1
        kept: dict[str, bytearray] = {}
        kept_tfs: dict[str, bytearray] = {}
        for term, positions in self._positions.items():
            p = np.frombuffer(positions, np.uint32)
            keep = live[p]
            if keep.any():
                kept[term] = bytearray(renumber[p[keep]].astype(np.uint32).tobytes())
                tfs = np.frombuffer(self._tfs[term], np.uint16)
                kept_tfs[term] = bytearray(tfs[keep].tobytes())
        ids = np.frombuffer(self._ids, np.int64)[live]
        lengths = np.frombuffer(self._lengths, np.uint32)[live]
        self._ids, self._lengths = array("q", ids.tobytes()), array("I", lengths.tobytes())
        self._live = bytearray(b"\x01" * len(ids))
        self._position = {int(m): i for i, m in enumerate(ids.tolist())}
        self._positions, self._tfs = kept, kept_tfs
        self._dead = 0

    def _scores(
        self, query: Sequence[str]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """Memory ids with a positive score, and the scores (not sorted).

        The query terms' postings are gathered first and scored in one pass of array
        arithmetic: a dozen small NumPy calls per term took 56 us a LoCoMo query, this 27.
        Superseded documents are filtered out only when the scope has any.
        """
        documents = len(self._position)
        if documents == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float64)
        live = np.frombuffer(self._live, np.bool_) if self._dead else None  # a view, no copy
        positions: list[npt.NDArray[np.uint32]] = []
        tfs: list[npt.NDArray[np.uint16]] = []
        idfs: list[float] = []
        counts: list[int] = []
        for term in dict.fromkeys(query):
            held = self._positions.get(term)
            if held is None:
                continue
            p = np.frombuffer(held, np.uint32)
            tf = np.frombuffer(self._tfs[term], np.uint16)
            if live is not None:
                keep = live[p]
                p, tf = p[keep], tf[keep]
            df = len(p)
            if df:
                idfs.append(math.log(1.0 + (documents - df + 0.5) / (df + 0.5)))
                positions.append(p)
                tfs.append(tf)
                counts.append(df)
        if not positions:
            return np.zeros(0, np.int64), np.zeros(0, np.float64)
        average = self._total_length / documents or 1.0
        at = np.concatenate(positions)
        tf64 = np.concatenate(tfs).astype(np.float64)
        idf = np.repeat(np.array(idfs), counts)
        norm = K1 * (1.0 - B + B * np.frombuffer(self._lengths, np.uint32)[at] / average)
        # bincount sums each document's contributions in query-term order, so a document
        # scores the same bits whatever positions the index happened to give it.
        totals: npt.NDArray[np.float64] = np.bincount(
            at, weights=idf * tf64 * (K1 + 1.0) / (tf64 + norm), minlength=len(self._lengths)
        ).astype(np.float64, copy=False)
        hit = np.nonzero(totals > 0.0)[0]
        return np.frombuffer(self._ids, np.int64)[hit].copy(), totals[hit]

    def __len__(self) -> int:
        return len(self._position)


class LexicalIndex(LexicalPostings):
    """BM25 over the live memories of one (tenant, layer), caught up from the store's change
    feed and (from :data:`SAVE_MIN` documents) saved as a snapshot."""

    def __init__(self, tenant: str, layer: str, snapshots: IndexSnapshots | None = None) -> None:
        super().__init__(tenant, layer)
        self._snapshots = snapshots
        self._unsaved = 0  # changes applied since the last snapshot was saved or loaded
        self._on_disk = False  # a snapshot of it was saved or loaded
        self._lock = threading.Lock()
        self._synced_generation: int | None = None
        self._last_seq = 0

    def sync(self, store: ChangeFeed, generation: int) -> int:
        """Apply the changes since the last sync (a no-op if ``generation`` is unchanged);
        returns how many it applied."""
        if generation == self._synced_generation:
            return 0
        with self._lock:
            if generation == self._synced_generation:
                return 0
            snaps = self._snapshots
            if snaps is None or self._last_seq or self._synced_generation is not None:
                return self._apply(store, generation)
            if self._restore(snaps):  # a first sync: start from the snapshot if there is one
                return self._apply(store, generation)
            changes = store.changes_after(self.tenant, self.layer, 0)
            if len(changes) <= LARGE:
                return self._apply(store, generation, changes)
            with snaps.building(*self._scope()):  # one process builds, the others load
                if self._restore(snaps):
                    return self._apply(store, generation)
                return self._apply(store, generation, changes)

    def follow(self, store: ChangeFeed, generation: int, most: int) -> int:
        """:meth:`sync`, for a loaded index at most ``most`` changes behind; otherwise
        nothing, for the next search to do. Returns the changes applied."""
        if generation == self._synced_generation or self._synced_generation is None:
            return 0
        with self._lock:
            if generation == self._synced_generation:
                return 0
            changes = store.changes_after(self.tenant, self.layer, self._last_seq, most + 1)
            if len(changes) > most:
                return 0
            return self._apply(store, generation, changes)

    def _apply(
        self,
        store: ChangeFeed,
        generation: int,
        changes: list[tuple[int, int, str | None]] | None = None,
    ) -> int:
        if changes is None:
            changes = store.changes_after(self.tenant, self.layer, self._last_seq)
        pending = Pending()
        try:
            for seq, memory_id, text in changes:
                self._drop(memory_id)
                if text is not None:
                    self._add(memory_id, text, pending)
                self._last_seq = seq
        finally:  # what was added is searchable even if a later change raised
            self._flush(pending)
            del pending  # before a compaction or a snapshot needs the memory
        if self._dead > max(COMPACT_MIN, len(self._position) // 4):
            self._compact()
        self._synced_generation = generation
        self._unsaved += len(changes)
        snaps, size = self._snapshots, len(self._position)
        due = self._unsaved >= min(SAVE_AFTER, size)  # a new build: at once
        if snaps is not None and due:
            if size >= SAVE_MIN:
                self._save(snaps)
            elif self._on_disk:  # shrunk under SAVE_MIN: its snapshot holds what was forgotten
                snaps.discard(*self._scope())
                self._on_disk = False
        return len(changes)

    def _scope(self) -> tuple[str, str, str, str]:
        return ("lexical", self.tenant, self.layer, f"stems-{STEMS_VERSION}")

    def _save(self, snaps: IndexSnapshots) -> None:
        """Save the index, compacted first: superseded and forgotten documents stay out of
        the file (a compaction leaves every score as it was)."""
        if self._dead:
            self._compact()
        try:
            arrays = _postings_arrays(self)
        except Exception as exc:  # a snapshot is a cache: never a failed recall
            log.warning("the lexical index of %s/%s was not saved: %s", *self._scope()[1:3], exc)
            return
        if snaps.save(*self._scope(), arrays, self._last_seq):
            self._unsaved, self._on_disk = 0, True

    def _restore(self, snaps: IndexSnapshots) -> bool:
        snap = snaps.load(*self._scope())
        if snap is None or not _load_postings(self, snap):
            return False
        self._last_seq, self._unsaved, self._on_disk = snap["last_seq"], 0, True
        snaps.note_loaded()
        return True

    def search(
        self, query: Sequence[str], limit: int, admit: Admit | None = None
    ) -> list[tuple[int, float]]:
        """Up to ``limit`` (memory id, BM25 score) pairs, best first; ``admit`` (if given)
        keeps only the ids it returns, searching deeper until ``limit`` pass or none are left.

        >>> class Feed:
        ...     def changes_after(self, tenant, layer, after):
        ...         return [(1, 7, "red apples"), (2, 8, "green river")][after:]
        >>> index = LexicalIndex("t", "episodic")
        >>> index.sync(Feed(), generation=1)  # changes applied
        2
        >>> index.search(["appl"], 5)[0][0]
        7
        """
        with self._lock:
            ids, scores = self._scores(query)
        if limit <= 0 or not len(ids):
            return []
        want = limit if admit is None else limit * 4
        while True:
            top = _top(ids, scores, min(want, len(ids)))
            ranked = list(zip(ids[top].tolist(), scores[top].tolist(), strict=True))
            if admit is None:
                return ranked
            passing = admit([m for m, _ in ranked])
            found = [(m, s) for m, s in ranked if m in passing]
            if len(found) >= limit or want >= len(ids):
                return found[:limit]
            want *= 4


def _top(
    ids: npt.NDArray[np.int64], scores: npt.NDArray[np.float64], count: int
) -> npt.NDArray[np.intp]:
    """Indexes of the ``count`` best (score desc, id asc), in that order. Every document
    tied with the cut-off score is considered, so the choice never depends on positions."""
    if count < len(ids):
        cutoff = np.partition(-scores, count - 1)[count - 1]
        candidates = np.nonzero(-scores <= cutoff)[0]
    else:
        candidates = np.arange(len(ids))
    order = np.lexsort((ids[candidates], -scores[candidates]))
    return candidates[order][:count]


def _postings_arrays(index: LexicalPostings) -> dict[str, npt.NDArray[Any]]:
    """The postings of ``index`` as a snapshot's arrays (what :func:`_load_postings` reads)."""
    terms = list(index._positions)
    counts = np.fromiter((len(index._tfs[t]) // 2 for t in terms), np.int64, len(terms))
    return {
        "ids": np.frombuffer(index._ids, np.int64),
        "lengths": np.frombuffer(index._lengths, np.uint32),
        "live": np.frombuffer(index._live, np.uint8),
        "terms": np.frombuffer("\0".join(terms).encode(), np.uint8),
        "counts": counts,
        "positions": np.frombuffer(b"".join(index._positions.values()), np.uint32),
        "tfs": np.frombuffer(b"".join(index._tfs.values()), np.uint16),
    }


def _load_postings(index: LexicalPostings, snap: Mapping[str, Any]) -> bool:
    """Replace the postings of ``index`` with those of a snapshot, checked first; False
    (with a warning, ``index`` unchanged) if they do not hold together."""
    try:
        ids, lengths, live = snap["ids"], snap["lengths"], snap["live"].astype(bool)
        terms = bytes(snap["terms"]).decode().split("\0") if len(snap["counts"]) else []
        ends = np.cumsum(snap["counts"]).tolist()
        positions, tfs = snap["positions"].tobytes(), snap["tfs"].tobytes()
        if len(terms) != len(ends) or not len(ids) == len(lengths) == len(live):
            raise ValueError("its arrays disagree")
        if ends and (ends[-1] * 4 != len(positions) or ends[-1] * 2 != len(tfs)):
            raise ValueError("its postings are cut short")
        held = snap["positions"]
        if (len(held) and int(held.max()) >= len(ids)) or (snap["counts"] < 0).any():
            raise ValueError("its postings point past its documents")
        if len(set(terms)) != len(terms):
            raise ValueError("it holds a term twice")
    except Exception as exc:
        log.warning("ignoring the lexical snapshot of %s/%s: %s", index.tenant, index.layer, exc)
        return False
    starts = [0, *ends[:-1]]
    index._positions = {
        t: bytearray(positions[4 * a : 4 * b]) for t, a, b in zip(terms, starts, ends, strict=True)
    }
    index._tfs = {
        t: bytearray(tfs[2 * a : 2 * b]) for t, a, b in zip(terms, starts, ends, strict=True)
    }
    index._ids, index._lengths = array("q", ids.tobytes()), array("I", lengths.tobytes())
    index._live = bytearray(live.astype(np.uint8).tobytes())
    alive = np.nonzero(live)[0]
    index._position = dict(zip(ids[alive].tolist(), alive.tolist(), strict=True))
    index._total_length = int(lengths[alive].sum())
    index._dead = len(ids) - len(alive)
    return True


class LexicalIndexes(IndexCollection[LexicalIndex]):
    """The lexical indexes of every (tenant, layer), built on first use."""

    kind = "lexical"

    def __init__(
        self,
        store: ChangeFeed,
        snapshots: IndexSnapshots | None = None,
        residency: Residency | None = None,
    ) -> None:
        super().__init__(store, residency)
        self.snapshots = snapshots

    def _make(self, tenant: str, layer: str) -> LexicalIndex:
        return LexicalIndex(tenant, layer, self.snapshots)

    def search(
        self,
        tenant: str,
        layer: str,
        generation: int,
        query: Sequence[str],
        limit: int,
        admit: Admit | None = None,
    ) -> list[tuple[int, float]]:
        """Sync the (tenant, layer) index to ``generation``, then search it; see
        :meth:`LexicalIndex.search`."""
        return self.warm(tenant, layer, generation).search(query, limit, admit)
