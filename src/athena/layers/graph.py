"""Graph memory: entities and typed, timestamped relations extracted on write.

Search finds the entities a query names, expands one hop to related entities, and returns
the memories that mention them, ranked by how specific the matched entities are (an entity
mentioned everywhere, like the speaker of every turn, weighs little).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Collection
from typing import Any, Final

from athena.errors import InvalidInput
from athena.layers.extraction import query_entities
from athena.layers.protocol import LayerContext, Prepared, SearchRequest
from athena.records import MemoryInput
from athena.store.protocol import EntityChanges, EntityNames, Store

NEIGHBOUR_WEIGHT: Final = 0.5
MAX_NEIGHBOURS: Final = 10
MERGE_AT: Final = 256  # names changed since a full read kept apart (more for many names)
# A held name is about 100 bytes (its string and its set slot; a LoCoMo tenant's 194, traced),
# a memory in the indexes about 2.6 KB: the index budget counts this many names as one.
NAMES_PER_MEMORY: Final = 26
# An entity in more than this share of a tenant's memories (the agent's user, the speaker of
# every turn) says nothing about which memory a query wants; it neither matches nor expands.
UBIQUITY: Final = 0.05

Generations = tuple[tuple[str, int], ...]


class GraphLayer:
    """Who and what, and how they relate. Writes to this layer are entity or relation
    notes; every layer's writes feed the graph through entity extraction.
    """

    name = "graph"
    default_kind = "relation"

    def __init__(self) -> None:
        # Per (store, tenant): the store, the generations the tenant's names and memory
        # count were read at, and those. The store is held, so its id names no other (one
        # layer object may serve several Memory objects, each on its own file).
        self._held: dict[tuple[int, str], tuple[Store, Generations, Names, int]] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        """Pickled with its configuration (a subclass's too) but without the names it
        holds: they are this process's state, read from its stores, behind its lock; a
        worker process reads its own."""
        state = dict(self.__dict__)
        del state["_held"], state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._held = {}
        self._lock = threading.Lock()

    def prepare(self, item: MemoryInput) -> Prepared:
        raw = item.attributes.get("relations", [])
        relations: list[tuple[str, str, str]] = []
        if not isinstance(raw, list):
            raise InvalidInput("relations must be a list of [subject, relation, object]")
        for triple in raw:
            if (
                not isinstance(triple, list | tuple)
                or len(triple) != 3
                or not all(isinstance(part, str) and part.strip() for part in triple)
            ):
                raise InvalidInput("each relation must be [subject, relation, object] strings")
            relations.append((triple[0].strip(), triple[1].strip(), triple[2].strip()))
        attrs: dict[str, Any] = {**item.attributes, "relations": [list(r) for r in relations]}
        return Prepared(
            kind=item.kind or self.default_kind,
            text=item.text,
            attributes=attrs,
            relations=tuple(relations),
        )

    def _known(
        self, ctx: LayerContext, tenant: str, generations: dict[str, int]
    ) -> tuple[Names, int]:
        """The tenant's entity names and memory count, read again when any layer's
        generation moved (the count moves with writes to any layer), so every process
        computes the same. The names are read from where the last read stopped."""
        store, key = ctx.store, tuple(sorted(generations.items()))
        slot = (id(store), tenant)
        held = self._held.get(slot)
        if held is not None and held[1] == key:
            ctx.residency.touch(tenant)
            return held[2], held[3]
        names = read_names(store, tenant, None if held is None else held[2])
        known = (names, store.memory_count(tenant))
        entry = (store, key, *known)
        with self._lock:
            self._held[slot] = entry
        # Counted as the memories its names weigh (at least one; under a key of their own,
        # not inside the larger of this layer's indexes), so the budget bounds a tenant
        # recalled only through this layer too; again on every read, since a drop may have
        # come between the read and the store.
        current, weight, own = self._held, names_weight(len(names)), f"{self.name} names"
        ctx.residency.grew(tenant, "names", own, weight, lambda: current.get(slot) is entry)
        return known

    def holds(self, ctx: LayerContext, tenant: str) -> bool:
        """Whether the tenant's names are held for ``ctx``'s store.

        >>> from types import SimpleNamespace
        >>> GraphLayer().holds(SimpleNamespace(store=None), "t")  # type: ignore[arg-type]
        False
        """
        return (id(ctx.store), tenant) in self._held

    def follow(self, ctx: LayerContext, tenant: str, generations: dict[str, int]) -> None:
        """Read the tenant's new names and memory count now, if this layer holds them
        (see :class:`~athena.layers.protocol.FollowsWrites`).

        >>> from types import SimpleNamespace
        >>> ctx = SimpleNamespace(store=None)  # it holds no tenant: nothing is read
        >>> GraphLayer().follow(ctx, "t", {"episodic": 2})  # type: ignore[arg-type]
        """
        if (id(ctx.store), tenant) in self._held:
            self._known(ctx, tenant, generations)

    def forget_tenants(self, store: Store, tenants: Collection[str] | None = None) -> None:
        """Drop the names held for ``tenants`` of ``store`` (None: every tenant of it, so a
        closed ``Memory``'s store is no longer held; see
        :class:`~athena.layers.protocol.HoldsTenants`).

        >>> GraphLayer().forget_tenants(None, ["t"])  # type: ignore[arg-type]
        """
        held, sid = self._held, id(store)
        gone = None if tenants is None else set(tenants)
        with self._lock:
            for key in [k for k in held if k[0] == sid and (gone is None or k[1] in gone)]:
                del held[key]

    def search(self, ctx: LayerContext, request: SearchRequest) -> list[tuple[int, float]]:
        tenant = request.query.tenant
        generation = request.generations.get(self.name, 0)
        if generation == 0:
            return []
        names, total = self._known(ctx, tenant, request.generations)
        named = query_entities(request.query.text, names)
        limit = int(max(10, UBIQUITY * total))  # mentions past this: too common to matter
        known = ctx.store.entities(tenant, named, cap=limit + 1)
        found = {n: v for n, v in known.items() if v[1] <= limit}
        if not found:
            return []
        weights = {eid: 1.0 / math.log(2.0 + count) for eid, count in found.values()}
        for eid in ctx.store.neighbours(tenant, list(weights), MAX_NEIGHBOURS):
            weights.setdefault(eid, NEIGHBOUR_WEIGHT / math.log(2.0 + MAX_NEIGHBOURS))
        scores: dict[int, float] = {}
        order: dict[int, int] = {}
        pairs = ctx.store.mentioning(tenant, list(weights), request.depth * 20)
        where = request.where
        for memory_id, eid in pairs:
            scores[memory_id] = scores.get(memory_id, 0.0) + weights[eid]
            order.setdefault(memory_id, len(order))
        ranked = sorted(scores, key=lambda m: (-scores[m], order[m]))
        if not where.empty:
            passing = ctx.store.admitted(tenant, ranked[: request.depth * 4], where)
            ranked = [m for m in ranked if m in passing]
        return [(m, scores[m]) for m in ranked[: request.depth]]


class Names:
    """A tenant's normalised entity names as one snapshot of the store held them, for
    membership tests only (:func:`~athena.layers.extraction.query_entities`).

    Immutable: a newer snapshot is a new object sharing the old one's sets. Names added
    since sit in a small set beside the large one, and names the large one holds that went
    in another small set, merged into it once they outgrow a share of it, so a write's or a
    forget's one or two names cost a copy of a small set, not of all.

    >>> from athena.store import EntityChanges, EntityNames
    >>> names = Names.read(EntityNames(0, 4, frozenset({"ann", "bo"})))
    >>> later = names.changed(EntityChanges(1, 7, frozenset({"cy"}), frozenset({"bo"}), True))
    >>> "cy" in later, "cy" in names, "ann" in later, "bo" in later, len(later), later.last_id
    (True, False, True, False, 2, 7)
    """

    __slots__ = ("_base", "_gone", "_recent", "changes", "last_id")

    def __init__(
        self,
        base: frozenset[str],
        recent: frozenset[str],
        gone: frozenset[str],
        last_id: int,
        changes: int,
    ) -> None:
        # Names in recent are not in base; names in gone are in base, and not held.
        self._base, self._recent, self._gone = base, recent, gone
        self.last_id, self.changes = last_id, changes

    @classmethod
    def read(cls, read: EntityNames) -> Names:
        """Every name, from a full read."""
        return cls(read.names, frozenset(), frozenset(), read.last_id, read.changes)

    def changed(self, read: EntityChanges) -> Names:
        """These names changed by ``read`` (complete, and read since these were)."""
        same = (read.last_id, read.changes) == (self.last_id, self.changes)
        if same and not read.names and not read.removed:
            return self
        base = self._base
        recent = self._recent - read.removed
        gone = self._gone | (read.removed & base)
        if read.names:
            recent |= read.names - base
            gone -= read.names
        if len(recent) + len(gone) > max(MERGE_AT, 4 * math.isqrt(len(base))):
            base, recent, gone = (base - gone) | recent, frozenset(), frozenset()
        return Names(base, recent, gone, read.last_id, read.changes)

    def __contains__(self, name: object) -> bool:
        if name in self._base:
            return name not in self._gone
        return name in self._recent

    def __len__(self) -> int:
        return len(self._base) - len(self._gone) + len(self._recent)


def names_weight(names: int) -> int:
    """What ``names`` held entity names count for in the index budget, in memories.

    >>> names_weight(0), names_weight(1), names_weight(194), names_weight(2_600)
    (1, 1, 8, 100)
    """
    return max(1, -(-names // NAMES_PER_MEMORY))


def read_names(store: Store, tenant: str, held: Names | None) -> Names:
    """``tenant``'s entity names now: ``held`` changed by what the store logged since it
    was read, or all of them again if there is nothing held or the store no longer keeps
    every change since.

    >>> import tempfile, os
    >>> from athena.store import SQLiteStore
    >>> store = SQLiteStore(os.path.join(tempfile.mkdtemp(), "n.db"))
    >>> names = read_names(store, "t", None)
    >>> len(names), read_names(store, "t", names) is names
    (0, True)
    >>> store.close()
    """
    if held is not None:
        read = store.entity_changes(tenant, held.last_id, held.changes)
        if read.complete and (
            read.changes > held.changes
            or (read.changes == held.changes and read.last_id >= held.last_id)
        ):  # (a count gone down, or a smaller largest id with none: not the file read)
            return held.changed(read)
    return Names.read(store.entity_names(tenant))
