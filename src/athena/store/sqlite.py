"""The embedded default store: one SQLite file in WAL mode holding every tenant."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from athena.errors import StoreError, StoreReadOnly
from athena.store import sql_writes as writes
from athena.store.connection import Writer, needs_immutable, translated, unwritable
from athena.store.protocol import MemoryRow, PreparedMemory
from athena.store.reader import SQLiteReader
from athena.store.schema import SCHEMA_VERSION, initialise
from athena.store.turns import guarded

T = TypeVar("T")
Listener = Callable[[set[tuple[str, str]]], None]


class SQLiteStore(SQLiteReader):
    """Every tenant's memories in one SQLite file.

    Reads (:class:`~athena.store.reader.SQLiteReader`) run on each thread's own read-only
    connection; writes take turns on the one write connection, each on its caller's thread.

    A file that exists but cannot be written (a read-only file system, no write permission
    on it, its -wal/-shm or their directory) opens read-only, as ``readonly=True`` does:
    reads work, every write raises :class:`StoreReadOnly` (``read_only_reason`` says why),
    and telemetry and learned state are not saved. On read-only media a closed WAL
    database has no -shm, so readers open it ``immutable`` (SQLite then assumes the file
    cannot change under it; remount read-write, then reopen the store, to write again).

    >>> import tempfile, os
    >>> store = SQLiteStore(os.path.join(tempfile.mkdtemp(), "a.db"))
    >>> store.stats(None)["memories"]
    0
    >>> store.close()
    """

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self._listeners: list[Listener] = []
        self._quiet_listeners: list[Callable[[], None]] = []
        self.read_only_reason: str | None = "this store was opened read-only" if readonly else None
        if not readonly:
            try:
                initialise(self.path)
                # Opening and migrating may succeed on a file we cannot write (nothing to
                # migrate): ask the OS, so the writes fail up front and alike.
                reason = unwritable(self.path)
            except StoreError:
                reason = unwritable(self.path) if self.path.is_file() else None
                if reason is None:
                    raise
            if reason is not None:
                readonly = True
                self.read_only_reason = f"the database is read-only: {reason}"
        elif not self.path.exists():
            raise StoreError(f"no database at {self.path}")
        self.readonly = readonly
        super().__init__(self.path, immutable=readonly and needs_immutable(self.path))
        self._writer = Writer(self.path, self._notify, self._quiet)
        if readonly:  # nobody can migrate it here: it must be this version already
            self._check_schema()

    def _check_schema(self) -> None:
        try:
            version = self._read(
                lambda conn: int(conn.execute("PRAGMA user_version").fetchone()[0])
            )
        except BaseException:
            self._readers.close()
            raise
        if version != SCHEMA_VERSION:
            self._readers.close()
            raise StoreReadOnly(
                f"{self.read_only_reason}, and its schema version {version} is not this "
                f"Athena's ({SCHEMA_VERSION}): it cannot be migrated"
            )

    def on_commit(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def on_quiet(self, listener: Callable[[], None]) -> None:
        self._quiet_listeners.append(listener)

    def _notify(self, touched: set[tuple[str, str]]) -> None:
        for listener in self._listeners:
            guarded(listener, touched)

    def _quiet(self) -> None:
        for listener in self._quiet_listeners:
            guarded(listener)

    def _write(self, fn: Callable[[sqlite3.Connection, set[tuple[str, str]]], T]) -> T:
        if self.readonly:
            raise StoreReadOnly(self.read_only_reason or "the store is read-only")
        return self._writer.run(fn)

    def close(self) -> None:
        # Readers first: the writer's last act is a WAL checkpoint, which open readers limit.
        # (Not from inside a write, a store listener's: that raises before closing anything.)
        self._writer.refuse_inside_a_write()
        super().close()
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
        return self._write(
            lambda conn, touched: writes.update(conn, touched, tenant, memory_id, changes, prepared)
        )

    def delete(self, tenant: str, ids: Sequence[int]) -> list[int]:
        return self._write(lambda conn, touched: writes.delete(conn, touched, tenant, ids))

    def put_vectors(
        self, rows: Sequence[tuple[MemoryRow, npt.NDArray[np.float32]]], model: str
    ) -> None:
        self._write(lambda conn, touched: writes.put_vectors(conn, rows, model))

    def save_state(self, name: str, value: str) -> None:
        if self.readonly:
            return  # learned state is the engine's cache of experience; not kept here
        self._write(lambda conn, touched: writes.save_state(conn, name, value))

    def append_telemetry(self, rows: Sequence[tuple[float, str, str, str, str]], keep: int) -> None:
        if self.readonly:
            return  # telemetry is not kept by a read-only store (the recall still works)
        self._write(lambda conn, touched: writes.append_telemetry(conn, rows, keep))

    def integrity_check(self) -> str:
        """``PRAGMA integrity_check`` plus FTS5's own check; "ok" when both pass.

        FTS5's ``integrity-check`` (with ``rank = 1``: the index against the ``memories``
        table) is an INSERT command, which read-only connections refuse, so it runs on the
        writer (it writes nothing). A read-only store runs only the PRAGMA.
        """
        with translated():
            rows = self._readers.get().execute("PRAGMA integrity_check").fetchall()
        result = "\n".join(str(row[0]) for row in rows)
        if result != "ok" or self.readonly:
            return result
        return self._write(lambda conn, touched: fts_integrity(conn))


def fts_integrity(conn: sqlite3.Connection) -> str:
    """FTS5's ``integrity-check`` of the lexical index: "ok", or what it found wrong."""
    try:
        conn.execute("INSERT INTO memories_fts (memories_fts, rank) VALUES ('integrity-check', 1)")
    except sqlite3.DatabaseError as exc:
        return f"fts5 integrity-check: {exc}"
    return "ok"
