"""Decoded memory rows kept between recalls, each checked against its layer's generation.

A recall reads the rows of its best candidates to build hits: one SQL query and a decode
per row, 0.2-0.5 ms of a 1-2 ms static recall. An agent's recalls keep coming back to the
same memories, so :class:`RowCache` keeps the decoded rows, tagged with the generation of
their (tenant, layer) that the recall read *before* it ran. Every write that inserts,
changes or deletes a row bumps that generation (:func:`athena.store.sql_writes.bump`), in
this process or another (:class:`athena.generations.GenerationTracker` sees those), so a
row is served only while its tag equals the generation the asking recall read: never
after a committed write to its layer, never to another tenant (the key holds the tenant).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Final

from athena.store.protocol import MemoryRow, Store

ROWS_KEPT: Final = 16_384  # about 16 MB at 1 KB a row

Entry = tuple[MemoryRow, int]  # the row, and its layer's generation when it was read


class RowCache:
    """The store's ``get`` for a recall, served from rows read before when still valid.

    Bounded by two generations of dicts: rows go into the newer one, which becomes the
    older when it holds half of ``kept``; a row found in the older one moves back. A
    lookup takes no lock. ``kept=0`` keeps nothing (every call reads the store).

    >>> import tempfile, os
    >>> from athena.memory import Memory
    >>> mem = Memory(os.path.join(tempfile.mkdtemp(), "rows.db"), execution="sequential")
    >>> mid = mem.remember("Bob plays the cello.", tenant="t", layer="semantic")
    >>> rows, before = RowCache(), mem.generations.get("t")
    >>> [row.text for row in rows.get(mem.store, "t", [mid], before)]
    ['Bob plays the cello.']
    >>> rows.get(mem.store, "t", [mid], before)[0] is rows.get(mem.store, "t", [mid], before)[0]
    True
    >>> rows.get(mem.store, "other", [mid], mem.generations.get("other"))
    []
    >>> mem.close()
    """

    def __init__(self, kept: int = ROWS_KEPT) -> None:
        self._half = kept // 2
        self._new: dict[tuple[str, int], Entry] = {}
        self._old: dict[tuple[str, int], Entry] = {}
        self._lock = threading.Lock()
        self._served = 0
        self._read = 0

    def get(
        self, store: Store, tenant: str, ids: Sequence[int], generations: Mapping[str, int]
    ) -> list[MemoryRow]:
        """``store.get(tenant, ids)``: the rows that exist, in the order of ``ids``.

        ``generations``: the tenant's, read before the recall that asks began (a row read
        now is at least that new, so a later write moves its tag out of date).
        """
        if self._half <= 0:
            return store.get(tenant, ids)
        new, old = self._new, self._old
        found: dict[int, MemoryRow] = {}
        missing: list[int] = []
        moved: list[tuple[tuple[str, int], Entry]] = []
        for memory_id in ids:
            key = (tenant, memory_id)
            entry = new.get(key)
            if entry is None:
                entry = old.get(key)
                if entry is not None and entry[1] == generations.get(entry[0].layer, 0):
                    moved.append((key, entry))  # still valid: it moves to the newer dict
            if entry is not None and entry[1] == generations.get(entry[0].layer, 0):
                found[memory_id] = entry[0]
            else:
                missing.append(memory_id)
        if missing:
            read = store.get(tenant, missing)
            for row in read:
                found[row.id] = row
                moved.append(((tenant, row.id), (row, generations.get(row.layer, 0))))
        if moved:
            self._keep(moved)
        with self._lock:
            self._served += len(ids) - len(missing)
            self._read += len(missing)
        return [found[memory_id] for memory_id in ids if memory_id in found]

    def _keep(self, entries: list[tuple[tuple[str, int], Entry]]) -> None:
        new = self._new
        new.update(entries)
        if len(new) >= self._half:
            with self._lock:
                if self._new is new:
                    self._old, self._new = new, {}

    def clear(self) -> None:
        """Forget every row (a bulk change the generations do not describe)."""
        with self._lock:
            self._new, self._old = {}, {}

    def stats(self) -> dict[str, int]:
        """Rows held, and how many rows the recalls were served from here or read.

        >>> RowCache().stats()
        {'rows': 0, 'served': 0, 'read': 0}
        """
        with self._lock:
            held = len(self._new) + len(self._old)  # a row may sit in both for a while
            return {"rows": held, "served": self._served, "read": self._read}
