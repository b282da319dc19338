"""A syscall-free "has anyone committed?" check: the WAL-index header, read through mmap.

In WAL mode every SQLite connection to a file shares its wal-index, the ``<db>-shm`` file,
and every commit, from any process, rewrites the index's header before it releases the
write lock (https://www.sqlite.org/walformat.html, "The WAL-Index Header"): its first 48
bytes hold the change counter, the last valid frame, the WAL salts and a checksum over
them, so no commit leaves them as they were. ``PRAGMA data_version`` answers the same
question, but it opens a read transaction, and with it takes and releases shared-memory
locks (a few system calls, several µs on every recall, cached ones included).

So the header is only a gate: while it reads as it did when a thread last asked SQLite, no
one has committed since, and the tracker need not ask again; any other reading (a commit,
or a read torn by a commit in progress) sends it to ``PRAGMA data_version`` as before.

It is mapped only while this process holds the database open (a reader connection has
mapped the -shm before the watch opens, and the watch is closed before the connections
are): SQLite truncates the -shm only when the first connection of all opens the file, and
a truncated mapping would fault. Where there is no -shm to map (an ``immutable`` read-only
file, a platform without ``mmap.MAP_SHARED``) the watch is unavailable and the tracker
asks SQLite every time.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path
from typing import Final

HEADER_BYTES: Final = 48  # one copy of WalIndexHdr; the checkpoint info after it is not read


class WalWatch:
    """The first copy of a WAL database's wal-index header, mapped read-only.

    >>> import sqlite3, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "w.db")
    >>> conn = sqlite3.connect(path); _ = conn.execute("PRAGMA journal_mode=WAL")
    >>> _ = conn.execute("CREATE TABLE t (x)"); conn.commit()
    >>> watch = WalWatch.open(path)
    >>> before = watch.header()
    >>> _ = conn.execute("INSERT INTO t VALUES (1)"); conn.commit()
    >>> watch.header() != before
    True
    >>> watch.close(); conn.close()
    """

    __slots__ = ("_map",)

    def __init__(self, mapped: mmap.mmap) -> None:
        self._map = mapped

    @classmethod
    def open(cls, database: str | Path) -> WalWatch | None:
        """Map ``<database>-shm``'s header; None if there is no usable one."""
        if not hasattr(mmap, "MAP_SHARED") or not hasattr(mmap, "PROT_READ"):
            return None
        shm = f"{os.fspath(database)}-shm"
        try:
            fd = os.open(shm, os.O_RDONLY)
        except OSError:
            return None
        try:
            if os.fstat(fd).st_size < mmap.PAGESIZE:  # not initialised by a connection yet
                return None
            mapped = mmap.mmap(fd, mmap.PAGESIZE, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
        except (OSError, ValueError):
            return None
        finally:
            os.close(fd)  # the mapping keeps the file
        if mapped[:HEADER_BYTES] == bytes(HEADER_BYTES):  # never written: not a wal-index
            mapped.close()
            return None
        return cls(mapped)

    def header(self) -> bytes:
        """The header as it reads now (48 bytes); different after every commit."""
        return self._map[:HEADER_BYTES]

    def close(self) -> None:
        self._map.close()
