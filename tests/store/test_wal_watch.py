"""The WAL-index header watch: it moves with every commit, from any process, and only then;
and it never costs SQLite the locks that keep the -shm alive."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from athena.store import wal_watch
from athena.store.sqlite import SQLiteStore
from athena.store.wal_watch import WalWatch

COMMIT = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1])
conn.execute("INSERT INTO t VALUES (2)")
conn.commit()
conn.close()
"""

# Ask, from another process, whether anybody holds SQLite's "DMS" lock on the -shm (byte
# 128 in SQLite's unix VFS): while a connection has the index open, somebody must, or the
# next connection to open the file re-initialises the index under everyone's mappings.
DMS_LOCKED = """
import fcntl, os, struct, sys
fd = os.open(sys.argv[1], os.O_RDWR)
probe = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, 128, 1, 0)
kind = struct.unpack("hhqqi4x", fcntl.fcntl(fd, fcntl.F_GETLK, probe))[0]
print("locked" if kind != fcntl.F_UNLCK else "free")
"""


def wal_db(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    return conn


def dms(path: Path) -> str:
    shm = os.path.realpath(path) + "-shm"
    done = subprocess.run(
        [sys.executable, "-c", DMS_LOCKED, shm], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_header_moves_with_another_process_commit_and_not_with_reads(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    conn = wal_db(path)
    try:
        watch = WalWatch.open(f"{path}-shm")
        assert watch is not None
        before = watch.header()
        for _ in range(3):
            conn.execute("SELECT count(*) FROM t").fetchone()
        assert watch.header() == before  # reading commits nothing
        subprocess.run([sys.executable, "-c", COMMIT, str(path)], check=True, timeout=60)
        after = watch.header()
        assert after != before
        conn.execute("INSERT INTO t VALUES (3)")
        conn.commit()
        assert watch.header() != after
        watch.release()
        assert watch.header() is None  # a released watch reads nothing
    finally:
        conn.close()


def test_no_wal_index_means_no_watch(tmp_path: Path) -> None:
    path = tmp_path / "plain.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    try:
        assert WalWatch.open(f"{path}-shm") is None  # rollback journal: no -shm at all
    finally:
        conn.close()


def test_a_closed_store_reads_no_header(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    assert store.wal_header() is not None
    store.close()
    assert store.wal_header() is None


def test_watching_and_closing_stores_keeps_sqlites_lock(tmp_path: Path) -> None:
    """The bug that removed the first watch: closing its descriptor dropped the process's
    locks on the -shm, SQLite's DMS lock included, and a writer in another process then died
    of SIGBUS. Descriptors now stay open, so a second store's close takes nothing away."""
    path = tmp_path / "l.db"
    first = SQLiteStore(path)
    try:
        assert first.wal_header() is not None
        assert dms(path) == "locked"
        second = SQLiteStore(path)
        assert second.wal_header() is not None
        second.close()
        assert dms(path) == "locked"  # the first store's connection still holds it
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import sqlite3, sys; sqlite3.connect(sys.argv[1]).close()",
                str(path),
            ],
            check=True,
            timeout=60,
        )
        assert first.wal_header() is not None
        assert dms(path) == "locked"
    finally:
        first.close()


def test_a_symlinked_database_is_watched_where_sqlite_keeps_its_index(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    wal_db(tmp_path / "real" / "d.db").close()
    (tmp_path / "link.db").symlink_to(tmp_path / "real" / "d.db")
    stale = tmp_path / "link.db-shm"  # a leftover beside the link must not be what is read
    stale.write_bytes(b"\1" * 32768)
    store = SQLiteStore(tmp_path / "link.db")
    try:
        before = store.wal_header()
        assert before is not None
        subprocess.run(
            [sys.executable, "-c", COMMIT, str(tmp_path / "link.db")], check=True, timeout=60
        )
        assert store.wal_header() != before
    finally:
        store.close()


@pytest.mark.parametrize("name", ["x%41.db", "a #1?.db"])
def test_a_name_sqlite_would_read_as_a_uri_is_the_file_opened_and_watched(
    tmp_path: Path, name: str
) -> None:
    """``x%41.db`` once opened ``xA.db`` (the path went into a file: URI unescaped), and a
    leftover ``x%41.db-shm`` would then have been watched instead of ``xA.db``'s."""
    (tmp_path / f"{name}-shm").write_bytes(b"\1" * 32768)  # a leftover under the given name
    store = SQLiteStore(tmp_path / name)
    try:
        assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".db") == [name]
        before = store.wal_header()
        assert before is not None
        subprocess.run([sys.executable, "-c", COMMIT.replace("INSERT INTO t VALUES (2)",
                        "CREATE TABLE IF NOT EXISTS u (x)"), str(tmp_path / name)],
                       check=True, timeout=60)  # fmt: skip
        assert store.wal_header() != before
    finally:
        store.close()


def test_an_entry_in_use_is_never_released(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the limit only unused entries of deleted files go: an open store whose -shm was
    deleted under it (a cleaned directory) keeps its mapping, and SQLite its locks."""
    live = SQLiteStore(tmp_path / "live.db")
    try:
        assert live.wal_header() is not None
        (tmp_path / "live.db-shm").unlink()
        monkeypatch.setattr(wal_watch, "LIMIT", wal_watch.watched())
        other = SQLiteStore(tmp_path / "other.db")
        try:
            other.wal_header()  # at the limit: releases what it may
            assert live.wal_header() is not None  # still mapped: no ValueError, no None
        finally:
            other.close()
    finally:
        live.close()


def test_past_the_limit_deleted_files_are_released_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = SQLiteStore(tmp_path / "old.db")
    assert old.wal_header() is not None
    old.save_state("note", "a write: the writer connection closes last, and deletes")
    old.close()  # the last connection: SQLite deletes the -shm
    assert not (tmp_path / "old.db-shm").exists()
    monkeypatch.setattr(wal_watch, "LIMIT", wal_watch.watched())
    new = SQLiteStore(tmp_path / "new.db")
    try:
        assert new.wal_header() is not None  # old.db's entry made room
        assert wal_watch.watched() <= wal_watch.LIMIT
    finally:
        new.close()


def test_past_the_limit_a_store_asks_sqlite_every_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wal_watch, "LIMIT", 0)
    store = SQLiteStore(tmp_path / "full.db")
    try:
        assert store.wal_header() is None
        store.data_version()  # still answers
    finally:
        store.close()
