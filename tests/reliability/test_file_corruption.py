"""A damaged file: flipped bytes, a truncated file, a file that is not a database, a torn WAL.

Storage that lies (a bad sector, a copy cut short, a torn write under a power cut) is not a
crash Athena can recover from, but what SQLite detects must be *reported*, as
``StoreCorrupt`` (a typed ``AthenaError``; CLI exit 5, one line, no traceback) or a failed
integrity check, never as a stray ``sqlite3`` error or a crash; and a torn WAL must lose at
most the commits it tore, never leave half a record. (SQLite keeps no page checksums: a
flipped byte inside a stored text can read back as that altered text; only the integrity
check's structural tests see such damage.) Each test damages a real file made by a real
store.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from athena import Memory
from athena.errors import AthenaError, StoreCorrupt

ATHENA = [sys.executable, "-c", "from athena.interfaces.cli import main; main()"]
PAGE = 4096


def _store(path: Path, n: int = 400) -> dict[int, str]:
    texts = {}
    with Memory(path) as memory:
        for i in range(n):
            text = f"memory {i}: Alice moved to Lisbon and painted marker{i}q " + "x" * 200
            texts[memory.remember(text, tenant="t", layer=("episodic", "semantic")[i % 2])] = text
    return texts


def _use(path: Path, texts: dict[int, str]) -> list[str]:
    """Open the store and use every kind of read and a write; the errors seen, by type.

    Anything but an AthenaError escapes and fails the test."""
    seen: list[str] = []
    try:
        memory = Memory(path)
    except AthenaError as exc:
        return [type(exc).__name__]
    with memory:
        calls = (
            lambda: memory.recall("Alice Lisbon marker7q", tenant="t", k=5),
            lambda: [memory.get(i, tenant="t") for i in list(texts)[:50]],
            lambda: memory.remember("after the damage", tenant="t"),
            lambda: memory.store.integrity_check(),
        )
        for call in calls:
            try:
                result = call()
            except AthenaError as exc:
                seen.append(type(exc).__name__)
            else:
                if isinstance(result, str) and result != "ok":
                    seen.append("integrity: " + result.splitlines()[0])
    return seen


def test_flipped_bytes_in_the_pages_are_reported_as_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    texts = _store(path)
    data = bytearray(path.read_bytes())
    pages = len(data) // PAGE
    assert pages > 20
    for page in range(2, pages, 3):  # every third page past the schema page, mid-page
        start = page * PAGE + 1000
        data[start : start + 64] = bytes(b ^ 0xFF for b in data[start : start + 64])
    path.write_bytes(bytes(data))
    seen = _use(path, texts)
    assert seen, "damage on a third of the pages went unnoticed"
    assert all(s == "StoreCorrupt" or s.startswith("integrity: ") for s in seen), seen


def test_a_truncated_file_is_reported_as_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    texts = _store(path)
    size = path.stat().st_size
    with path.open("r+b") as handle:
        handle.truncate(size // 2)
    seen = _use(path, texts)
    assert seen and all(s == "StoreCorrupt" or s.startswith("integrity: ") for s in seen), seen


def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are my notes, not a database\n" * 500)
    before = path.read_bytes()
    with pytest.raises(StoreCorrupt, match="damaged"):
        Memory(path)
    assert path.read_bytes() == before  # refused, not overwritten
    done = subprocess.run(
        [*ATHENA, "--db", str(path), "recall", "anything", "-t", "t"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 5
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("error: the database file is damaged")
    assert path.read_bytes() == before


WRITER = textwrap.dedent(
    """
    import sys, time
    from athena import Memory
    memory = Memory(sys.argv[1])
    print("ready", flush=True)
    for i in range(int(sys.argv[2])):  # few enough that no auto-checkpoint folds the WAL
        text = f"torn {i}: Bob repaired the bicycle marker{i}z " + "y" * 300
        memory_id = memory.remember(text, tenant="t", layer="semantic")
        print(memory_id, i, flush=True)  # acknowledged: the call returned
    time.sleep(600)  # until the SIGKILL: the WAL is never checkpointed
    """
)


def test_a_torn_wal_loses_only_its_tail_and_never_half_a_record(tmp_path: Path) -> None:
    """A writer is SIGKILLed (its WAL is not checkpointed), then the WAL is cut mid-frame, as
    a power cut can leave it. Recovery must drop the torn commits whole: the file is sound,
    and what survives is exactly a prefix of the acknowledged writes, each complete."""
    path = tmp_path / "a.db"
    _store(path, n=20)
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), "25"], stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout is not None
    acked: list[tuple[int, int]] = []
    try:
        assert writer.stdout.readline().strip() == "ready"
        while len(acked) < 25:
            line = writer.stdout.readline()
            assert line, "the writer died before it acknowledged 25 writes"
            memory_id, i = line.split()
            acked.append((int(memory_id), int(i)))
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(timeout=60)
    wal = path.with_name(path.name + "-wal")
    size = wal.stat().st_size
    assert 20 * PAGE < size < 900 * (PAGE + 24), "all of the commits, and only they, in the WAL"
    with wal.open("r+b") as handle:
        handle.truncate(size * 2 // 3 + 123)  # mid-frame, a third of the commits torn away
    with Memory(path) as memory:
        assert memory.store.integrity_check() == "ok"
        survived = []
        for memory_id, i in acked:
            try:
                row = memory.get(memory_id, tenant="t")
            except AthenaError:
                break
            expected = f"torn {i}: Bob repaired the bicycle marker{i}z " + "y" * 300
            assert row["text"] == expected  # complete, never half-written
            survived.append(i)
        assert survived == list(range(len(survived)))  # a prefix of the acknowledged
        assert 0 < len(survived) < len(acked)  # the cut really tore commits away
        later = [memory_id for memory_id, _ in acked[len(survived) :]]
        for memory_id in later:  # nothing after the tear came back either
            with pytest.raises(AthenaError):
                memory.get(memory_id, tenant="t")
        hits = memory.recall(f"Bob bicycle marker{survived[-1]}z", tenant="t", k=3).hits
        assert any(f"marker{survived[-1]}z" in hit.text for hit in hits)
        memory.remember("works after recovery", tenant="t")
