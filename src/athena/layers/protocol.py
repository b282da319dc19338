"""The layer seam: each memory layer is one module behind :class:`MemoryLayer`."""

from __future__ import annotations

import functools
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from athena.records import MemoryInput, RecallQuery
from athena.retrieval.lexical_index import LexicalIndexes
from athena.retrieval.residency import Residency
from athena.retrieval.snapshots import IndexSnapshots
from athena.retrieval.vector import VectorIndexes
from athena.store.protocol import RowFilter, Store


@dataclass(frozen=True, slots=True)
class SearchRequest:
    """Everything a layer needs to answer one recall; picklable, so it can cross processes.

    The query vector is computed once per recall and shared by every layer.
    """

    query: RecallQuery
    vector: npt.NDArray[np.float32]
    generations: dict[str, int]
    depth: int
    now: float

    @property
    def where(self) -> RowFilter:
        q = self.query
        return RowFilter(
            since=q.since, until=q.until, session=q.session, actor=q.actor, kinds=q.kinds
        )


@dataclass(frozen=True, slots=True)
class LayerResult:
    """One layer's ranked answer: memory ids best first, with the layer's own scores."""

    layer: str
    ids: tuple[int, ...]
    scores: tuple[float, ...]
    elapsed_ms: float = 0.0
    generation: int = 0
    source: str = "sequential"
    loaded: int = 0  # index rows loaded to answer it (a build or a catch-up), where it ran


@dataclass(frozen=True, slots=True)
class Prepared:
    """What a layer makes of a :class:`MemoryInput` before it is written."""

    kind: str
    text: str
    attributes: dict[str, Any] = field(default_factory=dict)
    relations: tuple[tuple[str, str, str], ...] = ()


@dataclass(slots=True)
class LayerContext:
    """The per-process resources layers search with."""

    store: Store
    indexes: VectorIndexes
    lexicon: LexicalIndexes

    def loaded(self) -> int:
        """Rows the in-memory indexes have applied so far: a recall that moved this by
        much built an index, and its cost says nothing about its strategy's."""
        return self.indexes.loaded + self.lexicon.loaded

    @property
    def residency(self) -> Residency:
        """Which tenants' indexes this process holds (see :mod:`athena.retrieval.residency`)."""
        return self.indexes.residency


def open_context(
    store: Store,
    model: str,
    hnsw_cutoff: int,
    snapshots: IndexSnapshots | None,
    layers: Iterable[object],
    budget: int | None,
) -> LayerContext:
    """A process's layer context: both index collections under one :class:`Residency` of
    ``budget`` memories, which also drops what ``layers`` hold for the tenants it drops.

    >>> ctx = open_context(None, "m", 0, None, [], 100)  # type: ignore[arg-type]
    >>> ctx.residency.budget
    100
    """
    residency = Residency(budget)
    ctx = LayerContext(
        store,
        VectorIndexes(store, model, hnsw_cutoff, snapshots, residency),
        LexicalIndexes(store, snapshots, residency),
    )
    for layer in layers:
        if isinstance(layer, HoldsTenants):
            residency.on_evict(functools.partial(layer.forget_tenants, store))
    return ctx


class MemoryLayer(Protocol):
    """One memory layer: its records, its write preparation and its search."""

    name: str
    default_kind: str

    def prepare(self, item: MemoryInput) -> Prepared:
        """Validate and normalise a memory for this layer (raise InvalidInput if wrong)."""

    def search(self, ctx: LayerContext, request: SearchRequest) -> list[tuple[int, float]]:
        """Ranked (memory id, score) for the query, best first, at most ``request.depth``."""


@runtime_checkable
class FollowsWrites(Protocol):
    """A layer that keeps a tenant's state in the process (the graph layer's entity names
    and memory count) and can bring it up to ``generations`` after a write, before the next
    recall asks (:mod:`athena.catch_up`). It must do nothing for a tenant it does not hold.
    """

    def follow(self, ctx: LayerContext, tenant: str, generations: dict[str, int]) -> None:
        """Bring the state this layer holds for ``tenant`` up to ``generations``."""


@runtime_checkable
class HoldsTenants(Protocol):
    """A layer that keeps per-tenant state in the process (the graph layer's entity names),
    dropped with the tenant's indexes (:mod:`athena.retrieval.residency`) and, for every
    tenant of a store, when the ``Memory`` on that store closes."""

    def forget_tenants(self, store: Store, tenants: Collection[str] | None = None) -> None:
        """Drop what this layer holds for ``tenants`` of ``store`` (None: all of them)."""
