"""The write side of :class:`~athena.memory.Memory`: remember, update and forget, checked."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from athena.embedding import Embedder
from athena.errors import InvalidInput, NotFound
from athena.layers import MemoryLayer
from athena.records import MemoryInput, check_tenant
from athena.store.sqlite import SQLiteStore
from athena.writing import check_mapping, check_timestamp, prepare

MAX_ID = 2**63 - 1  # SQLite's largest rowid


class MemoryWrites:
    """The writes of a :class:`~athena.memory.Memory` (which is one) to its ``store``.

    New text is checked and embedded (:func:`~athena.writing.prepare`) before it is
    stored; an update or a forget naming an id that is not the tenant's raises NotFound
    and changes nothing.

    >>> import tempfile, os
    >>> from athena.memory import Memory
    >>> mem = Memory(os.path.join(tempfile.mkdtemp(), "w.db"))
    >>> mid = mem.remember("The spare key is under the mat.", tenant="t")
    >>> mem.update(mid, tenant="t", metadata={"room": "hall"}) == mid
    True
    >>> mem.forget(mid, tenant="t") == [mid]
    True
    >>> mem.close()
    """

    store: SQLiteStore
    layers: dict[str, MemoryLayer]
    embedder: Embedder

    def remember(
        self,
        text: str,
        *,
        tenant: str,
        layer: str = "episodic",
        key: str | None = None,
        kind: str | None = None,
        session: str | None = None,
        actor: str | None = None,
        timestamp: float | None = None,
        sources: Sequence[str] = (),
        metadata: Mapping[str, Any] | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> int:
        """Store one memory and return its id. Same (tenant, layer, key) updates in place.

        >>> # mem.remember("Buy milk", tenant="t", layer="prospective", attributes={"priority": 8})
        """
        item = MemoryInput(
            layer=layer,
            text=text,
            tenant=tenant,
            key=key,
            kind=kind,
            session=session,
            actor=actor,
            event_time=timestamp,
            sources=tuple(sources),
            metadata=metadata or {},
            attributes=attributes or {},
        )
        return self.remember_many([item])[0]

    def remember_many(self, items: Sequence[MemoryInput]) -> list[int]:
        """Store many memories in one transaction (all or none); return their ids in order."""
        if not items:
            return []
        return self.store.put(prepare(items, self.layers, self.embedder))

    def update(
        self,
        memory_id: int,
        *,
        tenant: str,
        text: str | None = None,
        timestamp: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> int:
        """Change a memory of ``tenant``: new text is re-embedded and re-indexed.

        Metadata and attributes are merged into what is stored. Raises NotFound when the id
        is not one of ``tenant``'s memories.
        """
        check_tenant(tenant)
        memory_id = check_id(memory_id)
        rows = self.store.get(tenant, [memory_id])
        if not rows:
            raise NotFound(f"no memory {memory_id} for tenant {tenant!r}")
        row = rows[0]
        changes: dict[str, Any] = {}
        if timestamp is not None:
            changes["event_time"] = check_timestamp(timestamp)
        if metadata is not None:
            changes["metadata"] = dict(check_mapping(metadata, "metadata"))
        if attributes is not None:
            changes["attributes"] = dict(check_mapping(attributes, "attributes"))
        prepared = None
        if text is not None:
            merged = MemoryInput(
                layer=row.layer,
                text=text,
                tenant=tenant,
                key=row.key,
                kind=row.kind,
                session=row.session,
                actor=row.actor,
                attributes={**row.attributes, **changes.get("attributes", {})},
            )
            prepared = prepare([merged], self.layers, self.embedder)[0]
            changes["text"] = prepared.text
            changes["attributes"] = dict(prepared.attributes)
        if not changes:
            raise InvalidInput("update needs text, timestamp, metadata or attributes")
        self.store.update(tenant, memory_id, changes, prepared)
        return memory_id

    def forget(self, ids: int | Sequence[int], *, tenant: str) -> list[int]:
        """Delete memories of ``tenant``; return the ids that were deleted.

        Ids that do not exist or belong to another tenant raise NotFound, and nothing is
        deleted.
        """
        check_tenant(tenant)
        wanted = [check_id(i) for i in ([ids] if isinstance(ids, int) else ids)]
        if not wanted:
            raise InvalidInput("forget needs at least one id")
        present = {row.id for row in self.store.get(tenant, wanted)}
        missing = [i for i in wanted if i not in present]
        if missing:
            raise NotFound(f"no memories {missing} for tenant {tenant!r}")
        return self.store.delete(tenant, wanted)


def check_id(value: object) -> int:
    """``value`` if it is a memory id (an int from 1 to 2**63 - 1), else InvalidInput.

    >>> check_id(7)
    7
    """
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_ID:
        raise InvalidInput(
            f"memory id must be a positive integer (at most {MAX_ID}), not {value!r}"
        )
    return value
