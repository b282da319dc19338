"""The store seam: what the layers need from storage, behind one Protocol.

The SQLite store is the embedded default; a PostgreSQL store implements the same methods.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt


@dataclass(slots=True)
class MemoryRow:
    """A stored memory as the store returns it: a fresh object per read, owned by the caller
    (nothing caches rows; the result cache keeps hits, which stay frozen).

    Not frozen: a frozen dataclass builds itself through ``object.__setattr__`` field by
    field, 1.53 µs for these 14 fields against 0.18 µs, and a recall builds one per
    candidate it reads (15 for k=10).
    """

    id: int
    tenant: str
    layer: str
    key: str
    kind: str
    session: str | None
    actor: str | None
    text: str
    event_time: float | None
    created_at: float
    updated_at: float
    sources: tuple[str, ...]
    metadata: Mapping[str, Any]
    attributes: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class PreparedMemory:
    """A memory ready to write: validated, keyed, embedded, its entities extracted."""

    tenant: str
    layer: str
    key: str
    kind: str
    text: str
    session: str | None
    actor: str | None
    event_time: float | None
    sources: tuple[str, ...]
    metadata: Mapping[str, Any]
    attributes: Mapping[str, Any]
    vector: npt.NDArray[np.float32] | None
    model: str
    entities: tuple[str, ...] = ()
    relations: tuple[tuple[str, str, str], ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RowFilter:
    """Filters every search applies in storage."""

    since: float | None = None
    until: float | None = None
    session: str | None = None
    actor: str | None = None
    kinds: tuple[str, ...] | None = None

    def admits(self, row: MemoryRow) -> bool:
        """Whether ``row`` passes (used on vector candidates).

        >>> RowFilter(session="s1").admits(MemoryRow(1, "t", "episodic", "k", "turn", "s2",
        ...     None, "x", None, 0.0, 0.0, (), {}, {}))
        False
        """
        if self.session is not None and row.session != self.session:
            return False
        if self.actor is not None and row.actor != self.actor:
            return False
        if self.kinds is not None and row.kind not in self.kinds:
            return False
        if self.since is not None and (row.event_time is None or row.event_time < self.since):
            return False
        return not (
            self.until is not None and (row.event_time is None or row.event_time > self.until)
        )

    @property
    def empty(self) -> bool:
        return (
            self.since is None
            and self.until is None
            and not self.session
            and not self.actor
            and self.kinds is None
        )


@dataclass(frozen=True, slots=True)
class VectorBatch:
    """Vectors of one (tenant, layer, model) newer than some seq."""

    seqs: npt.NDArray[np.int64]
    ids: npt.NDArray[np.int64]
    matrix: npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class EntityNames:
    """A tenant's entity names, its count of entity changes and its largest entity id, read
    in one snapshot (:meth:`Store.entity_names`)."""

    changes: int  # only grows: names read at an equal count are all still there
    last_id: int  # the tenant's largest entity id (0: it has none)
    names: frozenset[str]  # normalised names


@dataclass(frozen=True, slots=True)
class EntityChanges:
    """How a tenant's entity names changed since a read of them, read in one snapshot
    (:meth:`Store.entity_changes`): names read before, less :attr:`removed`, plus
    :attr:`names`, are the names now, if :attr:`complete`."""

    changes: int  # the count of changes now
    last_id: int  # the largest entity id now
    names: frozenset[str]  # now: of the entities past the id read, or changed since
    removed: frozenset[str]  # the names changed entities had (some may be back in names)
    complete: bool  # False: the store no longer keeps every change since; read them all


class Store(Protocol):
    """Storage for every tenant's memories."""

    def on_commit(self, listener: Callable[[set[tuple[str, str]]], None]) -> None:
        """Call ``listener`` with the (tenant, layer) scopes of each committed write."""

    def on_quiet(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` once writing pauses after a committed write (for work that
        should not compete with the writes, such as catching indexes up)."""

    def put(self, items: Sequence[PreparedMemory]) -> list[int]:
        """Insert or (same tenant, layer, key) update, all in one transaction; return ids."""

    def update(
        self,
        tenant: str,
        memory_id: int,
        changes: Mapping[str, Any],
        prepared: PreparedMemory | None,
    ) -> MemoryRow:
        """Change fields of one memory of ``tenant``; raise NotFound if it is not theirs."""

    def delete(self, tenant: str, ids: Sequence[int]) -> list[int]:
        """Delete memories of ``tenant``; return the ids that existed."""

    def get(self, tenant: str, ids: Sequence[int]) -> list[MemoryRow]:
        """Rows of ``tenant`` with these ids, in the order asked; others are skipped."""

    def lexical(
        self, tenant: str, layer: str, match: str, limit: int, where: RowFilter
    ) -> list[tuple[int, float]]:
        """FTS5 search: (id, bm25 score, lower is better) best first."""

    def admitted(self, tenant: str, ids: Sequence[int], where: RowFilter) -> set[int]:
        """Those of ``ids`` that belong to ``tenant`` and pass ``where``."""

    def vectors_after(
        self, tenant: str, layer: str, model: str, after_seq: int, limit: int | None = None
    ) -> VectorBatch:
        """Vectors written after ``after_seq``, oldest first (at most ``limit`` if given)."""

    def vector_seqs(self, ids: Sequence[int], model: str) -> dict[int, int]:
        """The current vector seq of each id (missing if deleted)."""

    def vector_seq_high(self) -> int:
        """The highest vector seq ever assigned (0 before the first vector)."""

    def change_seq_high(self) -> int:
        """The highest ``memory_changes`` seq ever assigned (0 before the first change)."""

    def identity(self) -> str | None:
        """A random id minted with the database (None if its schema predates it)."""

    def scopes_changed_after(self, after_seq: int, limit: int) -> list[tuple[int, str, str]]:
        """(seq, tenant, layer) of the change feed's rows after ``after_seq``, oldest first,
        at most ``limit``: where any connection wrote since (one row per memory changed)."""

    def changes_after(
        self, tenant: str, layer: str, after_seq: int, limit: int | None = None
    ) -> list[tuple[int, int, str | None]]:
        """(seq, memory id, text) of memories of (tenant, layer) changed after ``after_seq``,
        oldest first (at most ``limit`` if given); the text is None for a memory that was
        deleted."""

    def deleted_after(
        self, tenant: str, layer: str, after_seq: int, limit: int | None = None
    ) -> list[tuple[int, int]]:
        """(seq, memory id) of the memories of (tenant, layer) deleted after ``after_seq``,
        oldest first (at most ``limit`` if given)."""

    def large_scopes(self, at_least: int) -> list[tuple[str, str, int]]:
        """(tenant, layer, memories) of every scope with ``at_least`` memories, largest first."""

    def generations(self, tenant: str) -> dict[str, int]:
        """The write generation of each layer of ``tenant``."""

    def tasks(self, tenant: str, limit: int, where: RowFilter) -> list[MemoryRow]:
        """Open prospective memories, most urgent first."""

    def entities(
        self, tenant: str, norms: Sequence[str], cap: int | None = None
    ) -> dict[str, tuple[int, int]]:
        """norm -> (entity id, number of memories mentioning it); with ``cap``, counting
        stops there (a count of ``cap`` means at least that many)."""

    def neighbours(self, tenant: str, entity_ids: Sequence[int], limit: int) -> list[int]:
        """Entities related to these by a typed relation."""

    def mentioning(
        self, tenant: str, entity_ids: Sequence[int], limit: int
    ) -> list[tuple[int, int]]:
        """The ``limit`` most recent (memory id, entity id) mentions of these entities,
        newest event first. ``tenant`` owns the entity ids (an entity is one tenant's and
        is mentioned only by its memories); a store may rely on that rather than filter."""

    def memory_count(self, tenant: str) -> int:
        """How many memories ``tenant`` holds, every layer (0: none), read in O(1)."""

    def entity_names(self, tenant: str) -> EntityNames:
        """The normalised names of ``tenant``'s entities, its largest entity id, and a count
        that moves whenever one of its entities is deleted, renamed or moved out, or an id a
        reader may have seen enters it; read in one snapshot."""

    def entity_changes(self, tenant: str, after: int, since: int) -> EntityChanges:
        """How ``tenant``'s names changed since a read of them that saw ids up to ``after``
        and ``since`` changes: the names of its entities past ``after`` or changed since,
        the names the changed ones had, and whether every change since is still kept (if
        not, read them all). While the count stands, new entities take ids above all the
        tenant's others; a changed entity, and an id a reader may have seen given again,
        are among the changes."""

    def stats(self, tenant: str | None) -> dict[str, Any]:
        """Counts per layer (and tenants), for one tenant or all."""

    def tenants(self) -> list[str]:
        """Every tenant with at least one memory."""

    def missing_vectors(self, model: str, limit: int) -> list[MemoryRow]:
        """Memories that have no vector for ``model`` yet."""

    def count_missing_vectors(self, model: str) -> int:
        """How many memories have no vector for ``model`` yet."""

    def put_vectors(
        self, rows: Sequence[tuple[MemoryRow, npt.NDArray[np.float32]]], model: str
    ) -> None:
        """Store vectors for existing memories."""

    def save_state(self, name: str, value: str) -> None:
        """Persist a learned state blob (dependency graph, selector)."""

    def load_state(self, name: str) -> str | None:
        """Read a learned state blob."""

    def append_telemetry(self, rows: Sequence[tuple[float, str, str, str, str]], keep: int) -> None:
        """Append telemetry rows and keep only the newest ``keep``."""

    def read_telemetry(self, limit: int) -> list[str]:
        """The newest telemetry rows (JSON), oldest first."""

    def close(self) -> None:
        """Stop the writer and close connections."""
