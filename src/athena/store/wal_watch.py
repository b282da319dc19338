"""A syscall-free "has anyone committed?" check: the WAL-index header, read through mmap.

In WAL mode every SQLite connection to a file shares its wal-index, the ``<db>-shm`` file,
and every commit, from any process, rewrites the index's header before it releases the
write lock (https://www.sqlite.org/walformat.html, "The WAL-Index Header"): it holds the
change counter, the last valid frame, the WAL salts and a checksum over them, so no commit
leaves it as it was. ``PRAGMA data_version`` answers the same question, but it opens a read
transaction, and with it takes and releases file locks: four system calls and a release of
the GIL on every recall, cached ones included. On this project's 2-core VM that is 4 µs in
a tight loop and 25-90 µs when the hit comes after other work (docs/bench/analysis.md).

So the header is only a gate: while it reads as it did when a thread last asked SQLite, no
one has committed since, and the tracker need not ask again; any other reading (a commit,
or a read torn by a commit in progress) sends it to ``PRAGMA data_version`` as before.

**Descriptors are never closed.** POSIX record locks belong to the process and the file,
not to a descriptor: closing *any* descriptor of a file drops every lock the process holds
on it, SQLite's own included (its shared lock on the -shm's "DMS" byte tells a newcomer the
index is live; without it the next process to open the file re-initialises and truncates
it, and a mapping then faults with SIGBUS). So the -shm is opened once per file and process,
and its descriptor and mapping (CPython's mmap keeps a duplicate descriptor) stay open for
the life of the process, shared by every store on that file. Only an entry that no open
store uses and whose file has been deleted is ever released: SQLite deletes the -shm when
the last connection of all closes, and nobody can hold a lock on a deleted file. At most
:data:`LIMIT` files are watched at once; past that a store asks SQLite every time.

A mapping is read only while its store is open (the store holds a connection that has
mapped the -shm, so SQLite keeps its lock and nobody truncates the file). Where there is no
-shm to map (an ``immutable`` read-only file, a platform without ``mmap.MAP_SHARED``) there
is no watch, and the tracker asks SQLite every time.
"""

from __future__ import annotations

import mmap
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from athena.store.connection import translated

if TYPE_CHECKING:
    from athena.store.connection import Readers

HEADER_BYTES: Final = 96  # both copies of WalIndexHdr; the checkpoint info after them is not read
LIMIT: Final = 64

_lock = threading.Lock()
# (st_dev, st_ino) -> [descriptor, mapping, watches not yet released]
_watched: dict[tuple[int, int], list[Any]] = {}
_kept: list[int] = []  # a second descriptor of a watched file, opened in a race: never closed
_RELEASED: Final[list[Any]] = [-1, None, 0]  # what a released watch holds: it reads None


class WalWatch:
    """The wal-index header of a WAL database, mapped read-only.

    >>> import sqlite3, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "w.db")
    >>> conn = sqlite3.connect(path); conn.execute("PRAGMA journal_mode=WAL").fetchall()
    [('wal',)]
    >>> _ = conn.execute("CREATE TABLE t (x)"); conn.commit()
    >>> watch = WalWatch.open(path + "-shm")
    >>> before = watch.header()
    >>> _ = conn.execute("INSERT INTO t VALUES (1)"); conn.commit()
    >>> watch.header() != before
    True
    >>> watch.release(); conn.close()
    """

    __slots__ = ("_entry",)

    def __init__(self, entry: list[Any]) -> None:
        self._entry = entry

    @classmethod
    def open(cls, shm: str | Path) -> WalWatch | None:
        """Watch the -shm file ``shm`` (the name SQLite uses: its database file's, from
        ``PRAGMA database_list``, plus ``-shm``); None if there is no usable one. Call it
        only while a connection of this process has the database open and has read from it
        (so SQLite has mapped and locked the -shm), and :meth:`release` it before that
        connection closes."""
        if not hasattr(mmap, "MAP_SHARED") or not hasattr(mmap, "PROT_READ"):
            return None
        try:
            stat = os.stat(shm)
        except OSError:
            return None
        if stat.st_size < mmap.PAGESIZE:  # not initialised by a connection
            return None
        with _lock:
            entry = _watched.get((stat.st_dev, stat.st_ino))
            if entry is None:
                entry = _watch(os.fspath(shm))
            if entry is None or entry[1][:HEADER_BYTES] == bytes(HEADER_BYTES):
                return None  # never written: not a live wal-index
            entry[2] += 1
        return cls(entry)

    def header(self) -> bytes | None:
        """The header as it reads now (96 bytes), different after every commit; None if it
        cannot be read (ask SQLite)."""
        try:
            return self._entry[1][:HEADER_BYTES]  # type: ignore[no-any-return]
        except (TypeError, ValueError):  # released, or unmapped: never expected while open
            return None

    def release(self) -> None:
        """This watch is done (its store is closing): the entry may be released once its
        file is deleted and no other watch uses it. Idempotent per watch."""
        with _lock:
            if self._entry[2] > 0:
                self._entry[2] -= 1
            self._entry = _RELEASED


class WalGate:
    """One store's watch on its file's WAL-index header: opened on first use, read only
    while the store is open (the mapping is safe only then), released when it closes.

    >>> import tempfile, os
    >>> from athena.store.sqlite import SQLiteStore
    >>> store = SQLiteStore(os.path.join(tempfile.mkdtemp(), "g.db"))
    >>> gate = WalGate(store._readers)
    >>> len(gate.header() or bytes(HEADER_BYTES))
    96
    >>> gate.close(), gate.close(), gate.header()
    (True, False, None)
    >>> store.close()
    """

    def __init__(self, readers: Readers) -> None:
        self._readers = readers
        self._lock = threading.Lock()
        self._closed = False
        self._watch: WalWatch | None = None
        self._tried = False

    def header(self) -> bytes | None:
        """The header now; None when there is no watch (ask SQLite) or the gate is closed."""
        watch = self._watch if self._tried else self._open()
        if watch is None:
            return None
        with self._lock:  # never read once closed: the mapping is safe only while open
            return None if self._closed else watch.header()

    def close(self) -> bool:
        """Release the watch; True the first time (the store should close its connections
        after this: SQLite may then delete the -shm), False once closed."""
        with self._lock:
            if self._closed:
                return False
            self._closed = True
            watch, self._watch = self._watch, None
        if watch is not None:
            watch.release()
        return True

    def _open(self) -> WalWatch | None:
        with self._lock:
            if self._closed or self._tried:
                return self._watch
            self._tried = True
            if self._readers.immutable:
                return None
            conn = self._readers.get()
            with translated():  # this thread's reader now holds the file and its -shm
                conn.execute("PRAGMA data_version").fetchone()
            listed = conn.execute("PRAGMA database_list").fetchall()
            files = [row[2] for row in listed if row[1] == "main" and row[2]]
            # The file SQLite opened (symlinks resolved): its -shm is beside it.
            self._watch = WalWatch.open(files[0] + "-shm") if files else None
            return self._watch


def _watch(shm: str) -> list[Any] | None:
    """Open and map ``shm`` (under ``_lock``); None when full or it cannot be mapped."""
    if len(_watched) >= LIMIT:
        _release_deleted()
        if len(_watched) >= LIMIT:
            return None
    try:
        fd = os.open(shm, os.O_RDONLY)
    except OSError:
        return None
    try:
        stat = os.fstat(fd)
        key = (stat.st_dev, stat.st_ino)
        if key in _watched:  # replaced between stat() and open(): this inode is watched
            _kept.append(fd)
            return _watched[key]
        if stat.st_size < mmap.PAGESIZE:
            raise ValueError("the -shm is not initialised")
        mapped = mmap.mmap(fd, mmap.PAGESIZE, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
    except (OSError, ValueError):
        _kept.append(fd)  # closing it could drop SQLite's locks on this file
        return None
    _watched[key] = [fd, mapped, 0]
    return _watched[key]


def _release_deleted() -> None:
    """Close the entries no open store uses whose -shm was deleted (nobody can lock a
    deleted file, and SQLite deletes it only when the last connection of all closes)."""
    for key, (fd, mapped, users) in list(_watched.items()):
        try:
            deleted = os.fstat(fd).st_nlink == 0
        except OSError:
            deleted = False
        if deleted and users == 0:
            del _watched[key]
            mapped.close()
            os.close(fd)


def watched() -> int:
    """How many -shm files this process watches (for tests and stats).

    >>> watched() >= 0
    True
    """
    return len(_watched)
