"""One process's indexes of one kind, one per (tenant, layer): built on first use, caught
up with writes, counted by a :class:`~athena.retrieval.residency.Residency` and dropped
through it. The vector and the lexical collections differ only in the index they make and
how they search it."""

from __future__ import annotations

import threading
from collections.abc import Collection
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from athena.retrieval.residency import Residency


class SyncedIndex(Protocol):
    """An index kept in step with the store's change feed."""

    def sync(self, store: Any, generation: int) -> int:
        """Apply the changes up to ``generation``; how many it applied."""

    def follow(self, store: Any, generation: int, most: int) -> int:
        """:meth:`sync` if at most ``most`` changes behind and built; else nothing."""

    def __len__(self) -> int: ...


IndexT = TypeVar("IndexT", bound=SyncedIndex)


class IndexCollection(Generic[IndexT]):
    """The indexes of one ``kind`` of every (tenant, layer), made by :meth:`_make`.

    >>> class Counted(IndexCollection[Any]):
    ...     kind = "toy"
    >>> Counted(None).follow("t", "episodic", 3, 512)
    0
    """

    kind: ClassVar[str]

    def __init__(self, store: Any, residency: Residency | None = None) -> None:
        self._store = store
        self._indexes: dict[tuple[str, str], IndexT] = {}
        self._lock = threading.Lock()
        self.residency = residency or Residency()
        self.residency.on_evict(self.drop)
        self.loaded = 0  # rows applied by every sync so far (approximate)
        self.followed = 0  # and by every follow (approximate)

    def _make(self, tenant: str, layer: str) -> IndexT:
        raise NotImplementedError

    def warm(self, tenant: str, layer: str, generation: int) -> IndexT:
        """The (tenant, layer) index, built or caught up to ``generation``."""
        key, created = (tenant, layer), False
        index = self._indexes.get(key)
        if index is None:
            with self._lock:
                index = self._indexes.get(key)
                if index is None:
                    index = self._indexes[key] = self._make(tenant, layer)
                    created = True
        applied = index.sync(self._store, generation)
        self.residency.touch(tenant)
        if applied or created:
            self.loaded += applied
            self._count(tenant, layer, index)
        return index

    def follow(self, tenant: str, layer: str, generation: int, most: int) -> int:
        """Catch the (tenant, layer) index up to ``generation`` if it is loaded, at most
        ``most`` changes behind and needs no build (a scope never searched stays unbuilt, a
        large catch-up is left for the next search); returns how many changes it applied."""
        index = self._indexes.get((tenant, layer))
        if index is None:
            return 0
        applied = index.follow(self._store, generation, most)
        if applied:
            self.followed += applied  # not ``loaded``: that tells a recall it built an index
            self._count(tenant, layer, index)
        return applied

    def drop(self, tenants: Collection[str]) -> None:
        """Forget the indexes of ``tenants`` (a search builds them again; see
        :class:`~athena.retrieval.residency.Residency`)."""
        gone = set(tenants)
        with self._lock:
            for key in [key for key in self._indexes if key[0] in gone]:
                del self._indexes[key]

    def _count(self, tenant: str, layer: str, index: IndexT) -> None:
        """Tell the residency what ``index`` holds, unless it was dropped meanwhile."""
        held, key = self._indexes, (tenant, layer)
        self.residency.grew(tenant, self.kind, layer, len(index), lambda: held.get(key) is index)
