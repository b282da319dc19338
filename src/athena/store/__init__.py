"""Storage: the :class:`Store` seam and its embedded SQLite implementation."""

from athena.store.protocol import (
    EntityNames,
    MemoryRow,
    PreparedMemory,
    RowFilter,
    Store,
    VectorBatch,
)
from athena.store.sqlite import SQLiteStore

__all__ = [
    "EntityNames",
    "MemoryRow",
    "PreparedMemory",
    "RowFilter",
    "SQLiteStore",
    "Store",
    "VectorBatch",
]
