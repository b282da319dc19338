"""SQLite connections: per-thread readers and one write connection.

Reads run on a connection owned by the calling thread, so readers never wait on each other
and WAL lets them run beside the writer. Writes take turns on the one write connection
(a lock; each on its caller's thread), each wrapped in ``BEGIN IMMEDIATE``: taking the
write lock up front means a transaction never has to be retried half-way, and writers in
other processes wait on ``busy_timeout`` instead of failing.

A database that cannot be written (a read-only file system, a file or directory without
write permission) can still be read: :func:`unwritable` says why it cannot be written, and
:func:`needs_immutable` whether readers must open it ``immutable`` (WAL mode on read-only
media, with no -shm file to share, can be read no other way).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from athena.errors import (
    StoreCorrupt,
    StoreError,
    StoreFull,
    StoreLocked,
    StoreReadOnly,
)
from athena.store.turns import QuietTimer, TurnLock, guarded

T = TypeVar("T")
BUSY_TIMEOUT_MS = 10_000


def translate(exc: sqlite3.Error) -> StoreError:
    """Map a sqlite3 error to Athena's store errors (the one place this happens).

    >>> type(translate(sqlite3.OperationalError("database is locked"))).__name__
    'StoreLocked'
    """
    message = str(exc)
    lowered = message.lower()
    if "locked" in lowered or "busy" in lowered:
        return StoreLocked(f"the database is locked by another process: {message}")
    if "readonly" in lowered or "read-only" in lowered:
        return StoreReadOnly(f"the database is read-only: {message}")
    if "full" in lowered:
        return StoreFull(f"the disk is full: {message}")
    if "malformed" in lowered or "not a database" in lowered or "corrupt" in lowered:
        return StoreCorrupt(f"the database file is damaged: {message}")
    return StoreError(f"storage failed: {message}")


@contextmanager
def translated() -> Iterator[None]:
    """Re-raise sqlite3 errors as :class:`StoreError` subclasses."""
    try:
        yield
    except sqlite3.Error as exc:
        raise translate(exc) from exc


CACHE_PRAGMA = "PRAGMA cache_size = -16384"  # 16 MiB per connection
# The writer maps the file; readers do not. When another connection commits, a WAL reader
# drops its page cache and, if it maps the file, unmaps it all and faults every page in
# again: a recall right after a write took 8-10% longer with mapped readers (LoCoMo, about
# 0.13 ms; 100k memories in one tenant, about 0.31 ms), cold recalls with no write the same
# (benchmarks/reader_mmap.py).
WRITER_MMAP_PRAGMA = "PRAGMA mmap_size = 268435456"


def file_uri(path: Path | str) -> str:
    """A ``file:`` URI naming exactly ``path``: ``%``, ``?`` and ``#`` (and anything not
    plain) percent-escaped, so SQLite opens that file and not another (``x%41.db`` once
    opened ``xA.db``).

    >>> file_uri("/tmp/x%41 #1?.db")
    'file:/tmp/x%2541%20%231%3F.db'
    """
    return "file:" + urllib.parse.quote(str(path), safe="/")


def open_connection(
    path: Path | str, *, readonly: bool = False, immutable: bool = False
) -> sqlite3.Connection:
    """Open a tuned connection; readers open with ``mode=ro`` so they can never write, and
    read through the page cache alone (no memory map: see :data:`WRITER_MMAP_PRAGMA`).

    ``immutable`` (readers only) tells SQLite the file cannot change: no locks, no -shm.
    Only for a file on read-only media (see :func:`needs_immutable`).
    """
    target = str(path)
    with translated():
        if target == ":memory:":
            raise StoreError("SQLiteStore needs a file path (readers and writer share it)")
        uri = file_uri(target)
        if readonly:
            uri += "?mode=ro&immutable=1" if immutable else "?mode=ro"
        conn = sqlite3.connect(
            uri, uri=True, isolation_level=None, check_same_thread=False, timeout=30
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA temp_store = MEMORY")
            conn.execute(CACHE_PRAGMA)
            conn.execute("PRAGMA mmap_size = 0" if readonly else WRITER_MMAP_PRAGMA)
        except BaseException:
            conn.close()
            raise
    return conn


def read_only_media(path: Path) -> bool:
    """True when the file system holding ``path`` is mounted read-only."""
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # no statvfs (Windows), or no such file
        return False


def unwritable(path: Path) -> str | None:
    """Why the database file at ``path`` cannot be written; None when the OS would allow it.

    WAL mode writes the file, its -wal and its -shm (created next to it when missing).
    """
    if read_only_media(path):
        return "its file system is mounted read-only"
    if not os.access(path, os.W_OK):
        return "the file is not writable"
    for suffix in ("-wal", "-shm"):
        side = Path(f"{path}{suffix}")
        # Asked first, then whether it exists: another process's last connection may delete
        # it between the two (a file gone is one SQLite creates, not one it cannot write),
        # and another's first connection may create it (so asked again once seen).
        if os.access(side, os.W_OK):
            continue
        if side.exists():
            if os.access(side, os.W_OK):
                continue
            return f"{side.name} is not writable"
        if not os.access(path.parent, os.W_OK):
            return f"its directory is not writable (SQLite must create {side.name})"
    return None


def needs_immutable(path: Path) -> bool:
    """Whether readers of ``path`` (a WAL database) must open it with ``immutable=1``.

    Only on read-only media, and only when a plain ``mode=ro`` connection cannot read it:
    that needs a -shm file, which nobody can create there. An immutable connection ignores
    the -wal, so a non-empty -wal without its -shm is refused rather than read stale.
    """
    if not read_only_media(path):
        return False
    try:
        conn = open_connection(path, readonly=True)
        try:
            with translated():
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            conn.close()
    except StoreError:
        pass
    else:
        return False
    wal = Path(f"{path}-wal")
    if wal.exists() and wal.stat().st_size > 0:
        raise StoreReadOnly(
            f"{path} is on a read-only file system with a write-ahead log but no -shm file: "
            "it cannot be read safely; mount it read-write once to recover the log"
        )
    return True


class Writer:
    """The one write connection: each transaction runs on the caller's thread, one at a
    time (a lock), inside ``BEGIN IMMEDIATE``.

    Writers take turns in the order they came (:class:`~athena.store.turns.TurnLock`).
    After a commit that changed memories it calls ``on_commit(touched)`` before the write
    returns, and once no such commit has come for :data:`~athena.store.turns.QUIET_S`,
    ``on_quiet()`` on a timer thread (:class:`~athena.store.turns.QuietTimer`). Until stop
    35 every write hopped to a writer thread and back: an empty transaction took 97-99 µs
    so, against 20 on the caller's thread.

    >>> import tempfile, os
    >>> writer = Writer(Path(tempfile.mkdtemp()) / "w.db", lambda touched: None)
    >>> writer.run(lambda conn, touched: conn.execute("SELECT 1").fetchone()[0])
    1
    >>> writer.close()
    """

    def __init__(
        self,
        path: Path,
        on_commit: Callable[[set[tuple[str, str]]], None],
        on_quiet: Callable[[], None] = lambda: None,
    ) -> None:
        self._path = path
        self._on_commit = on_commit
        self._quiet = QuietTimer(on_quiet)
        self._lock = TurnLock()  # writers take turns in the order they came
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    def run(self, fn: Callable[[sqlite3.Connection, set[tuple[str, str]]], T]) -> T:
        """Run ``fn(conn, touched)`` in one transaction, after any write under way.

        ``fn`` adds the (tenant, layer) scopes it changed to ``touched``; listeners hear of
        them only after the commit succeeded. A failure rolls everything back; SQLite's
        errors are raised as :class:`StoreError` subclasses.
        """
        with self._lock:
            if self._closed:
                raise StoreError("the store is closed")
            if self._conn is None:
                self._conn = open_connection(self._path)
            conn = self._conn
            if conn.in_transaction:  # a ROLLBACK that failed: end it, or no write can start
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            touched: set[tuple[str, str]] = set()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = fn(conn, touched)
                    if conn.in_transaction:  # an error SQLite rolled back itself is fn's
                        conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise translate(exc) from exc
            if touched:
                guarded(self._on_commit, touched)
                self._quiet.arm()
        return result

    def refuse_inside_a_write(self) -> None:
        """Raise :class:`StoreError` if the calling thread is inside a write (closing then
        would wait for ever on its own turn)."""
        if self._lock.mine():
            raise StoreError("the store cannot close inside a write (a store listener's?)")

    def close(self) -> None:
        """Let the write under way finish, then fold the WAL back into the file (so a
        closed store is one file again, as far as readers still open allow). Idempotent.
        Not from inside a write (a commit listener): that raises :class:`StoreError`."""
        self.refuse_inside_a_write()
        self._quiet.close()
        with self._lock:
            self._closed = True
            conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.close()


class Readers:
    """Per-thread read-only connections to one database file."""

    def __init__(self, path: Path, *, immutable: bool = False) -> None:
        self._path = path
        self.immutable = immutable
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def get(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = open_connection(self._path, readonly=True, immutable=self.immutable)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()
