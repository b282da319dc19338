"""Durability under kill -9, short: ~10 SIGKILLed writer cycles (the script does >= 100).

Runs ``benchmarks/reliability/kill_writer.py`` in-process as the auditor (the writers are
real subprocesses, killed with SIGKILL), then checks that the audit itself catches what it
is meant to catch: a lost or altered acknowledged write, a memory without its vector, a
memory missing from the lexical index.
"""

from __future__ import annotations

import importlib.util
import random
import sqlite3
import sys
from pathlib import Path
from types import ModuleType

import pytest
from reliability_support import SCRIPTS, integrity_problems


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("kill_writer", SCRIPTS / "kill_writer.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


kill_writer = _load()


@pytest.fixture(scope="module")
def killed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    work = tmp_path_factory.mktemp("kill")
    summary = kill_writer.run(cycles=10, seed=11, max_delay=1.0, workdir=work)
    return work, summary


@pytest.mark.slow
def test_no_acknowledged_write_is_lost(killed: tuple[Path, dict[str, object]]) -> None:
    _, summary = killed
    assert summary["cycles"] == 10
    assert isinstance(summary["writes_acknowledged"], int) and summary["writes_acknowledged"] > 0
    assert summary["lost"] == 0, summary["problems"]
    assert summary["open_failures"] == 0
    assert summary["integrity_failures"] == 0, summary["problems"]
    assert summary["recall_missed"] == 0, summary["problems"]


@pytest.mark.slow
def test_the_audit_catches_planted_faults(killed: tuple[Path, dict[str, object]]) -> None:
    work, _ = killed
    db, log = work / "kill.db", work / "acks.jsonl"
    embedder = kill_writer.load_embedder_for_audit()
    clean = kill_writer.audit(db, log, kill_writer.Model(), embedder, random.Random(0))
    assert clean["lost"] == 0 and clean["problems"] == []

    conn = sqlite3.connect(db, isolation_level=None)
    ids = [int(r[0]) for r in conn.execute("SELECT id FROM memories ORDER BY id LIMIT 3")]
    conn.execute("UPDATE memories SET text = 'tampered' WHERE id = ?", (ids[0],))
    conn.execute("DELETE FROM vectors WHERE memory_id = ?", (ids[1],))
    text, scope = conn.execute(
        "SELECT text, scope FROM memories WHERE id = ?", (ids[2],)
    ).fetchone()
    conn.execute(
        "INSERT INTO memories_fts (memories_fts, rowid, text, scope) VALUES ('delete', ?, ?, ?)",
        (ids[2], text, scope),
    )
    conn.close()

    problems = integrity_problems(db)
    assert any("without a" in p and "vector" in p for p in problems), problems
    assert any(p.startswith("fts5 integrity-check") for p in problems), problems
    assert any("unindexed" in p for p in problems), problems
    tampered = kill_writer.audit(db, log, kill_writer.Model(), embedder, random.Random(0))
    assert tampered["lost"] >= 1
