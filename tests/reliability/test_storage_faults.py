"""Storage faults: a full disk, a read-only file system, a database locked by another process.

Each fault must surface as its typed error (StoreFull, StoreReadOnly, StoreLocked), leave
the file sound (``PRAGMA integrity_check``, FTS5 ``integrity-check``, no orphans) with the
earlier data intact, and the store must work again once the fault is gone.

- Full disk, two ways: a real tmpfs of a few MiB filled to the last byte (needs root and
  permission to mount; skipped otherwise), and SQLite's ``PRAGMA max_page_count`` set on
  the store's writer connection (runs everywhere).
- Read-only: the tmpfs remounted read-only under a closed store (root can write through
  ``chmod 0444``, so the mode bits prove nothing when the suite runs as root; when it does
  not run as root the test uses ``chmod 0444`` on the file and its -wal/-shm instead).
- Locked: a subprocess holds ``BEGIN EXCLUSIVE``; the store's busy timeout is 10 s
  (``BUSY_TIMEOUT_MS``, not configurable), so that test waits about 10 s. The Python API,
  the CLI and the HTTP API are hit during the same lock window.
"""

from __future__ import annotations

import os
import random
import string
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from reliability_support import assert_sound, remount, serving, tmpfs

from athena import Memory, MemoryInput
from athena.embedding import Embedder
from athena.errors import AthenaError, StoreFull, StoreLocked, StoreReadOnly
from athena.interfaces.http import create_app

ATHENA = [sys.executable, "-c", "from athena.interfaces.cli import main; main()"]


def _seed(memory: Memory, n: int = 20) -> dict[int, str]:
    texts = {}
    for i in range(n):
        text = f"seed memory {i}: Alice moved to Lisbon, marker{i}q"
        texts[memory.remember(text, tenant="t", layer=("episodic", "semantic")[i % 2])] = text
    return texts


def _intact(memory: Memory, texts: dict[int, str]) -> None:
    for memory_id, text in texts.items():
        assert memory.get(memory_id, tenant="t")["text"] == text
    hits = memory.recall("Alice Lisbon marker7q", tenant="t", k=3).hits
    assert texts[min(texts) + 7] in {hit.text for hit in hits}


def _noise(rng: random.Random, words: int) -> str:
    return " ".join("".join(rng.choices(string.ascii_lowercase, k=8)) for _ in range(words))


# -- full disk ------------------------------------------------------------------------------


def test_full_tmpfs_gives_store_full_and_recovers(tmp_path: Path, embedder: Embedder) -> None:
    with tmpfs(tmp_path / "fs", "3m") as fs:
        ballast = fs / "ballast"
        ballast.write_bytes(b"\0" * 512 * 1024)  # removed later: the "disk" gets space back
        db = fs / "athena.db"
        memory = Memory(db, embedder=embedder, execution="sequential")
        try:
            texts = _seed(memory)
            rng = random.Random(7)
            with pytest.raises(StoreFull, match="full"):
                for _ in range(500):
                    text = _noise(rng, 2_000)
                    texts[memory.remember(text, tenant="t")] = text  # acked: must survive
            _intact(memory, texts)
            ballast.unlink()
            text = _noise(rng, 2_000)
            texts[memory.remember(text, tenant="t")] = text  # works again with space back
            _intact(memory, texts)
        finally:
            memory.close()
        assert_sound(db)
        with Memory(db, embedder=embedder, execution="sequential") as again:
            _intact(again, texts)


def _max_pages(memory: Memory, pages: int) -> Any:
    # max_page_count is per connection: set it on the store's one writer connection.
    writer = memory.store._writer
    return writer.run(lambda conn, touched: conn.execute(f"PRAGMA max_page_count = {pages}"))


def test_max_page_count_gives_store_full_and_recovers(tmp_path: Path, embedder: Embedder) -> None:
    db = tmp_path / "athena.db"
    with Memory(db, embedder=embedder, execution="sequential") as memory:
        texts = _seed(memory)
        pages = memory.store._writer.run(
            lambda conn, touched: int(conn.execute("PRAGMA page_count").fetchone()[0])
        )
        _max_pages(memory, pages + 8)
        rng = random.Random(3)
        with pytest.raises(StoreFull):
            for _ in range(200):
                text = _noise(rng, 500)
                texts[memory.remember(text, tenant="t")] = text
        batch = [MemoryInput("semantic", f"batch {i} {_noise(rng, 400)}", "t") for i in range(4)]
        with pytest.raises(StoreFull):  # a batch that overflows writes none of its items
            memory.remember_many(batch)
        assert memory.stats("t")["layers"].get("semantic", 0) == 10  # the seeded ones only
        _intact(memory, texts)
        _max_pages(memory, 1_073_741_823)
        texts[memory.remember("room again", tenant="t")] = "room again"
        _intact(memory, texts)
    assert_sound(db)


# -- read-only --------------------------------------------------------------------------------


def _read_only_checks(db: Path, embedder: Embedder, texts: dict[int, str]) -> None:
    with Memory(db, embedder=embedder, execution="sequential") as memory:
        _intact(memory, texts)  # reads still work
        with pytest.raises(StoreReadOnly, match="read-only"):
            memory.remember("cannot be written", tenant="t")
        first = min(texts)
        with pytest.raises(StoreReadOnly):
            memory.update(first, tenant="t", text="nor this")
        with pytest.raises(StoreReadOnly):
            memory.forget(first, tenant="t")
        _intact(memory, texts)
    # The adaptive engine saves telemetry and learned state on close: a read-only store does
    # not keep them, so recalls and close() work there too.
    with Memory(db, embedder=embedder, pool="off") as memory:
        for _ in range(3):
            _intact(memory, texts)
    cli = subprocess.run(
        [*ATHENA, "--db", str(db), "remember", "nope", "-t", "t"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert cli.returncode == 5 and cli.stderr.startswith("error: the database is read-only")


def test_read_only_file_system(tmp_path: Path, embedder: Embedder) -> None:
    with tmpfs(tmp_path / "fs", "8m") as fs:
        db = fs / "athena.db"
        with Memory(db, embedder=embedder, execution="sequential") as memory:
            texts = _seed(memory)
        remount(fs, "ro")
        try:
            _read_only_checks(db, embedder, texts)
        finally:
            remount(fs, "rw")
        assert_sound(db)
        with Memory(db, embedder=embedder, execution="sequential") as memory:
            texts[memory.remember("writable again", tenant="t")] = "writable again"
            _intact(memory, texts)
        assert_sound(db)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through mode bits: see the tmpfs test")
def test_chmod_read_only_files(tmp_path: Path, embedder: Embedder) -> None:
    db = tmp_path / "athena.db"
    with Memory(db, embedder=embedder, execution="sequential") as memory:
        texts = _seed(memory)
    files = [p for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")) if p.exists()]
    for path in files:
        path.chmod(0o444)
    try:
        _read_only_checks(db, embedder, texts)
    finally:
        for path in files:
            path.chmod(0o644)
    assert_sound(db)


# -- locked by another process ------------------------------------------------------------------

HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
conn.execute("INSERT INTO learned_state (name, value, updated_at) VALUES ('lock', 'x', 0)")
print("locked", flush=True)
sys.stdin.read()  # hold the lock until the test closes our stdin
conn.execute("ROLLBACK")
"""


@pytest.mark.slow
def test_locked_database_gives_store_locked_everywhere(tmp_path: Path, embedder: Embedder) -> None:
    """~10 s: the busy timeout. API, CLI and HTTP all wait it out during one lock."""
    db = tmp_path / "athena.db"
    memory = Memory(db, embedder=embedder, execution="sequential")
    served = Memory(db, embedder=embedder, execution="sequential")  # opened before the lock
    try:
        texts = _seed(memory)
        with serving(create_app(served)) as client:
            holder = subprocess.Popen(
                [sys.executable, "-c", HOLDER, str(db)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert holder.stdout is not None and holder.stdin is not None
            assert holder.stdout.readline().strip() == "locked"
            outcome: dict[str, Any] = {}

            def api() -> None:
                try:
                    memory.remember("while locked", tenant="t")
                    outcome["api"] = "written"
                except AthenaError as exc:
                    outcome["api"] = exc

            def http() -> None:
                outcome["http"] = client.post("/v1/tenants/t/memories", json={"text": "locked"})

            def cli() -> None:
                outcome["cli"] = subprocess.run(
                    [*ATHENA, "--db", str(db), "remember", "while locked", "-t", "t"],
                    capture_output=True,
                    text=True,
                    timeout=120,
                    check=False,
                )

            began = time.monotonic()
            threads = [threading.Thread(target=f) for f in (api, http, cli)]
            for thread in threads:
                thread.start()
            time.sleep(1.0)
            _intact(memory, texts)  # WAL: reads go on while another process holds the lock
            for thread in threads:
                thread.join(timeout=120)
            waited = time.monotonic() - began
            holder.stdin.close()
            holder.wait(timeout=30)

            assert isinstance(outcome["api"], StoreLocked), outcome["api"]
            response: httpx.Response = outcome["http"]
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "store_locked"
            assert response.headers["retry-after"] == "1"
            cli_run: subprocess.CompletedProcess[str] = outcome["cli"]
            assert cli_run.returncode == 5, cli_run.stderr
            assert cli_run.stderr.startswith("error: the database is locked")
            assert "Traceback" not in cli_run.stderr
            assert waited >= 9.0  # it did wait for the busy timeout, not fail at once

            # The lock is gone: every face writes again.
            texts[memory.remember("after the lock", tenant="t")] = "after the lock"
            assert client.post("/v1/tenants/t/memories", json={"text": "x"}).status_code == 201
        _intact(memory, texts)
    finally:
        served.close()
        memory.close()
    assert_sound(db)
