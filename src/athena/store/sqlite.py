"""The embedded default store: one SQLite file in WAL mode holding every tenant."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from athena.errors import StoreError, StoreReadOnly
from athena.store import sql_reads as reads
from athena.store import sql_writes as writes
from athena.store.connection import Readers, Writer, open_connection, translated
from athena.store.protocol import MemoryRow, PreparedMemory, RowFilter, VectorBatch
from athena.store.schema import migrate

T = TypeVar("T")
Listener = Callable[[set[tuple[str, str]]], None]


class SQLiteStore:
    """Every tenant's memories in one SQLite file.

    >>> import tempfile, os
    >>> store = SQLiteStore(os.path.join(tempfile.mkdtemp(), "a.db"))
    >>> store.stats(None)["memories"]
    0
    >>> store.close()
    """

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self._listeners: list[Listener] = []
        if not readonly:
            self._initialise()
        elif not self.path.exists():
            raise StoreError(f"no database at {self.path}")
        self._readers = Readers(self.path)
        self.readonly = readonly
        self._writer = Writer(self.path, self._notify)
        self._closed = False
        self._close_lock = threading.Lock()

    def _initialise(self) -> None:
        if self.path.is_dir():
            raise StoreError(f"{self.path} is a directory, not a database file")
        conn = open_connection(self.path)
        try:
            with translated():
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("BEGIN IMMEDIATE")
                try:
                    migrate(conn)
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
        finally:
            conn.close()

    # -- plumbing ---------------------------------------------------------------------------

    def on_commit(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _notify(self, touched: set[tuple[str, str]]) -> None:
        for listener in self._listeners:
            listener(touched)

    def _read(self, fn: Callable[..., T], *args: Any) -> T:
        with translated():
            return fn(self._readers.get(), *args)

    def _write(self, fn: Callable[[sqlite3.Connection, set[tuple[str, str]]], T]) -> T:
        if self.readonly:
            raise StoreReadOnly("this store was opened read-only")
        return self._writer.run(fn)

    def data_version(self) -> int:
        """Changes whenever another connection (any process) commits to the file."""
        with translated():
            return int(self._readers.get().execute("PRAGMA data_version").fetchone()[0])

    def close(self) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        # Readers first: the writer's last act is a WAL checkpoint, which open readers limit.
        self._readers.close()
        self._writer.close()

    # -- writes -----------------------------------------------------------------------------

    def put(self, items: Sequence[PreparedMemory]) -> list[int]:
        return self._write(lambda conn, touched: writes.put(conn, touched, items))

    def update(
        self,
        tenant: str,
        memory_id: int,
        changes: Mapping[str, Any],
        prepared: PreparedMemory | None,
    ) -> MemoryRow:
        return self._writer.run(
            lambda conn, touched: writes.update(conn, touched, tenant, memory_id, changes, prepared)
        )

    def delete(self, tenant: str, ids: Sequence[int]) -> list[int]:
        return self._write(lambda conn, touched: writes.delete(conn, touched, tenant, ids))

    def put_vectors(
        self, rows: Sequence[tuple[MemoryRow, npt.NDArray[np.float32]]], model: str
    ) -> None:
        self._write(lambda conn, touched: writes.put_vectors(conn, rows, model))

    def save_state(self, name: str, value: str) -> None:
        self._write(lambda conn, touched: writes.save_state(conn, name, value))

    def append_telemetry(self, rows: Sequence[tuple[float, str, str, str, str]], keep: int) -> None:
        self._write(lambda conn, touched: writes.append_telemetry(conn, rows, keep))

    # -- reads ------------------------------------------------------------------------------

    def get(self, tenant: str, ids: Sequence[int]) -> list[MemoryRow]:
        return self._read(reads.get, tenant, ids)

    def lexical(
        self, tenant: str, layer: str, match: str, limit: int, where: RowFilter
    ) -> list[tuple[int, float]]:
        return self._read(reads.lexical, tenant, layer, match, limit, where)

    def admitted(self, tenant: str, ids: Sequence[int], where: RowFilter) -> set[int]:
        return self._read(reads.admitted, tenant, ids, where)

    def vectors_after(self, tenant: str, layer: str, model: str, after_seq: int) -> VectorBatch:
        return self._read(reads.vectors_after, tenant, layer, model, after_seq)

    def vector_seqs(self, ids: Sequence[int], model: str) -> dict[int, int]:
        return self._read(reads.vector_seqs, ids, model)

    def generations(self, tenant: str) -> dict[str, int]:
        return self._read(reads.generations, tenant)

    def tasks(self, tenant: str, limit: int, where: RowFilter) -> list[MemoryRow]:
        return self._read(reads.tasks, tenant, limit, where)

    def entities(self, tenant: str, norms: Sequence[str]) -> dict[str, tuple[int, int]]:
        return self._read(reads.entities, tenant, norms)

    def neighbours(self, tenant: str, entity_ids: Sequence[int], limit: int) -> list[int]:
        return self._read(reads.neighbours, tenant, entity_ids, limit)

    def mentioning(
        self, tenant: str, entity_ids: Sequence[int], limit: int
    ) -> list[tuple[int, int]]:
        return self._read(reads.mentioning, tenant, entity_ids, limit)

    def entity_names(self, tenant: str) -> list[str]:
        return self._read(reads.entity_names, tenant)

    def stats(self, tenant: str | None) -> dict[str, Any]:
        return self._read(reads.stats, tenant)

    def tenants(self) -> list[str]:
        return self._read(reads.tenants)

    def missing_vectors(self, model: str, limit: int) -> list[MemoryRow]:
        return self._read(reads.missing_vectors, model, limit)

    def load_state(self, name: str) -> str | None:
        return self._read(reads.load_state, name)

    def read_telemetry(self, limit: int) -> list[str]:
        return self._read(reads.read_telemetry, limit)

    def integrity_check(self) -> str:
        """``PRAGMA integrity_check`` plus FTS5's own check; "ok" when both pass."""
        conn = self._readers.get()
        with translated():
            result = str(conn.execute("PRAGMA integrity_check").fetchone()[0])
        return result
