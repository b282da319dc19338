"""Concurrent writers, in threads and in processes, never duplicate or corrupt."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
import threading
from pathlib import Path

from athena import Memory
from athena.embedding import Embedder

WRITERS = 4
PER_WRITER = 40


def _write_process(path: str, worker: int) -> None:
    with Memory(path) as mem:
        for i in range(PER_WRITER):
            # Every worker writes the same shared keys too: upserts must not duplicate.
            mem.remember(f"worker {worker} note {i}", tenant="t", key=f"w{worker}-{i}")
            mem.remember(f"shared {i} by {worker}", tenant="t", key=f"shared-{i}")
            if i % 10 == 0:
                mem.recall("note", tenant="t", k=5)


def _check(path: Path) -> None:
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.execute("INSERT INTO memories_fts(memories_fts) VALUES ('integrity-check')")
    total = conn.execute("SELECT count(*) FROM memories").fetchone()[0]
    distinct = conn.execute("SELECT count(DISTINCT key) FROM memories").fetchone()[0]
    vectors = conn.execute("SELECT count(*) FROM vectors").fetchone()[0]
    assert total == distinct == WRITERS * PER_WRITER + PER_WRITER
    assert vectors == total
    conn.close()


def test_threads_write_and_read_at_once(tmp_path: Path, embedder: Embedder) -> None:
    path = tmp_path / "threads.db"
    with Memory(path, embedder=embedder) as mem:
        mem.remember("seed", tenant="t", key="seed")
        errors: list[BaseException] = []

        def work(worker: int) -> None:
            try:
                for i in range(PER_WRITER):
                    mem.remember(f"worker {worker} note {i}", tenant="t", key=f"w{worker}-{i}")
                    mem.remember(f"shared {i} by {worker}", tenant="t", key=f"shared-{i}")
                    mem.recall("note", tenant="t", k=5)
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(w,)) for w in range(WRITERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        mem.forget(mem.recall("seed", tenant="t", k=1).hits[0].id, tenant="t")
    _check(path)


def test_processes_write_and_read_at_once(tmp_path: Path) -> None:
    path = tmp_path / "procs.db"
    Memory(path).close()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_write_process, args=(str(path), w)) for w in range(WRITERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    _check(path)
