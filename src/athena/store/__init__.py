"""Storage: the :class:`Store` seam and its embedded SQLite implementation."""

from athena.store.protocol import (
    EntityChanges,
    EntityNames,
    MemoryRow,
    PreparedMemory,
    RowFilter,
    Store,
    VectorBatch,
)
from athena.store.sqlite import SQLiteStore

__all__ = [
    "EntityChanges",
    "EntityNames",
    "MemoryRow",
    "PreparedMemory",
    "RowFilter",
    "SQLiteStore",
    "Store",
    "VectorBatch",
]
