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
from athena.store.connection import (
    Readers,
    Writer,
    needs_immutable,
    open_connection,
    translate,
    translated,
    unwritable,
)
from athena.store.protocol import MemoryRow, PreparedMemory, RowFilter, VectorBatch
from athena.store.schema import SCHEMA_VERSION, migrate
from athena.store.wal_watch import WalWatch

T = TypeVar("T")
Listener = Callable[[set[tuple[str, str]]], None]


class SQLiteStore:
    """Every tenant's memories in one SQLite file.

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
        self.read_only_reason: str | None = "this store was opened read-only" if readonly else None
        fell_back = False
        if not readonly:
            try:
                self._initialise()
                # Opening and migrating may succeed on a file we cannot write (nothing to
                # migrate): ask the OS, so the writes fail up front and alike.
                reason = unwritable(self.path)
            except StoreError:
                reason = unwritable(self.path) if self.path.is_file() else None
                if reason is None:
                    raise
            if reason is not None:
                readonly, fell_back = True, True
                self.read_only_reason = f"the database is read-only: {reason}"
        elif not self.path.exists():
            raise StoreError(f"no database at {self.path}")
        self.readonly = readonly
        self._readers = Readers(self.path, immutable=readonly and needs_immutable(self.path))
        self._writer = Writer(self.path, self._notify)
        self._closed = False
        self._close_lock = threading.Lock()
        self._watch: WalWatch | None = None
        self._watch_tried = False
        if fell_back:
            self._check_schema()  # nobody can migrate it: it must be this version already

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
            raise StoreReadOnly(self.read_only_reason or "the store is read-only")
        return self._writer.run(fn)

    def data_version(self) -> int:
        """Changes whenever another connection (any process) commits to the file."""
        try:  # not `translated()`: this runs on every recall, and a context manager costs
            return int(self._readers.get().execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error as exc:
            raise translate(exc) from exc

    def wal_header(self) -> bytes | None:
        """The WAL-index header (:mod:`athena.store.wal_watch`): every commit to the file,
        from any process, changes it. None when it cannot be read (then ask
        :meth:`data_version`). Read it *before* asking SQLite, so a commit racing the two
        reads changes it again."""
        watch = self._watch if self._watch_tried else self._open_watch()
        if watch is None:
            return None
        with self._close_lock:  # never read once closed: the mapping is safe only while open
            return None if self._closed else watch.header()

    def _open_watch(self) -> WalWatch | None:
        with self._close_lock:
            if self._closed or self._watch_tried:
                return self._watch
            self._watch_tried = True
            if self._readers.immutable:
                return None
            self.data_version()  # this thread's reader now holds the file and its -shm
            listed = self._readers.get().execute("PRAGMA database_list").fetchall()
            files = [row[2] for row in listed if row[1] == "main" and row[2]]
            # The file SQLite opened (symlinks resolved): its -shm is beside it.
            self._watch = WalWatch.open(files[0] + "-shm") if files else None
            return self._watch

    def write_clock(self) -> int:
        """Moves with every generation bump (any tenant, any process); nothing else moves it."""
        return self._read(reads.write_clock)

    def close(self) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            watch, self._watch = self._watch, None
        if watch is not None:
            watch.release()  # before the connections close: SQLite may then delete the -shm
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

    def vector_seq_high(self) -> int:
        return self._read(reads.vector_seq_high)

    def change_seq_high(self) -> int:
        return self._read(reads.change_seq_high)

    def identity(self) -> str | None:
        return self._read(reads.identity)

    def changes_after(
        self, tenant: str, layer: str, after_seq: int
    ) -> list[tuple[int, int, str | None]]:
        return self._read(reads.changes_after, tenant, layer, after_seq)

    def deleted_after(self, tenant: str, layer: str, after_seq: int) -> list[tuple[int, int]]:
        return self._read(reads.deleted_after, tenant, layer, after_seq)

    def large_scopes(self, at_least: int) -> list[tuple[str, str, int]]:
        return self._read(reads.large_scopes, at_least)

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
