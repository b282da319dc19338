"""The read side of the SQLite store: per-thread readers, the commit checks, every query."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from athena.store import sql_reads as reads
from athena.store.connection import Readers, translate, translated
from athena.store.protocol import EntityChanges, EntityNames, MemoryRow, RowFilter, VectorBatch
from athena.store.wal_watch import WalGate

T = TypeVar("T")


class SQLiteReader:
    """Reads of one SQLite file, each on the calling thread's own read-only connection.

    :class:`~athena.store.sqlite.SQLiteStore` is one, with a writer beside it.

    >>> import tempfile, os
    >>> from athena.store.sqlite import SQLiteStore
    >>> store = SQLiteStore(os.path.join(tempfile.mkdtemp(), "r.db"))
    >>> store.tenants(), store.data_version() == store.data_version()
    ([], True)
    >>> store.close()
    """

    def __init__(self, path: Path, *, immutable: bool = False) -> None:
        self._readers = Readers(path, immutable=immutable)
        self._gate = WalGate(self._readers)

    def close(self) -> None:
        """Release the WAL watch, then close every thread's reader. Idempotent."""
        if self._gate.close():  # the watch first: SQLite may delete the -shm once closed
            self._readers.close()

    def _read(self, fn: Callable[..., T], *args: Any) -> T:
        with translated():
            return fn(self._readers.get(), *args)

    @property
    def immutable(self) -> bool:
        """Whether the readers open the file ``immutable``: nobody can write to it."""
        return self._readers.immutable

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
        return self._gate.header()

    def write_clock(self) -> int:
        """Moves with every generation bump (any tenant, any process); nothing else moves it."""
        return self._read(reads.write_clock)

    def get(self, tenant: str, ids: Sequence[int]) -> list[MemoryRow]:
        return self._read(reads.get, tenant, ids)

    def lexical(
        self, tenant: str, layer: str, match: str, limit: int, where: RowFilter
    ) -> list[tuple[int, float]]:
        return self._read(reads.lexical, tenant, layer, match, limit, where)

    def admitted(self, tenant: str, ids: Sequence[int], where: RowFilter) -> set[int]:
        return self._read(reads.admitted, tenant, ids, where)

    def vectors_after(
        self, tenant: str, layer: str, model: str, after_seq: int, limit: int | None = None
    ) -> VectorBatch:
        return self._read(reads.vectors_after, tenant, layer, model, after_seq, limit)

    def vector_seqs(self, ids: Sequence[int], model: str) -> dict[int, int]:
        return self._read(reads.vector_seqs, ids, model)

    def vector_seq_high(self) -> int:
        return self._read(reads.vector_seq_high)

    def change_seq_high(self) -> int:
        return self._read(reads.change_seq_high)

    def identity(self) -> str | None:
        return self._read(reads.identity)

    def scopes_changed_after(self, after_seq: int, limit: int) -> list[tuple[int, str, str]]:
        return self._read(reads.scopes_changed_after, after_seq, limit)

    def changes_after(
        self, tenant: str, layer: str, after_seq: int, limit: int | None = None
    ) -> list[tuple[int, int, str | None]]:
        return self._read(reads.changes_after, tenant, layer, after_seq, limit)

    def deleted_after(
        self, tenant: str, layer: str, after_seq: int, limit: int | None = None
    ) -> list[tuple[int, int]]:
        return self._read(reads.deleted_after, tenant, layer, after_seq, limit)

    def large_scopes(self, at_least: int) -> list[tuple[str, str, int]]:
        return self._read(reads.large_scopes, at_least)

    def generations(self, tenant: str) -> dict[str, int]:
        return self._read(reads.generations, tenant)

    def tasks(self, tenant: str, limit: int, where: RowFilter) -> list[MemoryRow]:
        return self._read(reads.tasks, tenant, limit, where)

    def entities(
        self, tenant: str, norms: Sequence[str], cap: int | None = None
    ) -> dict[str, tuple[int, int]]:
        return self._read(reads.entities, tenant, norms, cap)

    def neighbours(self, tenant: str, entity_ids: Sequence[int], limit: int) -> list[int]:
        return self._read(reads.neighbours, tenant, entity_ids, limit)

    def mentioning(
        self, tenant: str, entity_ids: Sequence[int], limit: int
    ) -> list[tuple[int, int]]:
        return self._read(reads.mentioning, tenant, entity_ids, limit)

    def memory_count(self, tenant: str) -> int:
        return self._read(reads.memory_count, tenant)

    def entity_names(self, tenant: str) -> EntityNames:
        return self._read(reads.entity_names, tenant)

    def entity_changes(self, tenant: str, after: int, since: int) -> EntityChanges:
        return self._read(reads.entity_changes, tenant, after, since)

    def stats(self, tenant: str | None) -> dict[str, Any]:
        return self._read(reads.stats, tenant)

    def tenants(self) -> list[str]:
        return self._read(reads.tenants)

    def missing_vectors(self, model: str, limit: int) -> list[MemoryRow]:
        return self._read(reads.missing_vectors, model, limit)

    def count_missing_vectors(self, model: str) -> int:
        return self._read(reads.count_missing_vectors, model)

    def load_state(self, name: str) -> str | None:
        return self._read(reads.load_state, name)

    def read_telemetry(self, limit: int) -> list[str]:
        return self._read(reads.read_telemetry, limit)
