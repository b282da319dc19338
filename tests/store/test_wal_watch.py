"""The WAL-index header watch: it moves with every commit, from any process, and only then."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from athena.store.sqlite import SQLiteStore
from athena.store.wal_watch import WalWatch

COMMIT = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1])
conn.execute("INSERT INTO t VALUES (2)")
conn.commit()
conn.close()
"""


def wal_db(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    return conn


def test_the_header_moves_with_another_process_commit_and_not_with_reads(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    conn = wal_db(path)
    watch = WalWatch.open(path)
    assert watch is not None
    try:
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
    finally:
        watch.close()
        conn.close()


def test_no_wal_index_means_no_watch(tmp_path: Path) -> None:
    path = tmp_path / "plain.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    try:
        assert WalWatch.open(path) is None  # rollback journal: no -shm at all
    finally:
        conn.close()


def test_the_store_unmaps_its_watch_when_it_closes(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    assert store.wal_header() is not None
    store.close()
    assert store.wal_header() is None


def test_a_read_racing_close_falls_back_instead_of_failing(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "r.db")
    assert store.wal_header() is not None
    watch = store._watch
    assert watch is not None
    watch.close()  # as close() does while another thread is between its two steps
    try:
        assert store.wal_header() is None
    finally:
        store.close()
