"""Storage: the :class:`Store` seam and its embedded SQLite implementation."""

from athena.store.protocol import MemoryRow, PreparedMemory, RowFilter, Store, VectorBatch
from athena.store.sqlite import SQLiteStore

__all__ = ["MemoryRow", "PreparedMemory", "RowFilter", "SQLiteStore", "Store", "VectorBatch"]
